// Coordinates of the review screen: the scan's native voxel indices (X, Y[, Z], what the API's masks and
// boxes use), world millimetres (the NIfTI affine), NiiVue's RAS-ordered drawing bitmap, and canvas pixels
// of an axial tile (NiiVue's screenSlices: the same mapping NiiVue uses for the mouse).
import type { Niivue, NVImage } from "@niivue/niivue";

export type Vec3 = [number, number, number];
export type Tile = { leftTopWidthHeight: number[]; axCorSag: number; leftTopMM: number[]; fovMM: number[] };

/** The scan's affine (native voxel → world mm), 4 × 4 rows, from the loaded volume's header. */
export function affineOf(volume: NVImage): number[][] {
  const affine = volume.hdr?.affine;
  if (!affine) throw new Error("The scan has no affine in its header.");
  return affine;
}

export function voxToMM(affine: number[][], v: readonly number[]): Vec3 {
  const [i, j, k] = [v[0], v[1], v[2] ?? 0];
  return [0, 1, 2].map((r) => affine[r][0] * i + affine[r][1] * j + affine[r][2] * k + affine[r][3]) as Vec3;
}

/** World mm → continuous native voxel coordinates (voxel centres at integers). */
export function mmToVox(affine: number[][], mm: readonly number[]): Vec3 {
  const m = [0, 1, 2].map((r) => [affine[r][0], affine[r][1], affine[r][2]]);
  const d = [mm[0] - affine[0][3], mm[1] - affine[1][3], mm[2] - affine[2][3]];
  const det =
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) -
    m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0]) +
    m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
  if (Math.abs(det) < 1e-12) throw new Error("The scan's affine is singular.");
  // Cramer's rule: solve m · v = d.
  const solve = (col: number): number => {
    const c = m.map((row, r) => row.map((value, j) => (j === col ? d[r] : value)));
    return (
      (c[0][0] * (c[1][1] * c[2][2] - c[1][2] * c[2][1]) -
        c[0][1] * (c[1][0] * c[2][2] - c[1][2] * c[2][0]) +
        c[0][2] * (c[1][0] * c[2][1] - c[1][1] * c[2][0])) /
      det
    );
  };
  return [solve(0), solve(1), solve(2)];
}

/** The native axis along which axial slices are stacked (the affine column pointing most along world z). */
export function sliceAxis(affine: number[][]): number {
  let best = 2;
  for (let j = 0; j < 3; j++) if (Math.abs(affine[2][j]) > Math.abs(affine[2][best])) best = j;
  return best;
}

/** The first axial tile NiiVue drew (single view for radiographs, the left tile of the MPR row for CT). */
export function axialTile(nv: Niivue): Tile | null {
  for (const s of nv.screenSlices) {
    if (s.axCorSag === 0 && s.leftTopMM?.length >= 2 && s.fovMM?.length >= 2) return s as Tile;
  }
  return null;
}

/** Canvas pixels (NiiVue's units: device pixels) of a mouse event. */
export function canvasPoint(canvas: HTMLCanvasElement, clientX: number, clientY: number): [number, number] {
  const rect = canvas.getBoundingClientRect();
  return [((clientX - rect.left) * canvas.width) / rect.width, ((clientY - rect.top) * canvas.height) / rect.height];
}

/** Canvas pixels → CSS pixels relative to the canvas's top-left corner. */
export function cssPoint(canvas: HTMLCanvasElement, x: number, y: number): [number, number] {
  const rect = canvas.getBoundingClientRect();
  return [(x * rect.width) / canvas.width, (y * rect.height) / canvas.height];
}

function unmirrored(tile: Tile): { left: number; top: number; width: number; height: number; mirror: boolean } {
  const [l, t, w, h] = tile.leftTopWidthHeight;
  return w < 0 ? { left: l + w, top: t, width: -w, height: h, mirror: true } : { left: l, top: t, width: w, height: h, mirror: false };
}

/** Is the canvas point inside the tile? */
export function inTile(tile: Tile, x: number, y: number): boolean {
  const r = unmirrored(tile);
  return x >= r.left && x <= r.left + r.width && y >= r.top && y <= r.top + r.height;
}

