// Room to work: the layout of the viewer (1×1 one plane, 1×3 the three planes in a row, 2×2 the planes
// and the 3D render), a plane maximised by a double click on it (again: back), zoom (ctrl or ⌘ + wheel,
// a trackpad's pinch, which the browser sends as ctrl + wheel; a touch pinch is NiiVue's), pan (middle
// drag or ctrl + drag), window / level by a right drag (continuous), 0 resets zoom and pan. The status
// line under the image: the window (its preset's name, or its level / width once dragged), the slice and
// the value (HU for CT) under the cursor, the zoom.
import { MULTIPLANAR_TYPE, SHOW_RENDER, SLICE_TYPE } from "@niivue/niivue";
import { affineOf, canvasPoint, mmToVox } from "./geometry";
import { canvas, el, root } from "./page";
import { nv, state } from "./state";

export type Layout = "1x1" | "1x3" | "2x2";
export const WINDOWS: Record<string, [number, number]> = {
  lung: [-1350, 150],
  mediastinum: [-160, 240],
  bone: [-700, 1300],
};
type Plane = "axial" | "coronal" | "sagittal";
const PLANES: Plane[] = ["axial", "coronal", "sagittal"];

export const view: { layout: Layout; plane: Plane; before: Layout | null } = { layout: "1x3", plane: "axial", before: null };
const LAYOUT_KEY = "groundlab.review.layout";

/** The layout the user chose last (this browser), else 1×3. */
export function savedLayout(): [Layout, Plane] {
  const [layout, plane] = (localStorage.getItem(LAYOUT_KEY) ?? "").split(":");
  const okLayout = ["1x1", "1x3", "2x2"].includes(layout) ? (layout as Layout) : "1x3";
  const okPlane = PLANES.includes(plane as Plane) ? (plane as Plane) : "axial";
  return [okLayout, okPlane];
}

/** Show the layout (CT; a radiograph always has its one 2D view). */
export function setLayout(layout: Layout, plane: Plane = view.plane): void {
  view.layout = layout;
  view.plane = plane;
  if (!view.before) localStorage.setItem(LAYOUT_KEY, `${layout}:${plane}`); // the next case opens the same way
  root.dataset.layout = layout;
  root.dataset.plane = plane;
  for (const b of document.querySelectorAll<HTMLButtonElement>("button[data-layout]")) {
    b.classList.toggle("on", b.dataset.layout === layout && (layout !== "1x1" || b.dataset.plane === undefined || b.dataset.plane === plane));
  }
  if (state.is2D || !nv.volumes.length) return;
  if (layout === "1x1") {
    nv.setSliceType([SLICE_TYPE.AXIAL, SLICE_TYPE.CORONAL, SLICE_TYPE.SAGITTAL][PLANES.indexOf(plane)]);
    return;
  }
  nv.opts.multiplanarShowRender = layout === "2x2" ? SHOW_RENDER.ALWAYS : SHOW_RENDER.NEVER;
  nv.opts.multiplanarLayout = layout === "2x2" ? MULTIPLANAR_TYPE.GRID : MULTIPLANAR_TYPE.ROW;
  nv.setSliceType(SLICE_TYPE.MULTIPLANAR);
}

/** The plane under a page point maximised (1×1); from 1×1 back to the layout before. */
let pointer: [number, number] | null = null;

export function cycleLayout(): void {
  view.before = null;
  setLayout(view.layout === "1x3" ? "2x2" : view.layout === "2x2" ? "1x1" : "1x3");
}

export function toggleMaximise(clientX = pointer?.[0], clientY = pointer?.[1]): void {
  if (state.is2D || !nv.volumes.length) return;
  if (view.layout === "1x1" && view.before) {
    setLayout(view.before);
    view.before = null;
    return;
  }
  let plane: Plane = view.plane;
  if (clientX !== undefined && clientY !== undefined) {
    const [x, y] = canvasPoint(canvas, clientX, clientY);
    const tile = nv.screenSlices[nv.tileIndex(x, y)];
    if (tile && tile.axCorSag <= 2) plane = PLANES[tile.axCorSag];
  }
  view.before = view.layout === "1x1" ? "1x3" : view.layout;
  setLayout("1x1", plane);
}

export function zoomBy(factor: number): void {
  if (!nv.volumes.length) return;
  const pan = nv.scene.pan2Dxyzmm;
  const zoom = Math.max(0.5, Math.min(16, pan[3] * factor));
  // keep the crosshair where it is on the screen (NiiVue's own wheel zoom: pan += (old − new) · crosshair)
  const mm = nv.frac2mm(nv.scene.crosshairPos);
  for (let a = 0; a < 3; a++) pan[a] += (pan[3] - zoom) * mm[a];
  pan[3] = zoom;
  nv.drawScene();
  showStatus();
}

