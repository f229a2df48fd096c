// Moving between cases: the next case of the queue (with several readers, an annotator's next reading
// first), another finding of the study (click it, or [ and ]: its task is claimed and opened; a closed one
// or one of another stage opens read-only), the case a link names (?task= or ?finding=, resolved by the
// page, annotation/ui.py: claimed when the user may work on it, else read-only with the reason), and a
// finding missing from the list (added, then opened to be drawn).
import { ApiError, api, describe, postJson } from "./api";
import { beingRead, canOpen, readingLabel, whyReadOnly } from "./cases";
import { clearCase, openCase } from "./caseview";
import { el, reads, role, root, say, ShownError, slug, stage } from "./page";
import { hideMissingForm } from "./report";
import { leaveCase } from "./saving";
import { needCase, state } from "./state";
import type { Case, Finding, Task } from "./types";

export async function nextCase(): Promise<void> {
  await leaveCase();
  const project = encodeURIComponent(slug);
  // Several readers per finding: readings first (one the reader holds, else a free one), since every
  // finding waits in stage read for all its readers before anyone else sees it. Only when no reading is
  // waiting for this reader, the annotate queue: with several readers it holds the consensuses a
  // radiologist returned for one annotator to correct (and findings made before the project took several
  // readers), worked on as tasks, as with one reader.
  let response = reads ? await api(`/api/projects/${project}/next-reading/`) : null;
  if (response === null || response.status === 204) {
    response = await api(`/api/projects/${project}/next-task/?stage=${stage}`);
  }
  if (response.status === 204) {
    clearCase();
    say(reads ? "Queue empty: no reading and no returned task is waiting for you." : "Queue empty.");
    return;
  }
  const c = (await response.json()) as Case;
  await openCase(c, c.reading ? `Opened ${readingLabel(c.reading).toLowerCase()} of finding ${c.finding.id}.` : `Opened task ${c.task.id}.`);
}

async function getCase(path: string): Promise<Case> {
  return (await (await api(path)).json()) as Case;
}

/** Claim task ``id`` and open it; when it cannot be the user's (someone else holds it, they annotated it
 * themselves): with ``orView`` (a link) open it read-only with the server's reason, else (a click in the
 * findings list) say why and keep the current case. */
async function claimOrView(id: number, text: string, orView: boolean): Promise<void> {
  let c: Case;
  try {
    const claimed = (await postJson(`/api/tasks/${id}/claim/`, {})) as Partial<Case>;
    c = claimed.task && claimed.finding && claimed.versions ? (claimed as Case) : await getCase(`/api/tasks/${id}/`);
  } catch (err) {
    const refused = err instanceof ApiError && (err.status === 409 || err.status === 400 || err.status === 403);
    if (refused && !orView) {
      throw new ShownError(`Cannot open “${text}”: ${describe(err.body)}. The current case stays open.`);
    }
    if (refused) {
      const viewed = await getCase(`/api/tasks/${id}/`);
      const holder = err.status === 409 && viewed.task.assignee ? ` ${viewed.task.assignee} holds it.` : "";
      // The platform's error says it in words (its detail); the field name adds nothing here.
      const detail = (err.body as { detail?: unknown } | null)?.detail;
      const why = typeof detail === "string" ? detail : describe(err.body);
      viewed.readOnly = `Task ${id} cannot be yours now: ${why}.${holder} Opened read-only.`;
      await openCase(viewed, viewed.readOnly);
      return;
    }
    throw err;
  }
  await openCase(c, `Opened task ${c.task.id}: ${text || c.finding.text}`);
}

/** Open task ``id`` read-only (another stage than the user's, closed), saying why. */
async function view(id: number): Promise<void> {
  const c = await getCase(`/api/tasks/${id}/`);
  c.readOnly = whyReadOnly(c) || `Task ${id}: opened read-only.`;
  await openCase(c, c.readOnly);
}

/** Claim a finding's task and open it (held by someone else: say so, the current case stays); a finding
 * at another stage (closed, or with the other role) opens read-only. */
export async function openFinding(f: Finding): Promise<void> {
  if (beingRead(f)) {
    // Its task is with the readers (nobody claims it); readings come in the queue's order only.
    const next = reads ? " Press n for your next reading." : "";
    say(`“${f.text}” is being read: its readers work blinded, and its task opens after their consensus.${next} The current case stays open.`);
    return;
  }
  if (f.task_id == null) throw new ShownError(`“${f.text}” has no review task. The current case stays open.`);
  await leaveCase();
  if (canOpen(f)) await claimOrView(f.task_id, f.text, false);
  else await view(f.task_id);
}

/** The case the page's link names (annotation/ui.py resolved ?task= or ?finding= through the visibility
 * rules: data-link-task, data-link-reading, or data-link-error). Its task is claimed when its stage is the
 * user's, else it opens read-only; the user's reading opens as next-reading would give it. */
export async function openLinked(): Promise<boolean> {
  const error = root.dataset.linkError;
  if (error) {
    throw new ShownError(`${error} Press n (Next case) for the queue.`);
  }
  const task = Number(root.dataset.linkTask);
  const reading = Number(root.dataset.linkReading);
  if (!task) return false;
  if (reading) {
    const c = await getCase(`/api/readings/${reading}/`);
    if (c.reading?.submitted_at) c.readOnly = `${readingLabel(c.reading)} of finding ${c.finding.id} is submitted: opened read-only.`;
    await openCase(c, c.readOnly ?? `Opened ${c.reading ? readingLabel(c.reading).toLowerCase() : "the reading"} of finding ${c.finding.id}.`);
    return true;
  }
  const c = await getCase(`/api/tasks/${task}/`);
  const why = whyReadOnly(c);
  if (why) {
    c.readOnly = why;
    await openCase(c, why);
  } else await claimOrView(task, c.finding.text, true);
  return true;
}

export async function stepFinding(step: 1 | -1): Promise<void> {
  const c = needCase();
  const list = c.findings;
  const at = list.findIndex((f) => f.id === c.finding.id);
  for (let i = 1; i < list.length; i++) {
    const f = list[(at + step * i + list.length * i) % list.length];
    if (canOpen(f)) return openFinding(f);
  }
  say(`No other finding of this study is waiting for ${role === "radiologist" ? "review" : "annotation"}.`);
}

export async function addMissing(): Promise<void> {
  const c = needCase();
  const text = el<HTMLInputElement>("missing-text").value.trim();
  const code = el<HTMLInputElement>("missing-code").value.trim();
  if (!text) {
    el("missing-text").focus();
    throw new Error("Say what the missing finding is (the text field).");
  }
  await leaveCase();
  const body: Record<string, unknown> = { study_id: c.finding.study_id, scan_id: c.scan?.id ?? null, text };
  if (code) body.code = code;
  if (state.missingSpan) Object.assign(body, state.missingSpan);
  const made = (await postJson(`/api/projects/${encodeURIComponent(slug)}/findings/`, body)) as Partial<Case> & {
    task?: Task;
  };
  hideMissingForm();
  // Several readers: the new finding waits for its readers, and its author holds reading 1 of it.
  const opened = made.reading
    ? ((await (await api(`/api/readings/${made.reading.id}/`)).json()) as Case)
    : made.task && made.finding && made.versions
      ? (made as Case)
      : ((await (await api(`/api/tasks/${made.task?.id}/`)).json()) as Case);
  const what = opened.reading ? readingLabel(opened.reading).toLowerCase() : `task ${opened.task.id}`;
  await openCase(opened, `Added finding ${opened.finding.id} (${what}): draw it and save.`);
}
