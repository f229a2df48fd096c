// Saving: a change of the drawing or a box marks the case dirty and is autosaved once painting stops; a
// save posts a new version to the task's or the reading's endpoint (a box as JSON, a mask as a PNG for a
// radiograph or a NIfTI for a volume) and says what went wrong (someone saved since: Reload; the lease ran
// out: Claim again, Take it again). Leaving a case saves it first. Then the stage transitions: submit
// (accept / reject), approve, return, and the submission of a reading.
import { ApiError, api, describe, postJson } from "./api";
import { doneText, endpoint, readingLabel } from "./cases";
import { clearCase, openCase, reload } from "./caseview";
import { bitmapToPng } from "./masks";
import { drawOverlay } from "./overlay";
import { button, commentBox, role, root, say, setSaveState, ShownError, slug } from "./page";
import { renderFindings, renderTask } from "./report";
import { guarded, history, needCase, needEditable, nv, state } from "./state";
import type { Annotation, Case, Reading, Task } from "./types";

export const AUTOSAVE_MS = 3000;

export const maskDirty = (): boolean => state.dirty === "mask" || state.dirty === "both";
export const boxDirty = (): boolean => state.dirty === "box" || state.dirty === "both";

/** The drawing or a box changed: count (kept by the history, stroke by stroke), remember for autosave. */
export function changed(kind: "mask" | "box"): void {
  state.dirty = state.dirty === null || state.dirty === kind ? kind : "both";
  state.leaveAnyway = false;
  root.dataset.maskVoxels = String(history.count);
  setSaveState("unsaved changes", "dirty");
  scheduleAutosave();
}

/** Before the page is left (closed, reloaded, another address) with unsaved changes, the browser asks;
 * when the tab is hidden, what changed is saved at once rather than after the autosave delay. */
export function guardUnsaved(): void {
  window.addEventListener("beforeunload", (event) => {
    if (!state.dirty || state.decided || role !== "annotator") return;
    event.preventDefault();
    event.returnValue = ""; // older browsers need it set to ask
  });
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "hidden" && state.dirty && !state.decided && role === "annotator") scheduleAutosave(0);
  });
}

/** The autosave's delay: AUTOSAVE_MS, unless #review's data-autosave-ms says otherwise (the browser tests
 * set a long one, so that the versions they count are the ones they save). */
const autosaveDelay = (): number => Number(root.dataset.autosaveMs) || AUTOSAVE_MS;

