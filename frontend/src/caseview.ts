// A case on the screen: opening one (the header, the report, the findings, the versions, the images; the
// performance marks "case-preview" and "case-rendered"), clearing the screen when the queue is empty, and
// reloading the open case. The address bar follows the open case (?task=<id>, README "Links to a case"):
// replaced, not pushed, so reload and a copied link open the case on the screen, and Back leaves the screen
// for the page before it (a pushed entry per case would have Back claim an earlier case again).
import { api } from "./api";
import { caseLink, endpoint, readingLabel } from "./cases";
import { loadImages, showPreview } from "./images";
import { drawOverlay, renderGazeChoices, setGaze } from "./overlay";
import { commentBox, el, preview, root, say, setSaveState } from "./page";
import { renderLayers, syncLayers } from "./layers";
import { hideMissingForm, renderFindings, renderReport, renderShowing, renderTask } from "./report";
import { nv, state } from "./state";
import type { Case } from "./types";

export async function openCase(c: Case, note = ""): Promise<void> {
  window.clearTimeout(state.autosaveTimer);
  state.current = c;
  // A case opened read-only (navigation.ts: not the user's stage, held by someone else) is "decided": no
  // drawing, saving or decision; doneText says why.
  state.decided = c.readOnly != null;
  state.dirty = null;
  state.showing = "annotator";
  root.dataset.task = String(c.task.id);
  root.dataset.finding = String(c.finding.id);
  if (c.readOnly) root.dataset.readonly = "1";
  else delete root.dataset.readonly;
  showLink(c);
  root.dataset.state = "loading";
  el("empty").hidden = true;
  hideMissingForm();
  renderTask(c);
  renderReport(c);
  renderFindings(c);
  renderShowing(c);
  renderLayers(c);
  commentBox.value = "";
  setSaveState(`v${c.finding.current_version}`);
  state.mode = "view"; // a new case never starts with the pen down
  delete root.dataset.message;
  const sameScan = c.scan != null && state.loadedScan === c.scan.id && nv.volumes.length > 0;
  if (!sameScan) {
    showPreview(c);
    say(`Opening ${c.reading ? readingLabel(c.reading).toLowerCase() : `task ${c.task.id}`}: loading the scan…`);
  }
  try {
    await loadImages(c);
  } finally {
    // NiiVue has drawn the volume (or failed to): the server's preview gives way on the next frame.
    requestAnimationFrame(() => (preview.hidden = true));
  }
  setGaze(state.gazeOn && state.is2D && (c.gaze ?? []).length > 0);
  renderGazeChoices(c);
  void syncLayers(c); // the anatomy of the finding's place, loaded after the case is on screen
  root.dataset.state = "ready";
  // For bench/bench_case_open.py: two animation frames after loading, the case's first frame is on screen.
  requestAnimationFrame(() => requestAnimationFrame(() => performance.mark("case-rendered")));
  if (note && root.dataset.message !== "error") say(note, c.readOnly ? "info" : "ok");
}

/** The address bar names the case on the screen (none: the bare review address). */
export function showLink(c: Case | null): void {
  const link = caseLink(c);
  if (link !== window.location.pathname + window.location.search + window.location.hash) {
    window.history.replaceState(window.history.state, "", link);
  }
}

export function clearCase(): void {
  state.current = null;
  el("empty").hidden = false;
  for (const id of ["case-title", "report", "findings", "versions", "showing", "agreement-body", "layers", "start-note"]) el(id).replaceChildren();
  el("layers-box").hidden = true;
  el("returned").hidden = true;
  el("reading").hidden = true;
  el("agreement").hidden = true;
  nv.closeDrawing();
  while (nv.volumes.length) nv.removeVolume(nv.volumes[0]);
  state.loadedScan = null;
  setGaze(false);
  drawOverlay();
  setSaveState("");
  root.dataset.state = "empty";
  delete root.dataset.task;
  delete root.dataset.finding;
  delete root.dataset.reading;
  delete root.dataset.readonly;
  showLink(null);
}

export async function reload(): Promise<void> {
  if (!state.current) return;
  const c = (await (await api(`${endpoint(state.current)}/`)).json()) as Case;
  c.readOnly = state.current.readOnly;
  await openCase(c, `Reloaded: version ${c.finding.current_version} is current.`);
}