/** Axial tile: canvas pixels → world (x, y) mm, as NiiVue's screenXY2TextureFrac computes them. */
export function tileToMM(tile: Tile, x: number, y: number): [number, number] {
  const r = unmirrored(tile);
  let fx = (x - r.left) / r.width;
  if (r.mirror) fx = 1 - fx;
  const fy = 1 - (y - r.top) / r.height;
  return [tile.leftTopMM[0] + fx * tile.fovMM[0], tile.leftTopMM[1] + fy * tile.fovMM[1]];
}

/** Axial tile: world (x, y) mm → canvas pixels (the inverse of tileToMM). */
export function mmToTile(tile: Tile, mx: number, my: number): [number, number] {
  const r = unmirrored(tile);
  let fx = (mx - tile.leftTopMM[0]) / tile.fovMM[0];
  const fy = (my - tile.leftTopMM[1]) / tile.fovMM[1];
  if (r.mirror) fx = 1 - fx;
  return [r.left + fx * r.width, r.top + (1 - fy) * r.height];
}

/** The canvas rectangle [left, top, right, bottom] (canvas pixels) of a native-voxel region on the axial
 * tile, from continuous corner coordinates (voxel edges at ±0.5), plus whether x or y runs mirrored
 * (native index increasing to the screen's left / up). */
export function regionOnTile(
  tile: Tile,
  affine: number[][],
  lo: readonly number[],
  hi: readonly number[],
  k: number,
  axes: [number, number],
): { rect: [number, number, number, number]; flipX: boolean; flipY: boolean } {
  const corner = (a: number, b: number): [number, number] => {
    const v = [k, k, k];
    v[axes[0]] = a;
    v[axes[1]] = b;
    const mm = voxToMM(affine, v);
    return mmToTile(tile, mm[0], mm[1]);
  };
  const p00 = corner(lo[0], lo[1]);
  const p10 = corner(hi[0], lo[1]);
  const p01 = corner(lo[0], hi[1]);
  const p11 = corner(hi[0], hi[1]);
  const xs = [p00[0], p10[0], p01[0], p11[0]];
  const ys = [p00[1], p10[1], p01[1], p11[1]];
  return {
    rect: [Math.min(...xs), Math.min(...ys), Math.max(...xs), Math.max(...ys)],
    flipX: p10[0] < p00[0] || p01[0] < p00[0],
    flipY: p01[1] < p00[1] || p10[1] < p00[1],
  };
}

/** Lookup tables from native voxel (x, y, z) to the index of NiiVue's RAS-ordered drawing bitmap: index =
 * xlut[x] + ylut[y] + zlut[z] (what NiiVue's loadDrawing does with the volume's permRAS). */
export function nativeToRAS(volume: NVImage): { dims: number[]; xlut: Int32Array; ylut: Int32Array; zlut: Int32Array } {
  const hdrDims = volume.hdr?.dims;
  const perm = volume.permRAS;
  if (!hdrDims || !perm) throw new Error("The scan's header is not loaded.");
  const dims = [hdrDims[0], hdrDims[1], Math.max(1, hdrDims[2]), Math.max(1, hdrDims[3] || 1)];
  const layout = [0, 0, 0];
  for (let i = 0; i < 3; i++) {
    for (let j = 0; j < 3; j++) if (Math.abs(perm[i]) - 1 === j) layout[j] = i * Math.sign(perm[i]);
  }
  let stride = 1;
  const instride = [1, 1, 1];
  const flip = [false, false, false];
  for (let i = 0; i < 3; i++) {
    for (let j = 0; j < 3; j++) {
      if (Math.abs(layout[j]) !== i) continue;
      instride[j] = stride;
      if (layout[j] < 0 || Object.is(layout[j], -0)) flip[j] = true;
      stride *= dims[j + 1];
    }
  }
  const lut = (n: number, s: number, f: boolean): Int32Array => {
    const out = new Int32Array(n);
    for (let i = 0; i < n; i++) out[i] = (f ? n - 1 - i : i) * s;
    return out;
  };
  return {
    dims,
    xlut: lut(dims[1], instride[0], flip[0]),
    ylut: lut(dims[2], instride[1], flip[1]),
    zlut: lut(dims[3], instride[2], flip[2]),
  };
}
