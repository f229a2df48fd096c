// Undo and redo of the drawing, kept as patches: each change (a stroke, a fill, a grown region, a loaded
// proposal) is the box of the drawing it touched with the voxels before and after it. A stroke's box is a
// few slices' worth of bytes, so recording, undoing and redoing it touch only that box (NiiVue's own undo
// encoded the whole 512×512×300 bitmap after every stroke). A shadow copy of the drawing as of the last
// recorded change finds what changed; the drawn voxel count is kept up to date from the same boxes.
import type { Niivue } from "@niivue/niivue";

/** A box of the drawing in its voxel grid (NiiVue's RAS order): lo inclusive, hi exclusive, [x, y, z]. */
export type Box = { lo: [number, number, number]; hi: [number, number, number] };

type Patch = { box: Box; before: Uint8Array; after: Uint8Array };

export function dimsOf(nv: Niivue): [number, number, number] | null {
  const d = nv.back?.dims;
  return d ? [d[1], d[2], Math.max(1, d[3])] : null;
}

export function fullBox(dims: readonly number[]): Box {
  return { lo: [0, 0, 0], hi: [dims[0], dims[1], dims[2]] };
}

export function unionBox(a: Box | null, b: Box): Box {
  if (!a) return { lo: [...b.lo], hi: [...b.hi] };
  return {
    lo: [Math.min(a.lo[0], b.lo[0]), Math.min(a.lo[1], b.lo[1]), Math.min(a.lo[2], b.lo[2])],
    hi: [Math.max(a.hi[0], b.hi[0]), Math.max(a.hi[1], b.hi[1]), Math.max(a.hi[2], b.hi[2])],
  };
}

/** Clip a box to the grid; null when nothing is left. */
export function clipBox(box: Box, dims: readonly number[]): Box | null {
  const lo = box.lo.map((v, a) => Math.max(0, Math.min(dims[a], Math.floor(v)))) as [number, number, number];
  const hi = box.hi.map((v, a) => Math.max(0, Math.min(dims[a], Math.ceil(v)))) as [number, number, number];
  return lo.every((v, a) => v < hi[a]) ? { lo, hi } : null;
}

/** Copy the voxels of `box` out of a bitmap (x fastest). */
export function crop(bitmap: Uint8Array, dims: readonly number[], box: Box): Uint8Array {
  const [nx, ny] = dims;
  const w = box.hi[0] - box.lo[0];
  const out = new Uint8Array(w * (box.hi[1] - box.lo[1]) * (box.hi[2] - box.lo[2]));
  let o = 0;
  for (let z = box.lo[2]; z < box.hi[2]; z++) {
    for (let y = box.lo[1]; y < box.hi[1]; y++) {
      const row = box.lo[0] + y * nx + z * nx * ny;
      out.set(bitmap.subarray(row, row + w), o);
      o += w;
    }
  }
  return out;
}

function paste(bitmap: Uint8Array, dims: readonly number[], box: Box, data: Uint8Array): void {
  const [nx, ny] = dims;
  const w = box.hi[0] - box.lo[0];
  let o = 0;
  for (let z = box.lo[2]; z < box.hi[2]; z++) {
    for (let y = box.lo[1]; y < box.hi[1]; y++) {
      bitmap.set(data.subarray(o, o + w), box.lo[0] + y * nx + z * nx * ny);
      o += w;
    }
  }
}

const painted = (data: Uint8Array): number => {
  let n = 0;
  for (let i = 0; i < data.length; i++) if (data[i] !== 0) n++;
  return n;
};

export class DrawHistory {
  private patches: Patch[] = [];
  private at = 0; // patches[0..at) are applied
  private shadow: Uint8Array | null = null;
  private dims: [number, number, number] = [0, 0, 0];
  /** Painted voxels of the drawing as of the last recorded change. */
  count = 0;
  /** Called with the box that changed after undo / redo (the drawing's texture update, incremental). */
  onRestore: (box: Box) => void = () => {};

  constructor(private readonly limit = 64) {}

  /** Start over from the drawing as it is (a case or a version was loaded); `count`: its painted voxels
   * when known already (the server's count of a mask sent as runs). */
  reset(nv: Niivue, count?: number): void {
    const dims = dimsOf(nv);
    this.patches = [];
    this.at = 0;
    this.shadow = nv.drawBitmap && dims ? nv.drawBitmap.slice() : null;
    this.dims = dims ?? [0, 0, 0];
    this.count = this.shadow ? (count ?? painted(this.shadow)) : 0;
  }

