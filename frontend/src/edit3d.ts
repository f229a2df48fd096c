// Tools that draw many slices at once, in the browser (no server round trip): the region grow (key w: a
// click is the seed, the region is every voxel connected to it, 6-neighbours, within the intensity range)
// and fill between slices (key i: a mask drawn on every few axial slices is interpolated into the slices
// between, shape-based: the signed distance maps of two drawn slices are blended and cut at zero).
import { canvasPoint } from "./geometry";
import { dimsOf, type Box } from "./history";
import { canvas, el, root, say } from "./page";
import { changed } from "./saving";
import { refreshBox } from "./strokes";
import { history, needEditable, nv, setMode, state } from "./state";
import { range, samplerOf } from "./voxels";

/** The most voxels one grow adds (a seed in a wrong range would otherwise fill the body). */
export const GROW_LIMIT = 2_000_000;
/** The most empty slices between two drawn ones that fill between slices bridges. */
export const INTERPOLATE_GAP = 40;

export function growTool(): void {
  needEditable();
  if (state.mode === "grow") {
    setMode("view");
    return;
  }
  if (state.is2D) throw new Error("The region grow works on CT volumes.");
  setMode("grow");
  say(`Click a seed: the region connected to it within [${range.lo}, ${range.hi}] is added (change the range beside Threshold).`);
}

/** A click on the viewer in grow mode (not a drag): grow from the voxel under it. */
export function listenForGrowClicks(): void {
  const box = el("viewer-box");
  let down: [number, number] | null = null;
  box.addEventListener(
    "mousedown",
    (event) => {
      if (state.mode === "grow" && event.button === 0) down = [event.clientX, event.clientY];
    },
    { capture: true },
  );
  box.addEventListener(
    "mouseup",
    (event) => {
      if (state.mode !== "grow" || !down || event.button !== 0) return;
      const [x0, y0] = down;
      down = null;
      if (Math.hypot(event.clientX - x0, event.clientY - y0) > 4) return;
      try {
        growAt(x0, y0);
      } catch (err) {
        say(err instanceof Error ? err.message : String(err), "error");
      }
    },
    { capture: true },
  );
}

function growAt(clientX: number, clientY: number): void {
  needEditable();
  const frac = nv.canvasPos2frac(canvasPoint(canvas, clientX, clientY));
  if (frac[0] < 0) throw new Error("Click on the image.");
  const v = nv.frac2vox(frac);
  const [n, box, limited] = grow([v[0], v[1], v[2]], range.lo, range.hi);
  if (!n || !box) {
    say(`The seed is outside the range [${range.lo}, ${range.hi}] or already drawn: nothing added.`, "error");
    return;
  }
  refreshBox(box);
  history.record(nv, box);
  changed("mask");
  root.dataset.grown = String(n);
  const cut = limited ? ` — stopped at ${GROW_LIMIT.toLocaleString("en")} voxels: narrow the range` : "";
  say(`Grown: ${n} voxels within [${range.lo}, ${range.hi}]${cut}. z undoes.`, limited ? "error" : "ok");
}

/** Flood fill of the drawing from `seed` (RAS voxel) over undrawn voxels within [lo, hi]: voxels added,
 * their box, whether the limit stopped it. */
