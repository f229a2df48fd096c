// Strokes that stay fast on a 512×512×300 CT: NiiVue's pen, eraser and filled outline write into the
// drawing bitmap, and NiiVue then copied the whole bitmap (78 MB) to the GPU after every mouse move and
// run-length encoded it for its undo after every stroke (5.4 s a stroke in software WebGL). Here the pen's
// calls are wrapped: each marks the box of voxels it touched, only that box goes to the GPU (texSubImage3D
// with the unpack skips: no copy), and the stroke's box is one undo step of history.ts. The threshold brush
// (paint only within an intensity range) keeps a stroke's new voxels in the range, live and at its end.
// The brush: its size (slider, keys , and .) and a circle of that size under the cursor.
import type { Niivue } from "@niivue/niivue";
import { canvasPoint } from "./geometry";
import { clipBox, dimsOf, unionBox, type Box } from "./history";
import { canvas, el } from "./page";
import { history, nv, state } from "./state";
import { range, samplerOf } from "./voxels";

const TEXTURE7_DRAW = 33991; // NiiVue's texture unit of the drawing (TEXTURE_CONSTANTS.TEXTURE7_DRAW)

type Internals = Niivue & {
  drawTexture: WebGLTexture | null;
  drawPenAxCorSag: number;
  drawPenFillPts: number[][];
  drawPenFilled: () => void;
};
const inner = nv as Internals;

/** Changed since the last texture upload, and of which bitmap (a new bitmap is uploaded whole). */
let pending: { box: Box; of: Uint8Array } | null = null;
/** What the stroke under way changed (one undo step when it ends). */
let strokeBox: Box | null = null;

/** Voxels of `box` changed in the drawing: upload only them on the next refresh. */
export function touched(box: Box): void {
  const bitmap = nv.drawBitmap;
  if (!bitmap) return;
  pending = pending && pending.of === bitmap ? { box: unionBox(pending.box, box), of: bitmap } : { box, of: bitmap };
}

/** Upload `box` of the drawing and redraw (after a change made here: holes, grow, interpolation, undo). */
export function refreshBox(box: Box): void {
  touched(box);
  nv.refreshDrawing(true);
}

function upload(box: Box, bitmap: Uint8Array): boolean {
  const dims = dimsOf(nv);
  const gl = nv.gl;
  if (!dims || !inner.drawTexture || nv.opts.is2DSliceShader || bitmap.length !== dims[0] * dims[1] * dims[2]) return false;
  const b = clipBox(box, dims);
  if (!b) return true;
  gl.activeTexture(TEXTURE7_DRAW);
  gl.bindTexture(gl.TEXTURE_3D, inner.drawTexture);
  gl.pixelStorei(gl.UNPACK_ALIGNMENT, 1);
  gl.pixelStorei(gl.UNPACK_ROW_LENGTH, dims[0]);
  gl.pixelStorei(gl.UNPACK_IMAGE_HEIGHT, dims[1]);
  gl.pixelStorei(gl.UNPACK_SKIP_PIXELS, b.lo[0]);
  gl.pixelStorei(gl.UNPACK_SKIP_ROWS, b.lo[1]);
  gl.pixelStorei(gl.UNPACK_SKIP_IMAGES, b.lo[2]);
  const [w, h, d] = [b.hi[0] - b.lo[0], b.hi[1] - b.lo[1], b.hi[2] - b.lo[2]];
  gl.texSubImage3D(gl.TEXTURE_3D, 0, b.lo[0], b.lo[1], b.lo[2], w, h, d, gl.RED, gl.UNSIGNED_BYTE, bitmap);
  for (const p of [gl.UNPACK_ROW_LENGTH, gl.UNPACK_IMAGE_HEIGHT, gl.UNPACK_SKIP_PIXELS, gl.UNPACK_SKIP_ROWS, gl.UNPACK_SKIP_IMAGES]) {
    gl.pixelStorei(p, 0);
  }
  return true;
}

/** Paint only within the range: the stroke's new voxels in `box` outside it go back to what they were. */
function keepInRange(box: Box): void {
  const bitmap = nv.drawBitmap;
  const sampler = samplerOf();
  if (!range.on || !bitmap || !sampler || nv.opts.penValue === 0) return;
  const b = clipBox(box, sampler.dims);
  if (!b) return;
  const [nx, ny] = sampler.dims;
  for (let z = b.lo[2]; z < b.hi[2]; z++) {
    for (let y = b.lo[1]; y < b.hi[1]; y++) {
      for (let x = b.lo[0]; x < b.hi[0]; x++) {
        const i = x + y * nx + z * nx * ny;
        const before = history.shadowAt(i);
        if (bitmap[i] === before) continue;
        const v = sampler.at(x, y, z);
        if (v < range.lo || v > range.hi) bitmap[i] = before;
      }
    }
  }
}

function penBox(points: number[][]): Box {
  const r = Math.floor(Math.max(1, nv.opts.penSize) / 2) + 1;
  const lo = [0, 1, 2].map((a) => Math.min(...points.map((p) => p[a])) - r) as [number, number, number];
  const hi = [0, 1, 2].map((a) => Math.max(...points.map((p) => p[a])) + r + 1) as [number, number, number];
  return { lo, hi };
}

function afterPen(box: Box): void {
  keepInRange(box);
  strokeBox = unionBox(strokeBox, box);
  touched(box);
}

