// The images of the case in NiiVue: the server's preview first, then the scan (a CT in three planes, a
// radiograph in one 2D view), the finding's colour, a version in the drawing (a mask) or on the overlay
// (a box) with the crosshair moved to it, a radiologist's proposal / result toggle and a CT's windows.
import { NVImage, SLICE_TYPE, cmapper } from "@niivue/niivue";
import { api } from "./api";
import { annotatorVersion, findingColour, proposalVersion, resultName } from "./cases";
import { affineOf } from "./geometry";
import { fillRuns, pngToBitmap, readRuns, runsCentroid, storedFlipsOfRAS, type MaskRuns } from "./masks";
import { drawOverlay } from "./overlay";
import { opacity, preview, role, root, say } from "./page";
import { renderShowing } from "./report";
import { drawBatch, history, needCase, nv, setMode, state } from "./state";
import { touched } from "./strokes";
import type { Annotation, Case } from "./types";
import { setLayout, showStatus, view, WINDOWS } from "./view";

const TEXTURE7_DRAW = 33991; // NiiVue's texture unit of the drawing (TEXTURE_CONSTANTS.TEXTURE7_DRAW)

/** A finding's grounding as the screen shows it: its newest mask in the drawing and its newest box on the
 * overlay (up to version `upTo`). A box and a mask are separate annotations: saving one never hides the
 * other. */
export function groundingOf(c: Case, upTo = c.finding.current_version): { mask?: Annotation; box?: Annotation } {
  const upto = c.versions.filter((v) => v.version <= upTo);
  const newest = (kind: string): Annotation | undefined => upto.filter((v) => v.kind === kind).at(-1);
  return { mask: newest("mask"), box: newest("box") };
}

/** A mask version as it arrived: a 3D mask as runs (`?encoding=runs`), a 2D one as its PNG. */
type Fetched = { version: Annotation; runs?: MaskRuns; png?: Blob } | null;

/** A step of opening a case, from `start` (performance.now()) to now, as the performance measure
 * "case:<name>" (bench/bench_viewer.py prints where the time goes; a measure costs microseconds). */
export function measured(name: string, start: number): void {
  performance.measure(`case:${name}`, { start, end: performance.now() });
}

/** Ask for a mask version (started before the scan is loaded: both travel at once). A 3D mask comes as
 * gzipped runs with its voxel count and centroid (`?encoding=runs`: ~0.1 MB for a lung, where the NIfTI was
 * 67 MB for NiiVue to parse, reorient and count); a radiograph's as its PNG. */
function fetchMask(version: Annotation | undefined): Promise<Fetched> {
  if (version?.kind !== "mask") return Promise.resolve(null);
  const t = performance.now();
  const url = `/api/annotations/${version.id}/mask/`;
  return api(state.is2D ? url : `${url}?encoding=runs`).then(async (r) => {
    const got = state.is2D ? { version, png: await r.blob() } : { version, runs: await readRuns(r) };
    measured("mask-fetch", t);
    return got;
  });
}

/** The mask as NIfTI (the drawing loaded by NiiVue, which reorients it): for a scan whose stored axes
 * NiiVue permutes (an oblique or sagittal acquisition; flips alone are filled from runs). encoding=http:
 * the browser inflates it natively (NiiVue inflating 78 M voxels in JavaScript took ~20 s). */
async function loadMaskNifti(version: Annotation): Promise<boolean> {
  const bytes = await (await api(`/api/annotations/${version.id}/mask/?encoding=http`)).arrayBuffer();
  const view = new DataView(bytes);
  const gz = view.byteLength > 2 && view.getUint8(0) === 0x1f && view.getUint8(1) === 0x8b;
  const nifti = view.byteLength > 348 && view.getInt32(0, true) === 348;
  if (!gz && !nifti) throw new Error("a 2D image: not shown on the volume.");
  const name = gz ? "mask.nii.gz" : "mask.nii";
  const drawing = await NVImage.loadFromUrl({ url: name, name, buffer: bytes });
  if (!nv.loadDrawing(drawing)) throw new Error("does not fit the scan's grid.");
  return true;
}

