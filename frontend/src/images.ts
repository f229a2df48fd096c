// The images of the case in NiiVue: the server's preview first, then the scan (a CT in three planes, a
// radiograph in one 2D view), the finding's colour, a version in the drawing (a mask) or on the overlay
// (a box) with the crosshair moved to it, a radiologist's proposal / result toggle and a CT's windows.
import { NVImage, cmapper } from "@niivue/niivue";
import { api } from "./api";
import { annotatorVersion, findingColour, proposalVersion, resultName, versionOf } from "./cases";
import { affineOf } from "./geometry";
import { pngToBitmap } from "./masks";
import { drawOverlay } from "./overlay";
import { opacity, preview, role, root, say } from "./page";
import { renderShowing } from "./report";
import { history, needCase, nv, setMode, state } from "./state";
import type { Annotation, Case } from "./types";

/** Window presets in Hounsfield units: [min, max] = level ∓ width / 2. */
const WINDOWS: Record<string, [number, number]> = {
  lung: [-1350, 150],
  mediastinum: [-160, 240],
  bone: [-700, 1300],
};

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
  const scanBytes = await (await api(`/api/scans/${c.scan.id}/nifti/`)).arrayBuffer();
  const gz = new Uint8Array(scanBytes.slice(0, 2));
  const name = gz[0] === 0x1f && gz[1] === 0x8b ? `scan-${c.scan.id}.nii.gz` : `scan-${c.scan.id}.nii`;
  const ct = c.scan.modality === "CT" && !state.is2D;
  const [min, max] = ct ? WINDOWS.lung : [NaN, NaN];
  const volume = await NVImage.loadFromUrl({ url: name, name, buffer: scanBytes, cal_min: min, cal_max: max });
  nv.setSliceType(state.is2D ? nv.sliceTypeAxial : nv.sliceTypeMultiplanar);
  nv.setCrosshairWidth(state.is2D ? 0 : 1);
  nv.setIsOrientationTextVisible(!state.is2D); // a radiograph's rows are not anterior-posterior
  nv.addVolume(volume);
  state.loadedScan = c.scan.id;
  root.dataset.window = ct ? "lung" : "image";
}

/** Load `version` into the drawing (a mask) or the overlay (a box); an empty drawing otherwise. */
async function showVersion(version: Annotation | undefined): Promise<void> {
  state.shownBox = null;
  state.pendingBox = null;
  let loaded = false;
  if (version?.kind === "mask") {
    if (state.is2D) {
      const png = await (await api(`/api/annotations/${version.id}/mask/`)).blob();
      try {
        const bitmap = await pngToBitmap(nv, png);
        nv.createEmptyDrawing();
        nv.drawBitmap = bitmap;
        nv.drawClearAllUndoBitmaps();
        nv.drawAddUndoBitmap();
        loaded = true;
      } catch (err) {
        say(`Mask v${version.version}: ${err instanceof Error ? err.message : String(err)}`, "error");
      }
    } else {
      // encoding=http: the server sends the NIfTI with Content-Encoding gzip, and the browser inflates it
      // natively (NiiVue inflating 78 M voxels in JavaScript took ~20 s).
      const maskBytes = await (await api(`/api/annotations/${version.id}/mask/?encoding=http`)).arrayBuffer();
      const view = new DataView(maskBytes);
      const gz = view.byteLength > 2 && view.getUint8(0) === 0x1f && view.getUint8(1) === 0x8b;
      const nifti = view.byteLength > 348 && view.getInt32(0, true) === 348;
      if (gz || nifti) {
        const name = gz ? "mask.nii.gz" : "mask.nii";
        const drawing = await NVImage.loadFromUrl({ url: name, name, buffer: maskBytes });
        loaded = nv.loadDrawing(drawing);
        if (!loaded) say(`Mask v${version.version} does not fit the scan's grid.`, "error");
      } else {
        say(`Mask v${version.version} is a 2D image: not shown on the volume.`, "error");
      }
    }
  } else if (version?.kind === "box" && version.box) {
    state.shownBox = { box: version.box, label: `v${version.version} box` };
  }
  if (!loaded) nv.createEmptyDrawing();
  nv.setDrawOpacity(Number(opacity.value) / 100);
  history.reset(nv);
  state.dirty = null;
  state.leaveAnyway = false;
  setMode(state.mode);
  const [n, centre] = drawnVoxels();
  root.dataset.maskVoxels = String(n);
  if (centre && !state.is2D) {
    // Show the mask: the crosshair to the painted voxel nearest its centroid's slices.
    nv.scene.crosshairPos = nv.vox2frac(centre);
    nv.drawScene(); // moving the crosshair needs a redraw, not a new volume upload (~8 s on 512x512x300)
  } else if (state.shownBox && !state.is2D) {
    crosshairToBox(state.shownBox.box);
  }
  nv.refreshDrawing(true);
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
  setColour(c);
  if (state.loadedScan !== c.scan.id || !nv.volumes.length) await loadScan(c);
  const version = role === "radiologist" && state.showing === "proposal" ? proposalVersion(c) : versionOf(c, c.finding.current_version);
  await showVersion(version);
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
}
