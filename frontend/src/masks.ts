// Masks in the drawing layer: 2D masks as PNG (rows = Y, columns = X, non-zero inside: what the API stores
// for radiographs), voxel counts, and filling the holes of the mask in one axial slice.
import type { Niivue, NVImage } from "@niivue/niivue";
import { nativeToRAS } from "./geometry";
import type { Box } from "./history";

/** A 3D mask as the API's `?encoding=runs` sends it: runs of set voxels in the stored voxel order (X
 * fastest), the grid's shape, and the server's count of the set voxels and the sums of their indices. */
export type MaskRuns = { pairs: Uint32Array; shape: number[]; voxels: number; sums: number[] };

/** The API's `?encoding=runs` response (the browser has inflated it): throws, saying what is wrong, when
 * its headers or body do not describe runs. */
export async function readRuns(response: Response): Promise<MaskRuns> {
  const numbers = (name: string): number[] => {
    const values = (response.headers.get(name) ?? "").split(",").map(Number);
    if (!values.length || values.some((n) => !Number.isSafeInteger(n) || n < 0)) {
      throw new Error(`the server sent no ${name} header for the runs`);
    }
    return values;
  };
  const shape = numbers("X-Mask-Shape");
  const [voxels] = numbers("X-Mask-Voxels");
  const sums = numbers("X-Mask-Sums");
  const body = await response.arrayBuffer();
  if (body.byteLength % 8 !== 0) throw new Error(`runs of ${body.byteLength} bytes are not (start, length) pairs`);
  return { pairs: new Uint32Array(body), shape, voxels, sums };
}

/** How NiiVue's drawing (RAS voxel order, the order of its bitmap) holds a volume's stored voxels, when
 * it only flips axes (the platform's scans: X = image column runs right to left, Y = image row front to
 * back): per axis whether it is flipped. Null when NiiVue permutes the axes (then its own loadDrawing
 * reorients a NIfTI). From the volume's permRAS, as loadDrawing's transform. */
export function storedFlipsOfRAS(volume: NVImage | undefined): [boolean, boolean, boolean] | null {
  const perm = volume?.permRAS;
  if (!perm || perm.length < 3 || [0, 1, 2].some((a) => Math.abs(perm[a]) !== a + 1)) return null;
  return [perm[0] < 0, perm[1] < 0, perm[2] < 0];
}

/** Fill NiiVue's drawing `bitmap` (zeros; RAS order over `dims` = [X, Y, Z]) with `value` over runs of the
 * stored order, flipping the axes of `flips`: each run split into its rows (a row stays contiguous, reversed
 * when X is flipped). Returns the box of the filled voxels in the drawing's grid (null: none). Throws when a
 * run reaches outside the grid. */
export function fillRuns(bitmap: Uint8Array, pairs: Uint32Array, dims: number[], flips: boolean[], value = 1): Box | null {
  const [nx, ny, nz] = dims;
  const nxy = nx * ny;
  if (bitmap.length !== nxy * nz) throw new Error(`a drawing of ${bitmap.length} voxels for a ${dims.join(" × ")} grid`);
  const lo: [number, number, number] = [nx, ny, nz];
  const hi: [number, number, number] = [0, 0, 0];
  for (let p = 0; p < pairs.length; p += 2) {
    let i = pairs[p];
    const end = i + pairs[p + 1];
    if (end > bitmap.length) throw new Error(`a run ends at voxel ${end}, past the grid's ${bitmap.length}`);
    while (i < end) {
      const x = i % nx;
      const row = (i - x) / nx;
      const y = row % ny;
      const z = (row - y) / ny;
      const n = Math.min(end - i, nx - x); // the part of the run in this row
      const rx = flips[0] ? nx - x - n : x;
      const ry = flips[1] ? ny - 1 - y : y;
      const rz = flips[2] ? nz - 1 - z : z;
      const at = rx + ry * nx + rz * nxy;
      bitmap.fill(value, at, at + n);
      if (rx < lo[0]) lo[0] = rx;
      if (rx + n > hi[0]) hi[0] = rx + n;
      if (ry < lo[1]) lo[1] = ry;
      if (ry + 1 > hi[1]) hi[1] = ry + 1;
      if (rz < lo[2]) lo[2] = rz;
      if (rz + 1 > hi[2]) hi[2] = rz + 1;
      i += n;
    }
  }
  return hi[0] > 0 ? { lo, hi } : null;
}

/** The centroid of the runs' voxels in the drawing's (RAS) voxel grid, rounded (as the screen's own count
 * of a drawing): from the server's sums of stored indices, mirrored on flipped axes. */
