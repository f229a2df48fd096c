// What the review screen's modules share: the NiiVue viewer, the drawing's undo / redo history, the open
// case and what the user is doing with it, one action at a time (guarded), and the drawing mode.
import { DRAG_MODE, Niivue, SHOW_RENDER, MULTIPLANAR_TYPE } from "@niivue/niivue";
import { doneText } from "./cases";
import type { Tile } from "./geometry";
import { DrawHistory } from "./history";
import { el, overlay, role, root, say, ShownError } from "./page";
import type { Case, Mode, Showing } from "./types";

type ScreenState = {
  current: Case | null;
  mode: Mode;
  busy: boolean;
  decided: boolean;
  /** What the user changed since the last save: the mask (the drawing), the box, or both (a box and a
   * mask are separate annotations of the finding: saving one never replaces the other). */
  dirty: "mask" | "box" | "both" | null;
  autosaveTimer: number | undefined;
  autosaving: Promise<void> | null;
  /** A failed save before leaving the case: the next try leaves without saving. */
  leaveAnyway: boolean;
  pendingBox: number[] | null;
  shownBox: { box: number[]; label: string } | null;
  drag: { tile: Tile; from: [number, number]; to: [number, number] } | null;
  loadedScan: number | null;
  is2D: boolean;
  showing: Showing;
  gazeOn: boolean;
  missingSpan: { section: string; start: number; end: number } | null;
};

/** The screen's mutable state (one object: the modules share it and assign its fields). */
export const state: ScreenState = {
  current: null,
  mode: "view",
  busy: false,
  decided: false,
  dirty: null,
  autosaveTimer: undefined,
  autosaving: null,
  leaveAnyway: false,
  pendingBox: null,
  shownBox: null,
  drag: null,
  loadedScan: null,
  is2D: false,
  showing: "annotator",
  gazeOn: false,
  missingSpan: null,
};

export const history = new DrawHistory();

/** While a case's images load, NiiVue's draws are coalesced into one (review.ts): each draw of a large CT
 * in software WebGL costs a frame's rendering, and loading asked for about ten. */
export const drawBatch = { on: false };

export const nv = new Niivue({
  backColor: [0, 0, 0, 1],
  // A thin grey crosshair with a gap at its centre: no finding's colour (cases.ts PALETTE), and it does not
  // cover the voxel it points at.
  crosshairColor: [0.7, 0.7, 0.7, 0.45],
  crosshairGap: 12,
  show3Dcrosshair: false,
  dragAndDropEnabled: false,
  isResizeCanvas: true,
  loadingText: "No case open",
  multiplanarShowRender: SHOW_RENDER.NEVER,
  multiplanarLayout: MULTIPLANAR_TYPE.ROW,
  penSize: 3,
  maxDrawUndoBitmaps: 32,
  isRadiologicalConvention: true, // patient right on the screen's left, as radiologists read
});
// view.ts: left moves the crosshair (or draws), ctrl+left and the middle button pan, the right button
// sets window / level continuously (up / down: level, left / right: width). (Not a constructor option:
// NiiVue drops options whose default is undefined.)
nv.setMouseEventConfig({
  leftButton: { primary: DRAG_MODE.crosshair, withCtrl: DRAG_MODE.pan },
  rightButton: DRAG_MODE.windowing,
  centerButton: DRAG_MODE.pan,
});

/** Run one user action at a time; every failure ends up in the message area. */
export async function guarded(action: () => Promise<void>): Promise<void> {
  if (state.busy && state.autosaving) await state.autosaving; // an autosave is quick: the action waits for it
  if (state.busy) {
    say("Still working on the last action…");
    return;
  }
  state.busy = true;
  root.dataset.busy = "1";
  try {
    await action();
  } catch (err) {
    if (err instanceof ShownError) say(err.message, "error", err.extra);
    else say(err instanceof Error ? err.message : String(err), "error");
    console.error(err);
  } finally {
    state.busy = false;
    delete root.dataset.busy;
  }
}

export function needCase(): Case {
  if (!state.current) throw new Error("Open a case first (Next case, key n).");
  return state.current;
}

export function needEditable(): Case {
  const c = needCase();
  if (role !== "annotator") throw new Error("Only annotators edit the mask.");
  if (state.decided) throw new Error(doneText(c));
  return c;
}

export function setMode(next: Mode): void {
  state.mode = next;
  const drawing = next === "paint" || next === "erase" || next === "fill";
  if (next !== "paint" && next !== "erase") el("brush").hidden = true;
  nv.setDrawingEnabled(drawing);
  if (drawing) nv.setPenValue(next === "erase" ? 0 : 1, next === "fill");
  for (const name of ["paint", "erase", "fill", "box", "click", "grow"]) el(name).classList.toggle("on", next === name);
  overlay.classList.toggle("active", next === "box");
  root.dataset.mode = next;
}