/** A mask sent as runs into the drawing: the bitmap filled here (in NiiVue's RAS order: `flips` of the
 * stored axes) and only the mask's box sent to the GPU (a new WebGL texture starts as zeros; NiiVue's
 * createEmptyDrawing and loadDrawing sent a 67 MB bitmap of zeros, then the whole bitmap again). */
function loadMaskRuns(runs: MaskRuns, flips: boolean[]): void {
  const dims = nv.back?.dims;
  if (!dims) throw new Error("no scan is loaded.");
  const grid = [dims[1], dims[2], dims[3]];
  if (runs.shape.length !== 3 || runs.shape.some((n, a) => n !== grid[a])) {
    throw new Error(`does not fit the scan's grid (mask ${runs.shape.join(" × ")}, scan ${grid.join(" × ")}).`);
  }
  if (nv.opts.is2DSliceShader) {
    nv.createEmptyDrawing(); // NiiVue's 2D texture of a huge volume: its own allocation
    if (nv.drawBitmap) fillRuns(nv.drawBitmap, runs.pairs, grid, flips);
    nv.refreshDrawing(false);
    return;
  }
  const bitmap = new Uint8Array(grid[0] * grid[1] * grid[2]);
  const box = fillRuns(bitmap, runs.pairs, grid, flips);
  const inner = nv as unknown as { drawTexture: WebGLTexture | null; r8Tex: (t: WebGLTexture | null, unit: number, d: number[], init: boolean) => WebGLTexture };
  nv.drawClearAllUndoBitmaps();
  nv.drawBitmap = bitmap;
  inner.drawTexture = inner.r8Tex(inner.drawTexture, TEXTURE7_DRAW, dims, false); // storage: zeros
  if (box) {
    touched(box); // strokes.ts: the next refresh uploads this box only
    nv.refreshDrawing(false);
  }
}

function setColour(c: Case): void {
  const [r, g, b] = findingColour(c, c.finding.id);
  nv.drawLut = cmapper.makeDrawLut({ R: [0, r], G: [0, g], B: [0, b], A: [0, 255], I: [0, 1] });
  if (nv.volumes.length) {
    nv.refreshColormaps();
    nv.drawScene();
  }
}

export function showPreview(c: Case): void {
  if (!c.scan) return;
  const window = c.scan.modality === "CT" && (c.scan.ndim ?? c.scan.shape.length) === 3 ? "&window=lung" : "";
  preview.onload = () => {
    if (state.current !== c) return;
    // The first slice on screen: the server's PNG, decoded; the volume follows (bench_case_open.py).
    performance.mark("case-preview");
    if (root.dataset.state === "loading") root.dataset.state = "preview";
  };
  preview.src = `/api/scans/${c.scan.id}/png/?axis=axial${window}`;
  preview.hidden = false;
}

async function loadScan(c: Case): Promise<void> {
  if (!c.scan) return;
  nv.closeDrawing();
  while (nv.volumes.length) nv.removeVolume(nv.volumes[0]);
  state.loadedScan = null;
  // encoding=http: a .nii.gz store arrives inflated by the browser (NiiVue would inflate it in JavaScript)
  let t = performance.now();
  const scanBytes = await (await api(`/api/scans/${c.scan.id}/nifti/?encoding=http`)).arrayBuffer();
  measured("scan-fetch", t);
  const gz = new Uint8Array(scanBytes.slice(0, 2));
  const name = gz[0] === 0x1f && gz[1] === 0x8b ? `scan-${c.scan.id}.nii.gz` : `scan-${c.scan.id}.nii`;
  const ct = c.scan.modality === "CT" && !state.is2D;
  const [min, max] = ct ? WINDOWS.lung : [NaN, NaN];
  t = performance.now();
  const volume = await NVImage.loadFromUrl({ url: name, name, buffer: scanBytes, cal_min: min, cal_max: max });
  measured("scan-parse", t);
  t = performance.now();
  nv.setCrosshairWidth(state.is2D ? 0 : 1);
  nv.setIsOrientationTextVisible(!state.is2D); // a radiograph's rows are not anterior-posterior
  nv.addVolume(volume);
  measured("add-volume", t);
  t = performance.now();
  if (state.is2D) nv.setSliceType(SLICE_TYPE.AXIAL);
  else setLayout(view.layout);
  measured("layout", t);
  state.loadedScan = c.scan.id;
  root.dataset.window = ct ? "lung" : "image";
  showStatus();
}