export function grow(seed: number[], lo: number, hi: number): [number, Box | null, boolean] {
  const bitmap = nv.drawBitmap;
  const sampler = samplerOf();
  if (!bitmap || !sampler) throw new Error("No scan or drawing is open.");
  const [nx, ny, nz] = sampler.dims;
  const [sx, sy, sz] = seed.map(Math.round);
  if (sx < 0 || sy < 0 || sz < 0 || sx >= nx || sy >= ny || sz >= nz) return [0, null, false];
  const inRange = (x: number, y: number, z: number): boolean => {
    const v = sampler.at(x, y, z);
    return v >= lo && v <= hi;
  };
  const plane = nx * ny;
  const start = sx + sy * nx + sz * plane;
  if (bitmap[start] !== 0 || !inRange(sx, sy, sz)) return [0, null, false];
  const queue = new Int32Array(GROW_LIMIT);
  const value = 1;
  let head = 0;
  let tail = 0;
  const lo3: [number, number, number] = [sx, sy, sz];
  const hi3: [number, number, number] = [sx, sy, sz];
  bitmap[start] = value;
  queue[tail++] = start;
  let limited = false;
  const visit = (i: number, x: number, y: number, z: number): void => {
    if (bitmap[i] !== 0 || !inRange(x, y, z)) return;
    if (tail >= GROW_LIMIT) {
      limited = true;
      return;
    }
    bitmap[i] = value;
    queue[tail++] = i;
    if (x < lo3[0]) lo3[0] = x;
    if (y < lo3[1]) lo3[1] = y;
    if (z < lo3[2]) lo3[2] = z;
    if (x > hi3[0]) hi3[0] = x;
    if (y > hi3[1]) hi3[1] = y;
    if (z > hi3[2]) hi3[2] = z;
  };
  while (head < tail) {
    const i = queue[head++];
    const x = i % nx;
    const y = Math.floor(i / nx) % ny;
    const z = Math.floor(i / plane);
    if (x > 0) visit(i - 1, x - 1, y, z);
    if (x < nx - 1) visit(i + 1, x + 1, y, z);
    if (y > 0) visit(i - nx, x, y - 1, z);
    if (y < ny - 1) visit(i + nx, x, y + 1, z);
    if (z > 0) visit(i - plane, x, y, z - 1);
    if (z < nz - 1) visit(i + plane, x, y, z + 1);
  }
  return [tail, { lo: lo3, hi: [hi3[0] + 1, hi3[1] + 1, hi3[2] + 1] }, limited];
}

// ---- fill between slices -------------------------------------------------------------------------------

/** Squared Euclidean distance transform in one dimension (Felzenszwalb & Huttenlocher), in place over
 * f[offset + k·stride], k < n. */
function edt1d(f: Float32Array, offset: number, stride: number, n: number, d: Float32Array, v: Int32Array, zz: Float32Array): void {
  let k = 0;
  v[0] = 0;
  zz[0] = -Infinity;
  zz[1] = Infinity;
  for (let q = 1; q < n; q++) {
    const fq = f[offset + q * stride];
    let s = (fq + q * q - (f[offset + v[k] * stride] + v[k] * v[k])) / (2 * q - 2 * v[k]);
    while (s <= zz[k]) {
      k--;
      s = (fq + q * q - (f[offset + v[k] * stride] + v[k] * v[k])) / (2 * q - 2 * v[k]);
    }
    k++;
    v[k] = q;
    zz[k] = s;
    zz[k + 1] = Infinity;
  }
  k = 0;
  for (let q = 0; q < n; q++) {
    while (zz[k + 1] < q) k++;
    const dq = q - v[k];
    d[q] = dq * dq + f[offset + v[k] * stride];
  }
  for (let q = 0; q < n; q++) f[offset + q * stride] = d[q];
}

/** Squared distance of every pixel of a w×h image to the nearest pixel where `target(i)` holds. */
function edt2d(w: number, h: number, target: (i: number) => boolean): Float32Array {
  const f = new Float32Array(w * h);
  const BIG = 1e12;
  for (let i = 0; i < f.length; i++) f[i] = target(i) ? 0 : BIG;
  const n = Math.max(w, h);
  const d = new Float32Array(n);
  const v = new Int32Array(n);
  const zz = new Float32Array(n + 1);
  for (let y = 0; y < h; y++) edt1d(f, y * w, 1, w, d, v, zz);
  for (let x = 0; x < w; x++) edt1d(f, x, w, h, d, v, zz);
  return f;
}