/** The box of the plane a filled outline is drawn in. */
function planeBox(): Box | null {
  const dims = dimsOf(nv);
  const first = inner.drawPenFillPts[0];
  if (!dims || !first) return null;
  const axis = [2, 1, 0][inner.drawPenAxCorSag] ?? 2; // axial: z fixed, coronal: y, sagittal: x
  const box: Box = { lo: [0, 0, 0], hi: [...dims] };
  box.lo[axis] = first[axis];
  box.hi[axis] = first[axis] + 1;
  return box;
}

/** Wrap NiiVue's pen so that strokes are incremental (call once, before the first volume). */
export function makeStrokesIncremental(): void {
  const drawPt = nv.drawPt.bind(nv);
  nv.drawPt = (x: number, y: number, z: number, penValue: number, bitmap: Uint8Array | null = null) => {
    drawPt(x, y, z, penValue, bitmap);
    if (!bitmap || bitmap === nv.drawBitmap) afterPen(penBox([[x, y, z]]));
  };
  const drawPenLine = nv.drawPenLine.bind(nv);
  nv.drawPenLine = (a: number[], b: number[], penValue: number) => {
    drawPenLine(a, b, penValue);
    afterPen(penBox([a, b]));
  };
  const drawPenFilled = inner.drawPenFilled.bind(nv);
  inner.drawPenFilled = () => {
    const box = planeBox();
    if (box) {
      strokeBox = unionBox(strokeBox, box);
      touched(box); // the fill's own refresh uploads the plane, not the volume
    }
    drawPenFilled();
  };
  // The undo ring of NiiVue is not used (history.ts keeps the strokes' boxes).
  nv.drawAddUndoBitmap = () => {};
  const refreshDrawing = nv.refreshDrawing.bind(nv);
  nv.refreshDrawing = (isForceRedraw = true, useClickToSegmentBitmap = false) => {
    const change = pending;
    pending = null;
    if (change && !useClickToSegmentBitmap && change.of === nv.drawBitmap && upload(change.box, change.of)) {
      if (isForceRedraw) nv.drawScene();
      return;
    }
    refreshDrawing(isForceRedraw, useClickToSegmentBitmap);
  };
  history.onRestore = refreshBox;
}

/** A stroke ended (NiiVue's onDrawingChanged "draw"): its box, after the range was kept once more (a
 * filled outline is filled only at its end). Null when the stroke changed nothing. */
export function endStroke(): Box | null {
  const box = strokeBox;
  strokeBox = null;
  if (!box) return null;
  if (range.on) {
    keepInRange(box);
    refreshBox(box);
  }
  return box;
}

// ---- the brush: size and cursor ------------------------------------------------------------------------

export const PEN_SIZES = [1, 2, 3, 5, 7, 9, 13, 17, 25, 35];

export function setPenSize(size: number): void {
  const n = Math.max(1, Math.min(PEN_SIZES[PEN_SIZES.length - 1], Math.round(size)));
  nv.opts.penSize = n;
  const slider = el<HTMLInputElement>("pen-size");
  slider.value = String(n);
  el("pen-size-value").textContent = `${n} vx`;
}

export function stepPenSize(step: 1 | -1): void {
  const now = nv.opts.penSize;
  const next = step > 0 ? PEN_SIZES.find((s) => s > now) : [...PEN_SIZES].reverse().find((s) => s < now);
  setPenSize(next ?? now);
}

/** The circle under the cursor while painting or erasing: the pen's size on the tile under the mouse. */
export function listenForBrushCursor(): void {
  const cursor = el("brush");
  const box = el("viewer-box");
  const hide = (): void => {
    cursor.hidden = true;
  };
  box.addEventListener("pointerleave", hide);
  box.addEventListener("pointermove", (event) => {
    if ((state.mode !== "paint" && state.mode !== "erase") || !nv.back?.dims) return hide();
    const [px, py] = canvasPoint(canvas, event.clientX, event.clientY);
    const i = nv.tileIndex(px, py);
    const tile = nv.screenSlices[i];
    if (i < 0 || !tile || tile.axCorSag > 2 || !tile.fovMM?.length) return hide();
    // the pen's size on this tile: NiiVue's own mapping of two voxels penSize apart along the tile's
    // horizontal axis (x on axial and coronal tiles, y on sagittal ones), in CSS pixels
    const frac = nv.canvasPos2frac([px, py]);
    const dims = nv.back.dims;
    const axis = tile.axCorSag === 2 ? 1 : 0;
    const other = [frac[0], frac[1], frac[2]] as [number, number, number];
    other[axis] += (frac[axis] > 0.5 ? -1 : 1) * (nv.opts.penSize / dims[axis + 1]);
    const a = nv.frac2canvasPosWithTile(frac, tile.axCorSag);
    const b = nv.frac2canvasPosWithTile(other, tile.axCorSag);
    if (!a || !b) return hide();
    const rect = canvas.getBoundingClientRect();
    const css = (Math.hypot(b.pos[0] - a.pos[0], b.pos[1] - a.pos[1]) * rect.width) / canvas.width;
    const host = box.getBoundingClientRect();
    cursor.style.width = cursor.style.height = `${Math.max(4, css)}px`;
    cursor.style.left = `${event.clientX - host.left}px`;
    cursor.style.top = `${event.clientY - host.top}px`;
    cursor.classList.toggle("erase", state.mode === "erase");
    cursor.hidden = false;
  });
}