export function resetView(): void {
  if (!nv.volumes.length) return;
  nv.scene.pan2Dxyzmm = [0, 0, 0, 1] as unknown as typeof nv.scene.pan2Dxyzmm;
  nv.drawScene();
  showStatus();
}

/** The window on screen: a preset's name when it is one, else its level and width. */
function windowText(): string {
  const volume = nv.volumes[0];
  if (!volume) return "";
  const [lo, hi] = [volume.cal_min ?? 0, volume.cal_max ?? 0];
  const preset = Object.entries(WINDOWS).find(([, w]) => Math.abs(w[0] - lo) < 0.5 && Math.abs(w[1] - hi) < 0.5);
  root.dataset.window = preset ? preset[0] : "custom";
  for (const b of document.querySelectorAll<HTMLButtonElement>("button[data-window]")) b.classList.toggle("on", b.dataset.window === preset?.[0]);
  const lw = `L ${Math.round((lo + hi) / 2)} W ${Math.round(hi - lo)}`;
  if (state.is2D || state.current?.scan?.modality !== "CT") return `Window ${lw}`;
  return preset ? `${preset[0][0].toUpperCase()}${preset[0].slice(1)} window (${lw})` : `Window ${lw} (dragged)`;
}

let cursor: string = "";

export function showStatus(): void {
  if (!nv.volumes.length) {
    for (const id of ["view-window", "view-cursor", "view-zoom"]) el(id).textContent = "";
    return;
  }
  const zoom = nv.scene.pan2Dxyzmm[3];
  el("view-window").textContent = windowText();
  el("view-cursor").textContent = cursor;
  el("view-zoom").textContent = `zoom ${zoom.toFixed(1)}×`;
}

/** The slice and the value under the mouse: "axial 151/300 · (x, y, z) · −850 HU". */
function underCursor(clientX: number, clientY: number): void {
  const volume = nv.volumes[0];
  const dims = nv.back?.dims;
  if (!volume || !dims) return;
  const [x, y] = canvasPoint(canvas, clientX, clientY);
  const index = nv.tileIndex(x, y);
  const tile = nv.screenSlices[index];
  const frac = nv.canvasPos2frac([x, y]);
  if (index < 0 || !tile || tile.axCorSag > 2 || frac[0] < 0) {
    cursor = "";
  } else {
    const v = nv.frac2vox(frac);
    const axis = [2, 1, 0][tile.axCorSag];
    const size = dims[axis + 1];
    const value = volume.getValue(v[0], v[1], v[2]);
    const unit = state.current?.scan?.modality === "CT" ? " HU" : "";
    const slice = state.is2D ? "" : `${PLANES[tile.axCorSag]} ${v[axis] + 1}/${size} · `;
    // the voxel as the API counts them (the scan's native indices: what boxes and masks use)
    const mm = nv.frac2mm(frac);
    const native = mmToVox(affineOf(volume), [mm[0], mm[1], mm[2]]).map(Math.round).slice(0, state.is2D ? 2 : 3);
    cursor = `${slice}voxel (${native.join(", ")}) · ${Math.round(value)}${unit}`;
    root.dataset.cursorVoxel = native.join(",");
    root.dataset.cursorValue = String(Math.round(value));
    root.dataset.cursorSlice = state.is2D ? "" : `${PLANES[tile.axCorSag]} ${v[axis] + 1}/${size}`;
  }
  el("view-cursor").textContent = cursor;
}

export function listenForView(): void {
  const box = el("viewer-box");
  box.addEventListener(
    "wheel",
    (event) => {
      if (!(event.ctrlKey || event.metaKey) || !nv.volumes.length) return; // a plain wheel: NiiVue's slices
      event.preventDefault();
      event.stopPropagation();
      zoomBy(Math.exp(-event.deltaY / 300));
    },
    { capture: true, passive: false },
  );
  box.addEventListener("pointermove", (event) => {
    pointer = [event.clientX, event.clientY];
    underCursor(event.clientX, event.clientY);
  });
  box.addEventListener("pointerleave", () => {
    pointer = null;
    cursor = "";
    el("view-cursor").textContent = "";
  });
  canvas.addEventListener("dblclick", (event) => {
    if (state.mode === "view") toggleMaximise(event.clientX, event.clientY);
  });
  for (const b of document.querySelectorAll<HTMLButtonElement>("button[data-layout]")) {
    b.addEventListener("click", () => {
      view.before = null;
      setLayout(b.dataset.layout as Layout, (b.dataset.plane as Plane | undefined) ?? view.plane);
    });
  }
}
