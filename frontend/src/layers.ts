// Anatomy context layers (annotation/proposals.py): the anatomy proposals of the case's scan (the lungs
// generator's, an anatomy model's), listed with a checkbox each; those of the finding's place (the
// case's layers with context: its lobe, its side's lung, both lungs) are marked, and start hidden: a layer
// over the finding's place covers the finding itself (the demo's right lung hid its mass). The key l
// shows them (and hides them again); the choice holds for the next cases until l is pressed again. On a
// CT a layer is a NiiVue overlay volume under the finding's drawing (a translucent fill with its outline);
// on a radiograph a tinted image drawn on the overlay canvas (drawLayers2D, called by overlay.ts). The key
// l switches them all off and on again. The start note says which proposal version 1 came from and the
// rule that chose it. #review's data-layers lists the shown layers' proposal ids ("" while none), and
// data-layers-state is "loading" until they are on screen.
import { NVImage } from "@niivue/niivue";
import { api } from "./api";
import { regionOnTile, type Tile } from "./geometry";
import { drawOverlay } from "./overlay";
import { el, root, say } from "./page";
import { nv, state } from "./state";
import type { Case, Layer } from "./types";

/** NiiVue colormaps (a binary mask shows the top colour) and the same colour for a radiograph's layer. */
const COLOURS: { colormap: string; rgb: [number, number, number] }[] = [
  { colormap: "green", rgb: [0, 255, 0] },
  { colormap: "blue", rgb: [0, 0, 255] },
  { colormap: "violet", rgb: [255, 0, 255] },
  { colormap: "gold", rgb: [255, 204, 0] },
  { colormap: "copper", rgb: [255, 199, 127] },
];
const OPACITY = 0.3;

type Loaded = { volume?: NVImage; image?: HTMLCanvasElement };
/** Loaded layers by proposal id (kept when hidden: showing one again is at once). */
const loaded = new Map<number, Loaded>();
/** The proposal ids shown for the open case. */
const shown = new Set<number>();
let lastShown: number[] = [];
/** Whether the finding's place is shown when a case opens: off until the key l turns it on. */
let placeShown = false;

const colourOf = (c: Case, id: number) => COLOURS[Math.max(0, (c.layers ?? []).findIndex((l) => l.id === id)) % COLOURS.length];

function startNote(c: Case): string {
  const start = c.start;
  if (!start) return c.finding.current_version ? "" : "No proposal fits this finding: draw it.";
  const proposal = (c.proposals ?? []).find((p) => p.id === start.proposal);
  const name = proposal ? `${proposal.label || proposal.code} (${proposal.source})` : `#${start.proposal}`;
  const why: Record<string, string> = {
    linked: "made for this finding",
    seed: "grown from the SUV seed of the sentence",
    text: "grounded from this sentence",
    code: "its label names this finding",
    organ: "the organ this finding is about",
    overlap: "a lesion inside this finding's anatomy",
  };
  const parts = start.components ? `; its ${start.components[0]} of ${start.components[1]} parts on this finding's side` : "";
  return `Version 1 started from proposal #${start.proposal} ${name}: ${why[start.rule] ?? start.rule}${parts}.`;
}

/** The layer list and the start note of a case just opened; the layers of its place are to be shown. */
export function renderLayers(c: Case): void {
  const list = el("layers");
  list.replaceChildren();
  shown.clear();
  lastShown = (c.layers ?? []).filter((l) => l.context).map((l) => l.id);
  for (const layer of c.layers ?? []) {
    if (layer.context && placeShown) shown.add(layer.id);
    const item = document.createElement("li");
    item.dataset.layer = String(layer.id);
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = shown.has(layer.id);
    box.addEventListener("change", () => {
      if (box.checked) shown.add(layer.id);
      else shown.delete(layer.id);
      void syncLayers(c);
    });
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    const [r, g, b] = colourOf(c, layer.id).rgb;
    swatch.style.background = `rgb(${r}, ${g}, ${b})`;
    const label = document.createElement("label");
    label.append(box, swatch, `${layer.label}`);
    const meta = document.createElement("span");
    meta.className = "f-meta";
    meta.textContent = ` ${layer.source}${layer.context ? " · this finding's place (key l)" : ""}`;
    label.append(meta);
    item.append(label);
    list.append(item);
  }
  el("layers-box").hidden = !(c.layers ?? []).length;
  el("start-note").textContent = startNote(c);
}

