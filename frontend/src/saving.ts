// Saving: a change of the drawing or a box marks the case dirty and is autosaved once painting stops; a
// save posts a new version to the task's or the reading's endpoint (a box as JSON, a mask as a PNG for a
// radiograph or a NIfTI for a volume) and says what went wrong (someone saved since: Reload; the lease ran
// out: Claim again, Take it again). Leaving a case saves it first. Then the stage transitions: submit
// (accept / reject), approve, return, and the submission of a reading.
import { ApiError, api, describe, postJson } from "./api";
import { doneText, endpoint, readingLabel } from "./cases";
import { clearCase, openCase, reload } from "./caseview";
import { bitmapToPng, countDrawn } from "./masks";
import { drawOverlay } from "./overlay";
import { button, commentBox, role, root, say, setSaveState, ShownError, slug } from "./page";
import { renderFindings, renderTask } from "./report";
import { guarded, history, needCase, needEditable, nv, state } from "./state";
import type { Annotation, Case, Reading, Task } from "./types";

export const AUTOSAVE_MS = 3000;

/** The drawing or a box changed: count, remember for autosave. */
export function changed(kind: "mask" | "box"): void {
  state.dirty = kind;
  state.leaveAnyway = false;
  root.dataset.maskVoxels = String(countDrawn(nv.drawBitmap));
  setSaveState("unsaved changes", "dirty");
  scheduleAutosave();
}

function scheduleAutosave(delay = AUTOSAVE_MS): void {
  window.clearTimeout(state.autosaveTimer);
  if (role !== "annotator" || state.decided || !state.current) return;
  state.autosaveTimer = window.setTimeout(() => {
    if (!state.dirty || state.decided) return;
    if (state.busy) {
      scheduleAutosave(1000);
      return;
    }
    state.autosaving = guarded(() => saveNow(true)).finally(() => (state.autosaving = null));
  }, delay);
}

/** Before another case or finding opens: save what changed (annotators), or say why not. */
export async function leaveCase(): Promise<void> {
  window.clearTimeout(state.autosaveTimer);
  if (state.autosaving) await state.autosaving;
  if (!state.current || !state.dirty || state.decided || role !== "annotator") return;
  if (state.leaveAnyway) {
    state.leaveAnyway = false;
    return;
  }
  try {
    await saveNow(true);
  } catch (err) {
    state.leaveAnyway = true;
    const text = err instanceof Error ? err.message : String(err);
    throw new ShownError(`${text} — your changes are not saved; do it again to leave without them.`, err instanceof ShownError ? err.extra : undefined);
  }
}

function leaseLost(c: Case, reason: string): ShownError {
  if (c.reading) return readingLeaseLost(c, reason);
  const claim = button("Claim again", () =>
    void guarded(async () => {
      const claimed = (await postJson(`/api/tasks/${c.task.id}/claim/`, {})) as Case;
      c.task = claimed.task;
      say(`You hold task ${c.task.id} again: save (s) to keep your drawing.`, "ok");
    }),
  );
  return new ShownError(`Not saved — lease: ${reason}`, claim);
}

/** A reading's lease ran out: next-reading gives it back while nobody took it over (an expired reading is
 * still the reader's until then); else the reading went to another reader with a fresh start. */
function readingLeaseLost(c: Case, reason: string): ShownError {
  const again = button("Take it again", () =>
    void guarded(async () => {
      const response = await api(`/api/projects/${encodeURIComponent(slug)}/next-reading/`);
      const got = response.status === 204 ? null : ((await response.json()) as Case);
      if (got?.reading && c.reading && got.reading.id === c.reading.id) {
        c.reading = got.reading;
        renderTask(c);
        say(`You hold ${readingLabel(got.reading).toLowerCase()} again: save (s) to keep your drawing.`, "ok");
        return;
      }
      state.dirty = null; // the drawing belonged to a reading another reader now holds
      if (!got) {
        clearCase();
        say("Your reading went to another reader, and no other reading is waiting for you.", "error");
        return;
      }
      await openCase(got);
      const what = got.reading ? readingLabel(got.reading).toLowerCase() : `task ${got.task.id}`;
      say(`Your reading went to another reader: opened ${what} of finding ${got.finding.id} instead.`, "error");
    }),
  );
  return new ShownError(`Not saved — lease: ${reason}`, again);
}