function scheduleAutosave(delay = autosaveDelay()): void {
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

/** Post one version (a box as JSON, a mask as a file) on top of `base`; a 409 or a 400 as the user's words. */
async function post(c: Case, base: number, box: number[] | null): Promise<Annotation> {
  const url = `${endpoint(c)}/annotations/`;
  try {
    if (box) return (await postJson(url, { base_version: base, kind: "box", box })) as Annotation;
    const form = new FormData();
    form.append("kind", "mask");
    form.append("base_version", String(base));
    if (state.is2D) {
      form.append("mask", await bitmapToPng(nv), "mask.png");
    } else {
      const bytes = await nv.saveImage({ filename: "", isSaveDrawing: true, volumeByIndex: 0 });
      if (!(bytes instanceof Uint8Array)) throw new Error("Nothing to save: no scan or no drawing is open.");
      // gzipped in the browser (a 512×512×300 drawing is 78 MB raw, about 1 MB gzipped): the server
      // stores a gzipped uint8 NIfTI on the scan's grid as it comes
      const raw = new Blob([bytes as Uint8Array<ArrayBuffer>]);
      const gz = await new Response(raw.stream().pipeThrough(new CompressionStream("gzip"))).blob();
      form.append("mask", new Blob([gz], { type: "application/gzip" }), "mask.nii.gz");
    }
    return (await (await api(url, { method: "POST", body: form })).json()) as Annotation;
  } catch (err) {
    setSaveState("not saved", "error");
    if (err instanceof ApiError && err.status === 409) {
      const body = err.body as { current?: Annotation | null; yours?: number; lease?: string };
      if (body.current !== undefined) throw conflict(c, body.current, body.yours ?? base);
      if (body.lease) throw leaseLost(c, body.lease);
    }
    if (err instanceof ApiError && err.status === 400) {
      throw new ShownError(`Not saved — ${describe(err.body)}`);
    }
    throw err;
  }
}

/** Someone saved since the version the user edited: their drawing and box stay on the screen, unsaved;
 * the user re-applies their edits on the newer version (then saves), or drops them and reloads. */
function conflict(c: Case, theirs: Annotation | null, yours: number): ShownError {
  const since = `version ${theirs ? theirs.version : 0}${theirs?.author ? ` (${theirs.author}, ${theirs.created_at})` : theirs ? ` (saved ${theirs.created_at})` : ""}`;
  const who = c.reading ? `Your reading has ${since}` : `Someone saved ${since}`;
  const reapply = button("Re-apply my edits on it", () => void guarded(reapplyEdits));
  const drop = button("Drop mine and reload", () =>
    void guarded(async () => {
      state.dirty = null;
      await reload();
    }),
  );
  root.dataset.conflict = "1";
  const extra = document.createElement("span");
  extra.append(reapply, " ", drop);
  return new ShownError(`${who} since yours (you edited version ${yours}) — your edits are kept on the screen, not saved.`, extra);
}

/** Load the newest version and re-apply the user's strokes and box on it (voxel by voxel: what they
 * painted or erased, nothing else), unsaved, so that they look and save. */
async function reapplyEdits(): Promise<void> {
  const edits = maskDirty() ? history.edits() : new Map<number, number>();
  const box = boxDirty() ? state.pendingBox : null;
  state.dirty = null;
  await reload();
  const bitmap = nv.drawBitmap;
  if (edits.size && bitmap) {
    for (const [i, value] of edits) if (i < bitmap.length) bitmap[i] = value;
    nv.refreshDrawing(true);
    history.record(nv);
    changed("mask");
  }
  if (box) {
    state.pendingBox = box;
    changed("box");
    drawOverlay();
  }
  delete root.dataset.conflict;
  const c = needCase();
  say(`Your edits are re-applied on version ${c.finding.current_version}: look, then save (s).`, "ok");
}

async function saveNow(auto: boolean): Promise<void> {
  const c = needEditable();
  window.clearTimeout(state.autosaveTimer);
  setSaveState("saving…");
  // What changed (a box and a mask are separate annotations: each is its own version); with no change (a
  // second press of s) the current version again, so that saving again never turns a box into a mask.
  const jobs: (number[] | null)[] = [];
  if (boxDirty() && state.pendingBox) jobs.push(state.pendingBox);
  if (maskDirty()) jobs.push(null);
  if (!jobs.length) {
    const current = c.versions.find((v) => v.version === c.finding.current_version);
    jobs.push(current?.kind === "box" && state.shownBox ? state.shownBox.box : null);
  }
  const saved: Annotation[] = [];
  for (const box of jobs) {
    const one = await post(c, c.finding.current_version, box);
    saved.push(one);
    c.versions.push(one);
    c.finding.current_version = one.version;
    const sibling = c.findings.find((f) => f.id === c.finding.id);
    if (sibling) sibling.current_version = one.version;
    if (one.kind === "box" && one.box) {
      // The box is its own annotation: the drawing (the mask) stays as it is.
      state.shownBox = { box: one.box, label: `v${one.version} box` };
      state.pendingBox = null;
      state.dirty = maskDirty() ? "mask" : null;
    } else {
      state.dirty = boxDirty() ? "box" : null;
    }
  }
  state.dirty = null;
  drawOverlay();
  renderTask(c);
  renderFindings(c);
  const last = saved[saved.length - 1];
  setSaveState(`saved v${last.version}`, "ok");
  const sizes = saved.map((v) => (v.kind === "box" ? `box [${(v.box ?? []).join(", ")}]` : `mask, ${v.voxels ?? 0} voxels`));
  const numbers = saved.map((v) => v.version).join(" and ");
  say(`${auto ? "Autosaved" : "Saved"} version ${numbers} (${sizes.join("; ")}).`, "ok");
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