async function loadLayer(c: Case, layer: Layer): Promise<Loaded> {
  const found = loaded.get(layer.id);
  if (found && (state.is2D ? found.image : found.volume)) return found;
  const out: Loaded = {};
  if (state.is2D) {
    const png = await (await api(`/api/region-proposals/${layer.id}/mask/`)).blob();
    const bitmap = await createImageBitmap(png);
    const image = document.createElement("canvas");
    [image.width, image.height] = [bitmap.width, bitmap.height];
    const context = image.getContext("2d");
    if (!context) throw new Error("No 2D canvas for a layer.");
    context.drawImage(bitmap, 0, 0);
    const pixels = context.getImageData(0, 0, image.width, image.height);
    const [r, g, b] = colourOf(c, layer.id).rgb;
    for (let i = 0; i < pixels.data.length; i += 4) {
      const inside = pixels.data[i] > 0;
      pixels.data.set(inside ? [r, g, b, Math.round(255 * OPACITY)] : [0, 0, 0, 0], i);
    }
    context.putImageData(pixels, 0, 0);
    out.image = image;
  } else {
    // encoding=http: the browser inflates the NIfTI (as the versions' masks, images.ts).
    const bytes = await (await api(`/api/region-proposals/${layer.id}/mask/?encoding=http`)).arrayBuffer();
    const view = new DataView(bytes);
    const gz = view.byteLength > 2 && view.getUint8(0) === 0x1f && view.getUint8(1) === 0x8b;
    const name = `layer-${layer.id}.nii${gz ? ".gz" : ""}`;
    out.volume = await NVImage.loadFromUrl({
      url: name,
      name,
      buffer: bytes,
      colormap: colourOf(c, layer.id).colormap,
      opacity: OPACITY,
      cal_min: 0.5,
      cal_max: 1,
    });
  }
  loaded.set(layer.id, out);
  return out;
}

/** Show the checked layers of the open case and hide the others (loading what is not loaded yet). */
export async function syncLayers(c: Case): Promise<void> {
  root.dataset.layersState = "loading";
  let changed = false;
  try {
    for (const layer of c.layers ?? []) {
      const want = shown.has(layer.id);
      const have = loaded.get(layer.id);
      if (!state.is2D) {
        const on = have?.volume != null && nv.volumes.includes(have.volume);
        if (want && !on) {
          const { volume } = await loadLayer(c, layer);
          if (state.current !== c || !shown.has(layer.id)) continue; // the case moved on meanwhile
          if (volume && !nv.volumes.includes(volume)) {
            nv.addVolume(volume);
            changed = true;
          }
        } else if (!want && on && have?.volume) {
          nv.removeVolume(have.volume);
          changed = true;
        }
      } else if (want && !have?.image) {
        await loadLayer(c, layer);
      }
    }
    if (state.current !== c) return;
    nv.overlayOutlineWidth = 1; // an outline around each translucent layer
    // Only after a change: on a 512×512×255 CT in software WebGL the volume's textures are redone in ~10 s
    // (bench/bench_viewer.py: the case's first frame waited for it though no layer changed).
    if (!state.is2D && changed) nv.updateGLVolume();
    lastShown = [...shown];
    root.dataset.layers = [...shown].sort((a, b) => a - b).join(",");
    drawOverlay();
  } catch (err) {
    say(`Anatomy layers: ${err instanceof Error ? err.message : String(err)}`, "error");
  } finally {
    if (state.current === c) root.dataset.layersState = "ready";
  }
}

/** Key l: every layer off, or the ones shown last (at first the finding's place's) on; whether the next
 * cases open with their place shown follows. */
export function toggleLayers(): void {
  const c = state.current;
  if (!c || !(c.layers ?? []).length) throw new Error("This scan has no anatomy proposal to show.");
  const ids = shown.size ? [] : lastShown.length ? lastShown : (c.layers ?? []).filter((l) => l.context).map((l) => l.id);
  const keep = shown.size ? [...shown] : [];
  shown.clear();
  for (const id of ids) shown.add(id);
  if (keep.length) lastShown = keep;
  placeShown = shown.size > 0;
  for (const box of el("layers").querySelectorAll<HTMLInputElement>("input[type=checkbox]")) {
    const id = Number(box.closest("li")?.dataset.layer);
    box.checked = shown.has(id);
  }
  say(shown.size ? `Anatomy layers shown (${shown.size}): l hides them.` : "Anatomy layers hidden: l shows them again.");
  void syncLayers(c);
}

/** A radiograph's shown layers over its image on the overlay canvas (overlay.ts draws them first). */
export function drawLayers2D(context: CanvasRenderingContext2D, tile: Tile, affine: number[][]): void {
  const c = state.current;
  if (!c?.scan || !state.is2D) return;
  const [nx, ny] = c.scan.shape;
  const { rect, flipX, flipY } = regionOnTile(tile, affine, [-0.5, -0.5], [nx - 0.5, ny - 0.5], 0, [0, 1]);
  for (const id of shown) {
    const image = loaded.get(id)?.image;
    if (!image) continue;
    context.save();
    context.translate(flipX ? rect[2] : rect[0], flipY ? rect[3] : rect[1]);
    context.scale(flipX ? -1 : 1, flipY ? -1 : 1);
    context.drawImage(image, 0, 0, rect[2] - rect[0], rect[3] - rect[1]);
    context.restore();
  }
}