export function runsCentroid(runs: MaskRuns, flips: boolean[]): [number, number, number] | null {
  const n = runs.voxels;
  if (!n) return null;
  const mean = [0, 1, 2].map((a) => (flips[a] ? n * (runs.shape[a] - 1) - runs.sums[a] : runs.sums[a]) / n);
  return [Math.round(mean[0]), Math.round(mean[1]), Math.round(mean[2])];
}

/** Painted voxels (label > 0) of NiiVue's drawing bitmap. */
export function countDrawn(bitmap: Uint8Array | null): number {
  if (!bitmap) return 0;
  let n = 0;
  for (let i = 0; i < bitmap.length; i++) if (bitmap[i] !== 0) n++;
  return n;
}

/** A 2D mask PNG → NiiVue's drawing bitmap (RAS order) of the loaded radiograph. Throws when its size
 * differs from the image's. */
export async function pngToBitmap(nv: Niivue, png: Blob): Promise<Uint8Array> {
  const volume = nv.volumes[0];
  const { dims, xlut, ylut, zlut } = nativeToRAS(volume);
  const image = await createImageBitmap(png);
  if (image.width !== dims[1] || image.height !== dims[2]) {
    throw new Error(`The mask is ${image.width} × ${image.height} pixels, the image ${dims[1]} × ${dims[2]}.`);
  }
  const canvas = new OffscreenCanvas(image.width, image.height);
  const context = canvas.getContext("2d", { willReadFrequently: true });
  if (!context) throw new Error("No 2D canvas to read the mask PNG.");
  context.drawImage(image, 0, 0);
  const rgba = context.getImageData(0, 0, image.width, image.height).data;
  const bitmap = new Uint8Array(dims[1] * dims[2] * dims[3]);
  for (let y = 0; y < dims[2]; y++) {
    for (let x = 0; x < dims[1]; x++) {
      const p = (y * dims[1] + x) * 4;
      if (rgba[p] > 0 || rgba[p + 1] > 0 || rgba[p + 2] > 0) bitmap[xlut[x] + ylut[y] + zlut[0]] = 1;
    }
  }
  return bitmap;
}

/** NiiVue's drawing bitmap of a radiograph → a PNG (white inside) the API reads as a 2D mask. */
export async function bitmapToPng(nv: Niivue): Promise<Blob> {
  const bitmap = nv.drawBitmap;
  if (!bitmap) throw new Error("Nothing to save: no drawing is open.");
  const { dims, xlut, ylut, zlut } = nativeToRAS(nv.volumes[0]);
  const canvas = new OffscreenCanvas(dims[1], dims[2]);
  const context = canvas.getContext("2d");
  if (!context) throw new Error("No 2D canvas to write the mask PNG.");
  const pixels = context.createImageData(dims[1], dims[2]);
  for (let y = 0; y < dims[2]; y++) {
    for (let x = 0; x < dims[1]; x++) {
      const p = (y * dims[1] + x) * 4;
      const on = bitmap[xlut[x] + ylut[y] + zlut[0]] !== 0 ? 255 : 0;
      pixels.data[p] = pixels.data[p + 1] = pixels.data[p + 2] = on;
      pixels.data[p + 3] = 255;
    }
  }
  context.putImageData(pixels, 0, 0);
  return canvas.convertToBlob({ type: "image/png" });
}

/** Fill the holes of the drawing in the axial slice `z` (RAS order): every unpainted pixel that cannot be
 * reached from the slice's border without crossing paint becomes `value`. Returns how many were filled. */
export function fillHolesInSlice(bitmap: Uint8Array, dims: number[], z: number, value = 1): number {
  const [nx, ny] = [dims[1], dims[2]];
  const offset = z * nx * ny;
  const outside = new Uint8Array(nx * ny);
  const queue = new Int32Array(nx * ny);
  let head = 0;
  let tail = 0;
  const seed = (i: number): void => {
    if (!outside[i] && bitmap[offset + i] === 0) {
      outside[i] = 1;
      queue[tail++] = i;
    }
  };
  for (let x = 0; x < nx; x++) {
    seed(x);
    seed((ny - 1) * nx + x);
  }
  for (let y = 0; y < ny; y++) {
    seed(y * nx);
    seed(y * nx + nx - 1);
  }
  while (head < tail) {
    const i = queue[head++];
    const x = i % nx;
    if (x > 0) seed(i - 1);
    if (x < nx - 1) seed(i + 1);
    if (i >= nx) seed(i - nx);
    if (i < (ny - 1) * nx) seed(i + nx);
  }
  let filled = 0;
  for (let i = 0; i < nx * ny; i++) {
    if (!outside[i] && bitmap[offset + i] === 0) {
      bitmap[offset + i] = value;
      filled++;
    }
  }
  return filled;
}
