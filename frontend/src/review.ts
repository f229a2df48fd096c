// The review screen: the next case of the queue, its report with every finding's span, the findings of the
// study (click one, or [ and ], to open its task), the scan in NiiVue (CT: axial / coronal / sagittal;
// radiograph: one 2D view) with the finding's current mask as an editable drawing (pen, eraser, filled
// outline, fill holes, undo / redo), boxes drawn on an overlay, gaze heatmaps over radiographs, versioned
// saves (autosaved after painting stops) and the stage transitions of the review API (README "Review").
// The page (annotation/ui.py) gives the project slug, the reviewer's role, the CSRF token and the project's
// readers per finding as data attributes of #review, and the case a link names (?task= or ?finding=: the
// page resolves it, navigation.ts opens it; README "Links to a case").
// Several readers per finding (README "Several readers per finding", readers_per_finding > 1): an
// annotator works on blinded readings instead of tasks (next-reading; saves and accept / reject go to the
// reading's endpoints; only the proposal and their own versions are shown), findings still with their
// readers are listed as "being read", and after the consensus the case shows the readers' agreement.
//
// This module wires the screen: the buttons, the keys, NiiVue's hooks and the start. The parts live in
// page.ts (the page's elements, messages), api.ts (fetch, errors), types.ts (the payloads), state.ts (the
// viewer and the shared state), cases.ts (what a case says about itself), report.ts (report, findings,
// header, missing-finding form), panels.ts (versions, agreement), images.ts (the scan and the shown
// version), overlay.ts (boxes, gaze), caseview.ts (opening a case), navigation.ts (next case, other
// findings), saving.ts (saves, autosave, transitions), tools.ts (drawing tools, box drags), clicks.ts (the
// click tool: proposals from clicks), keys.ts; view.ts (layouts, zoom, pan, window, the status line),
// strokes.ts (incremental strokes, the threshold brush, the brush's size and cursor), history.ts (undo as
// patches), edit3d.ts (region grow, fill between slices), voxels.ts / rangeui.ts (intensities, the range),
// versions.ts (open and restore any version).
import { listenForClicks } from "./clicks";
import { listenForGrowClicks } from "./edit3d";
import { listenForRange } from "./rangeui";
import { endStroke, listenForBrushCursor, makeStrokesIncremental, setPenSize } from "./strokes";
import { decorateVersions } from "./versions";
import { listenForView, savedLayout, setLayout, showStatus } from "./view";
import { windowPreset } from "./images";
import { onKey, trigger } from "./keys";
import { addMissing, openFinding, openLinked } from "./navigation";
import { drawOverlay, drawOverlaySoon } from "./overlay";
import { listenForGaze } from "./gaze";
import { showLink } from "./caseview";
import {
  canvas,
  depthInput,
  el,
  missingForm,
  opacity,
  readersPerFinding,
  reads,
  role,
  root,
  say,
  stage,
} from "./page";
import { hideMissingForm, onOpenFinding, onRenderVersions } from "./report";
import { changed, guardUnsaved } from "./saving";
import { drawBatch, guarded, history, nv, state } from "./state";
import { listenForBoxDrags, setOpacity } from "./tools";

// A click on another finding of the list opens its task (report.ts renders the list; navigation.ts, which
// imports it, opens the finding).
onOpenFinding(openFinding);
onRenderVersions(decorateVersions);
makeStrokesIncremental();
listenForBoxDrags();
listenForClicks();
listenForGrowClicks();
listenForView();
listenForBrushCursor();
listenForRange();
guardUnsaved();
const penSize = el<HTMLInputElement>("pen-size");
penSize.addEventListener("input", () => setPenSize(Number(penSize.value)));
// The buttons name their actions (keys.ts); the window buttons name a CT window.
for (const b of root.querySelectorAll<HTMLButtonElement>("button[data-action]")) {
  // Keep the report's text selection: the missing-finding button reads it.
  if (b.dataset.action === "missing") b.addEventListener("mousedown", (event) => event.preventDefault());
  b.addEventListener("click", () => trigger(b.dataset.action ?? ""));
}
for (const b of root.querySelectorAll<HTMLButtonElement>("button[data-window]")) {
  b.addEventListener("click", () => windowPreset(b.dataset.window ?? "lung"));
}
opacity.addEventListener("input", () => setOpacity(Number(opacity.value)));
listenForGaze(); // the gaze panel: transcript, anatomies, opacity, the reader select
missingForm.addEventListener("submit", (event) => {
  event.preventDefault();
  void guarded(addMissing);
});
el("missing-cancel").addEventListener("click", hideMissingForm);
missingForm.addEventListener("keydown", (event) => {
  if (event.key === "Escape") hideMissingForm();
});

