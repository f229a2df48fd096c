// A case on the screen: opening one (the header, the report, the findings, the versions, the images; the
// performance marks "case-preview" and "case-rendered"), clearing the screen when the queue is empty, and
// reloading the open case.
import { api } from "./api";
import { endpoint, readingLabel } from "./cases";
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
  state.decided = false;
  state.dirty = null;
  state.showing = "annotator";
  root.dataset.task = String(c.task.id);
  root.dataset.finding = String(c.finding.id);
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
  if (note && root.dataset.message !== "error") say(note, "ok");
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
}

export async function reload(): Promise<void> {
  if (!state.current) return;
  const c = (await (await api(`${endpoint(state.current)}/`)).json()) as Case;
  await openCase(c, `Reloaded: version ${c.finding.current_version} is current.`);
}
