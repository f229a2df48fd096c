// What is drawn over NiiVue's axial tile: boxes (the finding's proposals dashed, the shown version solid,
// a new one yellow, the drag under way) on the overlay canvas, and the eye-gaze heatmap's place over a
// radiograph (gaze.ts: the heatmap, the gaze panel).
import { findingColour, proposalsOf, rgb } from "./cases";
import { placeGaze } from "./gaze";
import { affineOf, axialTile, mmToVox, regionOnTile, sliceAxis, type Tile } from "./geometry";
import { drawLayers2D } from "./layers";
import { canvas, gazeImage, overlay } from "./page";
import { nv, state } from "./state";

// The gaze heatmap and panel live in gaze.ts; caseview.ts, keys.ts and review.ts import them from here.
export { renderGazeChoices, setGaze, toggleGaze } from "./gaze";

/** The current slice as native voxel coordinates (continuous) of the crosshair. */
function crosshairVox(): [number, number, number] {
  const mm = nv.frac2mm(nv.scene.crosshairPos);
  return mmToVox(affineOf(nv.volumes[0]), [mm[0], mm[1], mm[2]]);
}

export function inPlaneAxes(affine: number[][]): { slice: number; axes: [number, number] } {
  if (state.is2D) return { slice: 2, axes: [0, 1] };
  const slice = sliceAxis(affine);
  const axes = [0, 1, 2].filter((a) => a !== slice) as [number, number];
  return { slice, axes };
}

function strokeBox(
  context: CanvasRenderingContext2D,
  tile: Tile,
  affine: number[][],
  box: number[],
  colour: string,
  label: string,
  dashed: boolean,
): void {
  const n = box.length / 2;
  const { slice, axes } = inPlaneAxes(affine);
  let k = 0;
  if (n === 3) {
    k = Math.round(crosshairVox()[slice]);
    if (k < box[slice] || k >= box[slice + n]) return; // the box is not on this slice
  }
  const lo = [box[axes[0]] - 0.5, box[axes[1]] - 0.5];
  const hi = [box[axes[0] + n] - 0.5, box[axes[1] + n] - 0.5];
  const { rect } = regionOnTile(tile, affine, lo, hi, k, axes);
  context.save();
  context.strokeStyle = colour;
  context.lineWidth = 2;
  if (dashed) context.setLineDash([6, 4]);
  context.strokeRect(rect[0], rect[1], rect[2] - rect[0], rect[3] - rect[1]);
  context.font = "12px system-ui, sans-serif";
  context.fillStyle = colour;
  context.fillText(label, rect[0] + 2, Math.max(12, rect[1] - 4));
  context.restore();
}

let overlayQueued = false;

export function drawOverlaySoon(): void {
  if (overlayQueued) return;
  overlayQueued = true;
  requestAnimationFrame(() => {
    overlayQueued = false;
    drawOverlay();
  });
}

/** Boxes (proposals of this finding dashed, the shown version solid, a new one yellow) and the gaze
 * heatmap's place, over NiiVue's axial tile. */
export function drawOverlay(): void {
  if (overlay.width !== canvas.width || overlay.height !== canvas.height) {
    overlay.width = canvas.width;
    overlay.height = canvas.height;
  }
  const context = overlay.getContext("2d");
  if (!context) return;
  context.clearRect(0, 0, overlay.width, overlay.height);
  const c = state.current;
  const tile = nv.volumes.length ? axialTile(nv) : null;
  if (!c || !tile || !c.scan) {
    gazeImage.hidden = true;
    return;
  }
  const affine = affineOf(nv.volumes[0]);
  const colour = findingColour(c, c.finding.id);
  drawLayers2D(context, tile, affine); // a radiograph's anatomy layers (layers.ts), under the boxes
  for (const p of proposalsOf(c, c.finding)) {
    if (p.box && p.box.length === 2 * (state.is2D ? 2 : 3)) {
      strokeBox(context, tile, affine, p.box, rgb(colour, 0.9), `proposal #${p.id} (${p.source})`, true);
    }
  }
  if (state.shownBox && !state.pendingBox) strokeBox(context, tile, affine, state.shownBox.box, rgb(colour), state.shownBox.label, false);
  if (state.pendingBox) strokeBox(context, tile, affine, state.pendingBox, "#ffd400", "new box (s saves)", false);
  if (state.drag) {
    context.save();
    context.strokeStyle = "#ffd400";
    context.lineWidth = 2;
    context.setLineDash([4, 3]);
    const [x0, y0] = state.drag.from;
    const [x1, y1] = state.drag.to;
    context.strokeRect(Math.min(x0, x1), Math.min(y0, y1), Math.abs(x1 - x0), Math.abs(y1 - y0));
    context.restore();
  }
  placeGaze(tile, affine, c);
}
