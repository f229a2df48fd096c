// The scan's intensities in the drawing's voxel grid (NiiVue's RAS order): the native index of a RAS voxel
// from the volume's img2RAS steps, the value in stored units (HU for CT: the header's slope and intercept),
// and the intensity range the threshold brush and the region grow keep to.
import type { NVImage } from "@niivue/niivue";
import { nv } from "./state";

export type Sampler = {
  dims: [number, number, number];
  /** Stored units (HU for CT) of the RAS voxel with drawing index x + y·nx + z·nx·ny. */
  at: (x: number, y: number, z: number) => number;
};

export function samplerOf(volume: NVImage | undefined = nv.volumes[0]): Sampler | null {
  const img = volume?.img;
  const step = volume?.img2RASstep;
  const start = volume?.img2RASstart;
  const dims = nv.back?.dims;
  if (!volume?.hdr || !img || !step || !start || !dims) return null;
  const slope = Number.isNaN(volume.hdr.scl_slope) || volume.hdr.scl_slope === 0 ? 1 : volume.hdr.scl_slope;
  const inter = Number.isNaN(volume.hdr.scl_inter) ? 0 : volume.hdr.scl_inter;
  const origin = start[0] + start[1] + start[2];
  const [s0, s1, s2] = step;
  return {
    dims: [dims[1], dims[2], Math.max(1, dims[3])],
    at: (x, y, z) => img[origin + x * s0 + y * s1 + z * s2] * slope + inter,
  };
}

/** The intensity range of the threshold brush and the region grow (inputs #range-lo, #range-hi). */
export const range = { on: false, lo: -500, hi: 300 };
