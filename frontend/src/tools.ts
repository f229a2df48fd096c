// The annotator's tools: undo / redo of the drawing, filling the holes of the mask on a slice, the mask's
// opacity, and the box tool (a drag on the axial tile; the box spans the slices of its depth).
import { affineOf, axialTile, canvasPoint, inTile, mmToVox, tileToMM, type Tile } from "./geometry";
import type { Box } from "./history";
import { fillHolesInSlice } from "./masks";
import { refreshBox } from "./strokes";
import { drawOverlay, drawOverlaySoon, inPlaneAxes } from "./overlay";
import { canvas, depthInput, el, opacity, overlay, say } from "./page";
import { AUTOSAVE_MS, changed } from "./saving";
import { history, needEditable, nv, state } from "./state";
import type { Case } from "./types";

export function undo(): void {
  needEditable();
  if (history.undo(nv)) changed("mask");
  else say("Nothing to undo.");
}

export function redo(): void {
  needEditable();
  if (history.redo(nv)) changed("mask");
  else say("Nothing to redo.");
}

export function fillHoles(): void {
  needEditable();
  const bitmap = nv.drawBitmap;
  const dims = nv.back?.dims;
  if (!bitmap || !dims) throw new Error("No drawing is open.");
  const z = state.is2D ? 0 : nv.frac2vox(nv.scene.crosshairPos)[2];
  const filled = fillHolesInSlice(bitmap, dims, z);
  if (!filled) {
    say("No holes in the mask on this slice (fill closes regions surrounded by paint).");
    return;
  }
  const slice: Box = { lo: [0, 0, z], hi: [dims[1], dims[2], z + 1] };
  refreshBox(slice);
  history.record(nv, slice);
  changed("mask");
  say(`Filled ${filled} ${state.is2D ? "pixels" : "voxels"} of holes${state.is2D ? "" : " on this axial slice"}.`, "ok");
}

export function setOpacity(value: number): void {
  opacity.value = String(Math.max(0, Math.min(100, value)));
  nv.setDrawOpacity(Number(opacity.value) / 100);
  el("opacity-value").textContent = `${opacity.value}%`;
}

/** The box (native voxel indices, max exclusive) of a drag between two canvas points on the axial tile. */
function boxFromDrag(c: Case, tile: Tile, from: [number, number], to: [number, number]): number[] {
  const affine = affineOf(nv.volumes[0]);
  const z = nv.frac2mm(nv.scene.crosshairPos)[2];
  const [a, b] = [tileToMM(tile, ...from), tileToMM(tile, ...to)];
  const va = mmToVox(affine, [a[0], a[1], z]);
  const vb = mmToVox(affine, [b[0], b[1], z]);
  const shape = c.scan?.shape ?? [];
  const { slice } = inPlaneAxes(affine);
  const n = state.is2D ? 2 : 3;
  const lo: number[] = [];
  const hi: number[] = [];
  for (let axis = 0; axis < n; axis++) {
    const size = shape[axis];
    if (!state.is2D && axis === slice) {
      const k = Math.min(size - 1, Math.max(0, Math.round(va[axis])));
      const depth = Math.max(0, Math.floor(Number(depthInput.value) || 0));
      lo.push(Math.max(0, k - depth));
      hi.push(Math.min(size, k + depth + 1));
      continue;
    }
    // voxel edges are at index ± 0.5: the drag's edges, rounded to the nearest voxel edge
    let low = Math.round(Math.min(va[axis], vb[axis]) + 0.5);
    let high = Math.round(Math.max(va[axis], vb[axis]) + 0.5);
    low = Math.min(size - 1, Math.max(0, low));
    high = Math.min(size, Math.max(0, high));
    if (high <= low) high = low + 1;
    lo.push(low);
    hi.push(high);
  }
  return [...lo, ...hi];
}

/** The box tool: a drag on the overlay (in box mode) makes a new box, saved by s or the autosave. */
export function listenForBoxDrags(): void {
  overlay.addEventListener("pointerdown", (event) => {
    if (state.mode !== "box" || !state.current || !nv.volumes.length) return;
    const tile = axialTile(nv);
    const point = canvasPoint(canvas, event.clientX, event.clientY);
    if (!tile || !inTile(tile, ...point)) {
      say(state.is2D ? "Draw the box on the image." : "Draw the box on the axial view (the left tile).", "error");
      return;
    }
    overlay.setPointerCapture(event.pointerId);
    state.drag = { tile, from: point, to: point };
    event.preventDefault();
  });
  overlay.addEventListener("pointermove", (event) => {
    if (!state.drag) return;
    state.drag.to = canvasPoint(canvas, event.clientX, event.clientY);
    drawOverlaySoon();
  });
  overlay.addEventListener("pointerup", (event) => {
    if (!state.drag || !state.current) return;
    const done = state.drag;
    state.drag = null;
    done.to = canvasPoint(canvas, event.clientX, event.clientY);
    if (Math.hypot(done.to[0] - done.from[0], done.to[1] - done.from[1]) < 3) {
      drawOverlay();
      return;
    }
    try {
      needEditable();
      state.pendingBox = boxFromDrag(state.current, done.tile, done.from, done.to);
      changed("box");
      const depth = state.is2D ? "" : ` (slices ${state.pendingBox[2]}–${state.pendingBox[5] - 1})`;
      say(`Box [${state.pendingBox.join(", ")}]${depth}: s saves it (autosaved in ${AUTOSAVE_MS / 1000} s).`);
    } catch (err) {
      say(err instanceof Error ? err.message : String(err), "error");
    }
    drawOverlay();
  });
}