/** Load a mask version into the drawing and a box version onto the overlay (either may be missing: an
 * empty drawing, no box). `fetched`: the mask's file when it was asked for already. */
export async function showVersion(version: Annotation | undefined, box?: Annotation, fetched?: Promise<Fetched>): Promise<void> {
  state.shownBox = null;
  state.pendingBox = null;
  let loaded = false;
  let known: [number, [number, number, number] | null] | null = null; // voxels and centroid sent as runs
  const maskVersion = version?.kind === "mask" ? version : undefined;
  const boxVersion = version?.kind === "box" ? version : box;
  root.dataset.maskPath = ""; // how a 3D mask arrived: "runs" (compact) or "nifti" (axes permuted)
  if (maskVersion) {
    const t = performance.now();
    const name = `Mask v${maskVersion.version}`;
    let flips: boolean[] | null = null; // how NiiVue's RAS order flips the stored axes (null: it permutes them)
    try {
      const got = await (fetched ?? fetchMask(maskVersion));
      measured("mask-wait", t); // what the mask's fetch took beyond the scan's (they travel at once)
      const t1 = performance.now();
      if (state.is2D) {
        const bitmap = await pngToBitmap(nv, got?.png as Blob);
        nv.createEmptyDrawing();
        nv.drawBitmap = bitmap;
        loaded = true;
      } else if (got?.runs && (flips = storedFlipsOfRAS(nv.volumes[0]))) {
        loadMaskRuns(got.runs, flips);
        loaded = true;
        known = [got.runs.voxels, runsCentroid(got.runs, flips)];
        root.dataset.maskPath = "runs";
        measured("mask-runs-to-drawing", t1);
      } else {
        loaded = await loadMaskNifti(maskVersion); // NiiVue permutes the scan's axes
        root.dataset.maskPath = "nifti";
        measured("mask-nifti-to-drawing", t1);
      }
    } catch (err) {
      say(`${name}: ${err instanceof Error ? err.message : String(err)}`, "error");
    }
  }
  if (boxVersion?.kind === "box" && boxVersion.box) {
    state.shownBox = { box: boxVersion.box, label: `v${boxVersion.version} box` };
  }
  let t = performance.now();
  if (!loaded) nv.createEmptyDrawing();
  nv.setDrawOpacity(Number(opacity.value) / 100);
  history.reset(nv, known?.[0]);
  measured("drawing-reset", t);
  state.dirty = null;
  state.leaveAnyway = false;
  setMode(state.mode);
  t = performance.now();
  const [n, centre] = known ?? drawnVoxels();
  measured("centroid", t);
  root.dataset.maskVoxels = String(n);
  root.dataset.shownMask = maskVersion ? String(maskVersion.version) : "";
  root.dataset.shownBox = state.shownBox && boxVersion ? String(boxVersion.version) : "";
  if (centre && !state.is2D) {
    // Show the mask: the crosshair to the painted voxel nearest its centroid's slices.
    nv.scene.crosshairPos = nv.vox2frac(centre);
    nv.drawScene(); // moving the crosshair needs a redraw, not a new volume upload (~8 s on 512x512x300)
  } else if (state.shownBox && !state.is2D) {
    crosshairToBox(state.shownBox.box);
  }
  // loadDrawing and createEmptyDrawing sent the drawing to the GPU already; a radiograph's bitmap was set here
  if (state.is2D && loaded) nv.refreshDrawing(true);
  else nv.drawScene();
  drawOverlay();
}

