// Moving between cases: the next case of the queue (with several readers, an annotator's next reading
// first), another finding of the study (click it, or [ and ]: its task is claimed and opened), and a
// finding missing from the list (added, then opened to be drawn).
import { ApiError, api, describe, postJson } from "./api";
import { beingRead, canOpen, readingLabel } from "./cases";
import { clearCase, openCase } from "./caseview";
import { el, reads, role, say, ShownError, slug, stage } from "./page";
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

/** Claim a finding's task (it must not be held by someone else) and open it. */
export async function openFinding(f: Finding): Promise<void> {
  if (beingRead(f)) {
    // Its task is with the readers (nobody claims it); readings come in the queue's order only.
    const next = reads ? " Press n for your next reading." : "";
    say(`“${f.text}” is being read: its readers work blinded, and its task opens after their consensus.${next} The current case stays open.`);
    return;
  }
  if (f.task_id == null) throw new Error(`Finding ${f.id} has no review task.`);
  await leaveCase();
  let c: Case;
  try {
    const claimed = (await postJson(`/api/tasks/${f.task_id}/claim/`, {})) as Partial<Case>;
    c = claimed.task && claimed.finding && claimed.versions
      ? (claimed as Case)
      : ((await (await api(`/api/tasks/${f.task_id}/`)).json()) as Case);
  } catch (err) {
    if (err instanceof ApiError && (err.status === 409 || err.status === 400 || err.status === 403)) {
      throw new ShownError(`Cannot open “${f.text}”: ${describe(err.body)}. The current case stays open.`);
    }
    throw err;
  }
  await openCase(c, `Opened task ${c.task.id}: ${c.finding.text}`);
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
