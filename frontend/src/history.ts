// Undo and redo of the drawing. NiiVue keeps a ring of run-length-encoded bitmaps (one per stroke) and
// has undo but no redo; this keeps a linear history of the same encoded states: a stroke (or a fill, or
// a loaded mask) appends one and drops the redo branch, undo and redo move along it.
import type { Niivue } from "@niivue/niivue";

/** PackBits, as NiiVue encodes its undo bitmaps (so its ring's entries can be reused as they are). */
export function encodeRLE(data: Uint8Array): Uint8Array {
  const dl = data.length;
  let dp = 0;
  const r = new Uint8Array(dl + Math.ceil(0.01 * dl) + 2);
  const rI = new Int8Array(r.buffer);
  let rp = 0;
  while (dp < dl) {
    let v = data[dp];
    dp++;
    let rl = 1;
    while (rl < 129 && dp < dl && data[dp] === v) {
      dp++;
      rl++;
    }
    if (rl > 1) {
      rI[rp++] = -rl + 1;
      r[rp++] = v;
      continue;
    }
    while (dp < dl) {
      if (rl > 127) break;
      if (dp + 2 < dl && v !== data[dp] && data[dp + 2] === data[dp] && data[dp + 1] === data[dp]) break;
      v = data[dp];
      dp++;
      rl++;
    }
    r[rp++] = rl - 1;
    for (let i = 0; i < rl; i++) r[rp++] = data[dp - rl + i];
  }
  return r.slice(0, rp);
}

export function decodeRLE(rle: Uint8Array, length: number): Uint8Array {
  const r = new Uint8Array(rle.buffer, rle.byteOffset, rle.byteLength);
  const rI = new Int8Array(rle.buffer, rle.byteOffset, rle.byteLength);
  const d = new Uint8Array(length);
  let rp = 0;
  let dp = 0;
  while (rp < r.length && dp < length) {
    const hdr = rI[rp++];
    if (hdr < 0) {
      const v = r[rp++];
      d.fill(v, dp, Math.min(length, dp + 1 - hdr));
      dp += 1 - hdr;
    } else {
      for (let i = 0; i < hdr + 1; i++) d[dp++] = r[rp++];
    }
  }
  return d;
}

export class DrawHistory {
  private states: Uint8Array[] = [];
  private at = -1;

  constructor(private readonly limit = 48) {}

  /** The newest encoded state: NiiVue's ring entry written by its last drawAddUndoBitmap, when it holds
   * the bitmap as it is now, else encoded here. */
  private snapshot(nv: Niivue): Uint8Array | null {
    const bitmap = nv.drawBitmap;
    if (!bitmap) return null;
    const ring = nv.drawUndoBitmaps?.[(nv as unknown as { currentDrawUndoBitmap: number }).currentDrawUndoBitmap];
    if (ring && ring.length > 1) return ring;
    return encodeRLE(bitmap);
  }

  /** Start over from the drawing as it is (a case or a mask was loaded). */
  reset(nv: Niivue): void {
    const state = nv.drawBitmap ? encodeRLE(nv.drawBitmap) : null;
    this.states = state ? [state] : [];
    this.at = this.states.length - 1;
  }

  /** A stroke ended: NiiVue has just added its state to its ring. */
  recordFromRing(nv: Niivue): void {
    const state = this.snapshot(nv);
    if (state) this.push(state);
  }

  /** The drawing was changed here (not by a NiiVue stroke). */
  record(nv: Niivue): void {
    if (nv.drawBitmap) this.push(encodeRLE(nv.drawBitmap));
  }

  private push(state: Uint8Array): void {
    this.states = this.states.slice(0, this.at + 1);
    this.states.push(state);
    if (this.states.length > this.limit) this.states.shift();
    this.at = this.states.length - 1;
  }

  get canUndo(): boolean {
    return this.at > 0;
  }

  get canRedo(): boolean {
    return this.at >= 0 && this.at < this.states.length - 1;
  }

  undo(nv: Niivue): boolean {
    if (!this.canUndo) return false;
    this.at--;
    this.restore(nv);
    return true;
  }

  redo(nv: Niivue): boolean {
    if (!this.canRedo) return false;
    this.at++;
    this.restore(nv);
    return true;
  }

  private restore(nv: Niivue): void {
    if (!nv.drawBitmap) return;
    nv.drawBitmap = decodeRLE(this.states[this.at], nv.drawBitmap.length);
    nv.refreshDrawing(true);
  }
}