document.addEventListener("keydown", onKey);

// NiiVue: a stroke ended (pen, eraser, filled outline): its box is one undo step (strokes.ts).
nv.onDrawingChanged = (action: string) => {
  if (action !== "draw" || !state.current) return;
  const box = endStroke();
  if (box && history.record(nv, box)) changed("mask");
  performance.mark("stroke-recorded"); // bench/bench_viewer.py
};
// While a mouse button is down (a stroke, the crosshair dragged), NiiVue draws at most once an animation
// frame: it asked for a draw on every mouse move, often twice, and in software WebGL each draw of a
// 512×512×300 CT took longer than a move (the moves queued up behind the frames). Other draws (and a pan
// or window drag, which the draw itself applies) happen at once, as callers of drawScene expect. Every
// frame moves the overlay with it and updates the status line (the window's name or level / width, zoom).
const drawScene = nv.drawScene.bind(nv);
const ui = (nv as unknown as { uiData: { mousedown: boolean; isDragging: boolean } }).uiData;
let frame = 0;
let statusFrame = 0;
nv.drawScene = () => {
  if ((ui.mousedown && !ui.isDragging) || drawBatch.on) {
    if (!frame) {
      frame = requestAnimationFrame(() => {
        frame = 0;
        if (drawBatch.on) return; // a case still loading: its one draw comes at the end (images.ts)
        drawScene();
        drawOverlay();
        showStatus();
      });
    }
    return;
  }
  if (frame) cancelAnimationFrame(frame);
  frame = 0;
  const out = drawScene();
  drawOverlaySoon();
  if (!statusFrame) statusFrame = requestAnimationFrame(() => ((statusFrame = 0), showStatus()));
  return out;
};
new ResizeObserver(drawOverlaySoon).observe(el("viewer-box"));
// Working on the image gives the keys back to the page (after typing the box depth, s saves).
el("viewer-box").addEventListener(
  "pointerdown",
  () => {
    const active = document.activeElement;
    if (active instanceof HTMLInputElement || active instanceof HTMLSelectElement) active.blur();
  },
  { capture: true },
);
depthInput.addEventListener("keydown", (event) => {
  if (event.key === "Enter") depthInput.blur();
});

root.classList.add(`role-${role}`);
if (root.dataset.manager === "1") root.classList.add("is-manager"); // the "Tasks from proposals" button
setOpacity(50);
setPenSize(3);
setLayout(...savedLayout());
nv.attachToCanvas(canvas)
  .then(() => {
    nv.setSliceType(nv.sliceTypeMultiplanar);
    root.dataset.state = "idle";
    say(
      reads
        ? `Ready: press n (Next case) to take your next reading (${readersPerFinding} readers per finding); ? lists the keys.`
        : `Ready: press n (Next case) to open the next ${stage} task; ? lists the keys.`,
    );
    if (root.dataset.linkTask || root.dataset.linkError) {
      void guarded(async () => {
        await openLinked();
      }).finally(() => {
        // Not opened (a bad link): the address no longer names a case.
        if (!state.current) showLink(null);
      });
    }
  })
  .catch((err: unknown) => say(`The image viewer could not start (WebGL2 needed): ${String(err)}`, "error"));

// For the browser tests and the console: the viewer and the open case.
(window as unknown as { groundlabReview: object }).groundlabReview = {
  nv,
  current: () => state.current,
  history,
};