async function saveNow(auto: boolean): Promise<void> {
  const c = needEditable();
  window.clearTimeout(state.autosaveTimer);
  setSaveState("saving…");
  const url = `${endpoint(c)}/annotations/`;
  const base = c.finding.current_version;
  // What changed; with no change (a second press of s) what the current version is, so that saving again
  // never turns a box into an empty mask.
  const box = state.dirty === "box" ? state.pendingBox : state.dirty === null && state.shownBox ? state.shownBox.box : null;
  let saved: Annotation;
  try {
    if (box) {
      saved = (await postJson(url, { base_version: base, kind: "box", box })) as Annotation;
    } else {
      const form = new FormData();
      form.append("kind", "mask");
      form.append("base_version", String(base));
      if (state.is2D) {
        form.append("mask", await bitmapToPng(nv), "mask.png");
      } else {
        const bytes = await nv.saveImage({ filename: "", isSaveDrawing: true, volumeByIndex: 0 });
        if (!(bytes instanceof Uint8Array)) throw new Error("Nothing to save: no scan or no drawing is open.");
        form.append("mask", new Blob([bytes as Uint8Array<ArrayBuffer>], { type: "application/octet-stream" }), "mask.nii");
      }
      saved = (await (await api(url, { method: "POST", body: form })).json()) as Annotation;
    }
  } catch (err) {
    setSaveState("not saved", "error");
    if (err instanceof ApiError && err.status === 409) {
      const body = err.body as { current?: Annotation | null; yours?: number; lease?: string };
      if (body.current !== undefined) {
        const theirs = body.current;
        if (c.reading) {
          // A reading conflicts only with its reader's own saves (another tab, another window).
          throw new ShownError(
            `Your reading has version ${theirs ? theirs.version : 0}${theirs ? ` (saved ${theirs.created_at})` : ""} ` +
              `since the one you edited (version ${body.yours ?? base}) — reload.`,
            button("Reload", () => void guarded(reload)),
          );
        }
        throw new ShownError(
          `Someone saved version ${theirs ? theirs.version : 0}${theirs?.author ? ` (${theirs.author}, ${theirs.created_at})` : ""} ` +
            `since yours (you edited version ${body.yours ?? base}) — reload.`,
          button("Reload", () => void guarded(reload)),
        );
      }
      if (body.lease) throw leaseLost(c, body.lease);
    }
    if (err instanceof ApiError && err.status === 400) {
      throw new ShownError(`Not saved — ${describe(err.body)}`);
    }
    throw err;
  }
  c.versions.push(saved);
  c.finding.current_version = saved.version;
  const sibling = c.findings.find((f) => f.id === c.finding.id);
  if (sibling) sibling.current_version = saved.version;
  state.dirty = null;
  if (saved.kind === "box" && saved.box) {
    // The version is the box now: the drawing starts empty, as when the case is opened again.
    state.shownBox = { box: saved.box, label: `v${saved.version} box` };
    state.pendingBox = null;
    nv.createEmptyDrawing();
    history.reset(nv);
    root.dataset.maskVoxels = "0";
    drawOverlay();
  } else {
    state.shownBox = null;
    drawOverlay();
  }
  renderTask(c);
  renderFindings(c);
  setSaveState(`saved v${saved.version}`, "ok");
  const size = saved.kind === "box" ? `box [${(saved.box ?? []).join(", ")}]` : `${saved.voxels ?? 0} voxels`;
  say(`${auto ? "Autosaved" : "Saved"} version ${saved.version} (${size}).`, "ok");
}

export async function save(): Promise<void> {
  await saveNow(false);
}

export async function transition(action: "submit" | "approve" | "return", data: Record<string, string>): Promise<void> {
  const c = needCase();
  if (state.decided) throw new Error(doneText(c));
  window.clearTimeout(state.autosaveTimer);
  if (action === "submit" && data.decision === "accept" && state.dirty) await saveNow(true); // accept what is drawn
  if (c.reading) {
    await submitReading(c, data);
    return;
  }
  const task = (await postJson(`/api/tasks/${c.task.id}/${action}/`, data)) as Task;
  state.decided = true;
  state.dirty = null;
  root.dataset.state = "done";
  const what = action === "submit" ? `Submitted (${data.decision})` : action === "approve" ? "Approved" : "Returned";
  say(`${what}: task ${task.id} is now at ${task.stage}. Press n for the next case.`, "ok");
}

/** Accept or reject the user's reading; the last reading of a finding sends the consensus to review. */
async function submitReading(c: Case, data: Record<string, string>): Promise<void> {
  let reading: Reading;
  try {
    reading = (await postJson(`/api/readings/${c.reading?.id}/submit/`, data)) as Reading;
  } catch (err) {
    if (err instanceof ApiError && err.status === 409 && (err.body as { lease?: string }).lease) {
      throw readingLeaseLost(c, (err.body as { lease: string }).lease);
    }
    throw err;
  }
  c.reading = reading;
  state.decided = true;
  state.dirty = null;
  root.dataset.state = "done";
  renderTask(c);
  const after =
    reading.stage === "review"
      ? "that was the finding's last reading: the readers' consensus goes to a radiologist"
      : "the finding waits for its other readers";
  say(`Submitted (${data.decision}): ${readingLabel(reading).toLowerCase()} is in; ${after}. Press n for the next case.`, "ok");
}

export async function returnTask(): Promise<void> {
  const comment = commentBox.value.trim();
  if (!comment) {
    commentBox.focus();
    throw new Error("Returning a task needs a comment for the annotator.");
  }
  await transition("return", { comment });
}