  /** The drawing changed (inside `box` when given, else anywhere): one undo step. False when nothing did. */
  record(nv: Niivue, box?: Box | null): boolean {
    const bitmap = nv.drawBitmap;
    if (!bitmap || !this.shadow || bitmap.length !== this.shadow.length) {
      this.reset(nv);
      return false;
    }
    let region = box ? clipBox(box, this.dims) : fullBox(this.dims);
    if (!box) region = this.changedBox(bitmap); // the smallest box holding every change
    if (!region) return false;
    const before = crop(this.shadow, this.dims, region);
    const after = crop(bitmap, this.dims, region);
    let same = true;
    for (let i = 0; i < after.length; i++) {
      if (after[i] !== before[i]) {
        same = false;
        break;
      }
    }
    if (same) return false;
    this.count += painted(after) - painted(before);
    paste(this.shadow, this.dims, region, after);
    this.patches = this.patches.slice(0, this.at);
    this.patches.push({ box: region, before, after });
    if (this.patches.length > this.limit) this.patches.shift();
    this.at = this.patches.length;
    return true;
  }

  /** The bounding box of the voxels that differ from the shadow (a scan of the whole drawing). */
  private changedBox(bitmap: Uint8Array): Box | null {
    const shadow = this.shadow as Uint8Array;
    const [nx, ny] = this.dims;
    const lo: [number, number, number] = [Infinity, Infinity, Infinity];
    const hi: [number, number, number] = [-1, -1, -1];
    const plane = nx * ny;
    for (let i = 0; i < bitmap.length; i++) {
      if (bitmap[i] === shadow[i]) continue;
      const x = i % nx;
      const y = Math.floor(i / nx) % ny;
      const z = Math.floor(i / plane);
      if (x < lo[0]) lo[0] = x;
      if (y < lo[1]) lo[1] = y;
      if (z < lo[2]) lo[2] = z;
      if (x > hi[0]) hi[0] = x;
      if (y > hi[1]) hi[1] = y;
      if (z > hi[2]) hi[2] = z;
    }
    if (hi[0] < 0) return null;
    return { lo, hi: [hi[0] + 1, hi[1] + 1, hi[2] + 1] };
  }

  /** The drawing before this change began (voxels of `box`): what a stroke compares with. */
  before(box: Box): Uint8Array | null {
    return this.shadow ? crop(this.shadow, this.dims, box) : null;
  }

  /** The value of one voxel before the change under way. */
  shadowAt(index: number): number {
    return this.shadow ? this.shadow[index] : 0;
  }

  get canUndo(): boolean {
    return this.at > 0;
  }

  get canRedo(): boolean {
    return this.at < this.patches.length;
  }

  undo(nv: Niivue): boolean {
    if (!this.canUndo) return false;
    this.at--;
    this.apply(nv, this.patches[this.at], "before");
    return true;
  }

  redo(nv: Niivue): boolean {
    if (!this.canRedo) return false;
    this.apply(nv, this.patches[this.at], "after");
    this.at++;
    return true;
  }

  private apply(nv: Niivue, patch: Patch, side: "before" | "after"): void {
    const bitmap = nv.drawBitmap;
    if (!bitmap || !this.shadow) return;
    const other = side === "before" ? patch.after : patch.before;
    this.count += painted(patch[side]) - painted(other);
    paste(bitmap, this.dims, patch.box, patch[side]);
    paste(this.shadow, this.dims, patch.box, patch[side]);
    this.onRestore(patch.box);
  }

  /** The user's edits since the drawing was loaded, voxel by voxel (index → value, in order): what a
   * conflict re-applies to someone else's newer version. */
  edits(): Map<number, number> {
    const out = new Map<number, number>();
    const [nx, ny] = this.dims;
    for (const p of this.patches.slice(0, this.at)) {
      const w = p.box.hi[0] - p.box.lo[0];
      const h = p.box.hi[1] - p.box.lo[1];
      for (let i = 0; i < p.after.length; i++) {
        if (p.after[i] === p.before[i]) continue;
        const x = p.box.lo[0] + (i % w);
        const y = p.box.lo[1] + (Math.floor(i / w) % h);
        const z = p.box.lo[2] + Math.floor(i / (w * h));
        out.set(x + y * nx + z * nx * ny, p.after[i]);
      }
    }
    return out;
  }
}