/** Signed distance (negative inside) of the drawn pixels of axial slice z within the rectangle. */
function signedDistance(bitmap: Uint8Array, dims: number[], z: number, x0: number, y0: number, w: number, h: number): Float32Array {
  const [nx, ny] = dims;
  const at = (i: number): number => bitmap[x0 + (i % w) + (y0 + Math.floor(i / w)) * nx + z * nx * ny];
  const toInside = edt2d(w, h, (i) => at(i) !== 0);
  const toOutside = edt2d(w, h, (i) => at(i) === 0);
  const out = new Float32Array(w * h);
  for (let i = 0; i < out.length; i++) out[i] = Math.sqrt(toInside[i]) - Math.sqrt(toOutside[i]);
  return out;
}

/** Fill the empty axial slices between drawn ones (gaps up to INTERPOLATE_GAP): voxels added, box. */
export function interpolateSlices(): [number, number, Box | null] {
  const bitmap = nv.drawBitmap;
  const dims = dimsOf(nv);
  if (!bitmap || !dims) throw new Error("No drawing is open.");
  const [nx, ny, nz] = dims;
  const plane = nx * ny;
  // the drawn slices and each one's bounding rectangle
  const rects: ([number, number, number, number] | null)[] = [];
  for (let z = 0; z < nz; z++) {
    let r: [number, number, number, number] | null = null;
    const base = z * plane;
    for (let i = 0; i < plane; i++) {
      if (bitmap[base + i] === 0) continue;
      const x = i % nx;
      const y = (i - x) / nx;
      if (!r) r = [x, y, x, y];
      else {
        if (x < r[0]) r[0] = x;
        if (x > r[2]) r[2] = x;
        if (y < r[1]) r[1] = y;
        if (y > r[3]) r[3] = y;
      }
    }
    rects.push(r);
  }
  const drawn = rects.flatMap((r, z) => (r ? [z] : []));
  let added = 0;
  let bridged = 0;
  let box: Box | null = null;
  for (let k = 0; k + 1 < drawn.length; k++) {
    const [za, zb] = [drawn[k], drawn[k + 1]];
    if (zb - za < 2 || zb - za - 1 > INTERPOLATE_GAP) continue;
    const ra = rects[za] as number[];
    const rb = rects[zb] as number[];
    const margin = 2;
    const x0 = Math.max(0, Math.min(ra[0], rb[0]) - margin);
    const y0 = Math.max(0, Math.min(ra[1], rb[1]) - margin);
    const x1 = Math.min(nx - 1, Math.max(ra[2], rb[2]) + margin);
    const y1 = Math.min(ny - 1, Math.max(ra[3], rb[3]) + margin);
    const [w, h] = [x1 - x0 + 1, y1 - y0 + 1];
    const sa = signedDistance(bitmap, dims, za, x0, y0, w, h);
    const sb = signedDistance(bitmap, dims, zb, x0, y0, w, h);
    for (let z = za + 1; z < zb; z++) {
      const t = (z - za) / (zb - za);
      for (let i = 0; i < w * h; i++) {
        if ((1 - t) * sa[i] + t * sb[i] > 0) continue;
        const at = x0 + (i % w) + (y0 + Math.floor(i / w)) * nx + z * plane;
        if (bitmap[at] === 0) {
          bitmap[at] = 1;
          added++;
        }
      }
    }
    bridged++;
    const span: Box = { lo: [x0, y0, za + 1], hi: [x1 + 1, y1 + 1, zb] };
    box = box ? { lo: [Math.min(box.lo[0], x0), Math.min(box.lo[1], y0), box.lo[2]], hi: [Math.max(box.hi[0], x1 + 1), Math.max(box.hi[1], y1 + 1), zb] } : span;
  }
  return [added, bridged, box];
}

export function fillBetweenSlices(): void {
  needEditable();
  if (state.is2D) throw new Error("Fill between slices works on CT volumes.");
  const [added, bridged, box] = interpolateSlices();
  if (!added || !box) {
    say(`Nothing to fill: draw the finding on two or more axial slices with empty slices between them (at most ${INTERPOLATE_GAP} apart).`);
    return;
  }
  refreshBox(box);
  history.record(nv, box);
  changed("mask");
  say(`Filled ${added} voxels between ${bridged + 1} drawn axial slices. z undoes.`, "ok");
}