function crosshairToBox(box: number[]): void {
  const n = box.length / 2;
  const centre = Array.from({ length: n }, (_, a) => (box[a] + box[a + n] - 1) / 2);
  const affine = affineOf(nv.volumes[0]);
  const mm = [0, 1, 2].map((r) => affine[r][0] * centre[0] + affine[r][1] * centre[1] + affine[r][2] * (centre[2] ?? 0) + affine[r][3]);
  nv.scene.crosshairPos = nv.mm2frac(mm as [number, number, number]);
  nv.drawScene();
}

export async function loadImages(c: Case): Promise<void> {
  if (!c.scan) {
    nv.closeDrawing();
    while (nv.volumes.length) nv.removeVolume(nv.volumes[0]);
    state.loadedScan = null;
    say("This finding has no scan to show.", "error");
    return;
  }
  state.is2D = (c.scan.ndim ?? c.scan.shape.length) === 2;
  root.classList.toggle("scan-2d", state.is2D);
  root.classList.toggle("scan-3d", !state.is2D);
  root.classList.toggle("scan-ct", c.scan.modality === "CT" && !state.is2D);
  drawBatch.on = true; // one draw at the end (review.ts)
  try {
    await loadCase(c, c.scan);
  } finally {
    drawBatch.on = false;
    const t = performance.now();
    nv.drawScene();
    measured("draw", t);
  }
}

async function loadCase(c: Case, scan: NonNullable<Case["scan"]>): Promise<void> {
  setColour(c);
  const proposal = role === "radiologist" && state.showing === "proposal";
  const { mask, box } = groundingOf(c);
  const version = proposal ? proposalVersion(c) : (mask ?? box);
  const fetched = fetchMask(version); // the mask travels while the scan loads
  fetched.catch(() => undefined); // (its failure is shown by showVersion)
  if (state.loadedScan !== scan.id || !nv.volumes.length) await loadScan(c);
  await showVersion(version, proposal ? undefined : box, fetched);
}

/** Painted voxels of the drawing (label > 0) and their centroid, rounded, in the drawing's voxel grid
 * (NiiVue keeps drawBitmap in RAS voxel order: index = x + y·X + z·X·Y over back.dims). */
function drawnVoxels(): [number, [number, number, number] | null] {
  const bitmap = nv.drawBitmap;
  const dims = nv.back?.dims;
  if (!bitmap || !dims) return [0, null];
  const [nx, ny] = [dims[1], dims[2]];
  let n = 0;
  const sum = [0, 0, 0];
  for (let i = 0; i < bitmap.length; i++) {
    if (bitmap[i] === 0) continue;
    n++;
    sum[0] += i % nx;
    sum[1] += Math.floor(i / nx) % ny;
    sum[2] += Math.floor(i / (nx * ny));
  }
  return [n, n ? [Math.round(sum[0] / n), Math.round(sum[1] / n), Math.round(sum[2] / n)] : null];
}

export async function toggleShowing(): Promise<void> {
  const c = needCase();
  if (role !== "radiologist") throw new Error("The proposal / result toggle is for reviewers.");
  const proposal = proposalVersion(c);
  const annotator = annotatorVersion(c);
  if (!proposal && annotator && c.agreement) {
    say(`This finding had no proposal: there is only ${resultName(c)} to show.`);
    return;
  }
  if (!proposal) {
    say("This finding had no proposal: there is only the annotator's result to show.");
    return;
  }
  if (!annotator || proposal.id === annotator.id) {
    say("The annotator kept the proposal: there is only one version to show.");
    return;
  }
  state.showing = state.showing === "annotator" ? "proposal" : "annotator";
  renderShowing(c);
  await showVersion(state.showing === "proposal" ? proposal : annotator);
  const v = state.showing === "proposal" ? proposal : annotator;
  say(`Showing ${state.showing === "proposal" ? "the proposal" : resultName(c)} (v${v.version}, ${v.voxels ?? 0} voxels): v switches.`, "ok");
}

export function windowPreset(name: string): void {
  const volume = nv.volumes[0];
  if (!volume || !state.current?.scan || state.current.scan.modality !== "CT" || state.is2D) return;
  [volume.cal_min, volume.cal_max] = WINDOWS[name];
  nv.updateGLVolume();
  root.dataset.window = name;
  showStatus();
}
