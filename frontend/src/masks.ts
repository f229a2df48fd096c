// Masks in the drawing layer: 2D masks as PNG (rows = Y, columns = X, non-zero inside: what the API stores
// for radiographs), voxel counts, and filling the holes of the mask in one axial slice.
import type { Niivue } from "@niivue/niivue";
import { nativeToRAS } from "./geometry";

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
