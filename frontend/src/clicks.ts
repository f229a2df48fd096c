// The click tool (issue 16 item 7, key c): a click inside the finding asks the server for a proposal, a
// shift+click marks what is not the finding (background). The server answers from the project's interactive
// model, else with a region grown from the clicks in the intensity range of the window on screen (ml/
// interactive.py, a job on the gpu queue). Each answer replaces the previous one of the same run of clicks,
// pasted over the drawing as it was before the first click: it is the annotator's edit (undo, autosave and
// save as for a stroke). Escape (or another tool) ends the run of clicks; picking the tool again starts one.
import { ApiError, api, postJson } from "./api";
import { affineOf, canvasPoint, mmToVox, nativeToRAS } from "./geometry";
import { canvas, el, root, say } from "./page";
import { changed } from "./saving";
import { history, needEditable, nv, setMode, state } from "./state";

type Answer = {
  status: string;
  message: string;
  method: string;
  voxels?: number;
  range?: (number | null)[];
  limited?: boolean;
  split?: boolean;
  warnings?: string[];
  model?: { name: string; version: number };
  seconds?: { total: number };
  mask?: { box: number[]; shape: number[]; encoding: string; data: string };
};

type Run = {
  finding: number;
  base: Uint8Array; // the drawing before the first click
  points: number[][];
  background: number[][];
  sent: number; // how many clicks the request under way carries
  busy: boolean;
};

let run: Run | null = null;
let down: { x: number; y: number; shift: boolean } | null = null;
const POLL_MS = 50;

/** The tool on or off; on, it asks what a click does here (and wakes the server's click worker). */
export function clickTool(): void {
  const c = needEditable();
  if (state.mode === "click") {
    setMode("view");
    return;
  }
  setMode("click");
  run = null;
  void api(`/api/findings/${c.finding.id}/interactive/?warm=1`)
    .then((r) => r.json())
    .then((told: { method: string; model: { name: string; version: number } | null }) => {
      if (state.mode !== "click") return;
      const how = told.model
        ? `model ${told.model.name} v${told.model.version}`
        : "region grow in the window's intensity range (change the window first to change the range)";
      say(`Click inside the finding; shift+click marks what is not it. Proposals by ${how}.`);
    })
    .catch((err: unknown) => say(err instanceof Error ? err.message : String(err), "error"));
}

/** The native voxel (scan array indices) under a page point on any tile; null off the image. */
function voxelAt(clientX: number, clientY: number): number[] | null {
  const volume = nv.volumes[0];
  if (!volume || !state.current?.scan) return null;
  const frac = nv.canvasPos2frac(canvasPoint(canvas, clientX, clientY));
  if (frac[0] < 0) return null;
  const mm = nv.frac2mm(frac);
  const v = mmToVox(affineOf(volume), [mm[0], mm[1], mm[2]]).map(Math.round);
  const shape = state.current.scan.shape;
  const point = v.slice(0, shape.length);
  return point.every((p, i) => p >= 0 && p < shape[i]) ? point : null;
}

/** Clicks on the viewer in click mode: a plain one is the finding (NiiVue moves the crosshair there too),
 * a shift+click is background (kept from NiiVue, which would pan). A drag is not a click. */
export function listenForClicks(): void {
  const box = el("viewer-box");
  box.addEventListener(
    "mousedown",
    (event) => {
      if (state.mode !== "click" || event.button !== 0) return;
      down = { x: event.clientX, y: event.clientY, shift: event.shiftKey };
      if (event.shiftKey) {
        event.stopPropagation();
        event.preventDefault();
      }
    },
    { capture: true },
  );
  box.addEventListener(
    "mouseup",
    (event) => {
      if (state.mode !== "click" || !down || event.button !== 0) return;
      const start = down;
      down = null;
      if (start.shift) event.stopPropagation();
      if (Math.hypot(event.clientX - start.x, event.clientY - start.y) > 4) return;
      const point = voxelAt(start.x, start.y);
      if (!point) {
        say("Click on the image.", "error");
        return;
      }
      void addClick(point, start.shift).catch((err: unknown) => {
        if (run) run.busy = false;
        root.dataset.clicking = "error";
        say(err instanceof ApiError || err instanceof Error ? err.message : String(err), "error");
      });
    },
    { capture: true },
  );
}

async function addClick(point: number[], background: boolean): Promise<void> {
  const c = needEditable();
  if (!run || run.finding !== c.finding.id) {
    const bitmap = nv.drawBitmap;
    if (!bitmap) throw new Error("No drawing is open.");
    run = { finding: c.finding.id, base: bitmap.slice(), points: [], background: [], sent: 0, busy: false };
  }
  (background ? run.background : run.points).push(point);
  root.dataset.clicks = String(run.points.length + run.background.length);
  if (!run.points.length) {
    say("Click inside the finding first (shift+click marks what is not it).");
    return;
  }
  if (run.busy) return; // the answer under way is followed by one for every click so far
  await ask(run, c.finding.id);
}

async function ask(current: Run, findingId: number): Promise<void> {
  current.busy = true;
  root.dataset.clicking = "waiting";
  const t0 = performance.now();
  const volume = nv.volumes[0];
  const shown = [volume.cal_min, volume.cal_max]; // the window on screen: the region grow's range
  const clicks = current.points.length + current.background.length;
  current.sent = clicks;
  const started = (await postJson(`/api/findings/${findingId}/interactive/`, {
    points: current.points,
    background: current.background,
    window: shown.every((v) => Number.isFinite(v)) ? shown : null,
  })) as { job_id: number };
  let answer: Answer;
  for (;;) {
    answer = (await (await api(`/api/findings/${findingId}/interactive/${started.job_id}/`)).json()) as Answer;
    if (answer.status !== "pending" && answer.status !== "running") break;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
  current.busy = false;
  if (run !== current || state.current?.finding.id !== findingId || state.mode !== "click") return; // moved on
  if (current.points.length + current.background.length > clicks) {
    await ask(current, findingId); // clicks came while this one was answered: ask again with all of them
    return;
  }
  if (answer.status !== "succeeded" || !answer.mask) {
    root.dataset.clicking = "error";
    say(`No proposal: ${answer.message || answer.status}`, "error");
    return;
  }
  const painted = await paste(current.base, answer.mask);
  const seconds = (performance.now() - t0) / 1000;
  root.dataset.clicking = "done";
  root.dataset.clickSeconds = seconds.toFixed(2);
  const how = answer.model
    ? `model ${answer.model.name} v${answer.model.version}`
    : `region grow in [${(answer.range ?? []).map((v) => (v === null ? "…" : String(Math.round(v)))).join(", ")}]`;
  const notes = [
    ...(answer.split ? ["cut at your background clicks"] : []),
    ...(answer.warnings ?? []),
  ];
  say(
    `Proposal: ${painted} voxels by ${how} in ${seconds.toFixed(1)} s${notes.length ? `; ${notes.join("; ")}` : ""}. ` +
      "Click to add, shift+click to cut, z to undo, Esc to finish.",
    answer.limited ? "error" : "ok",
  );
}

/** The answer's box (bit-packed, deflated, X fastest) over a copy of `base`, as the drawing; its voxels. */
async function paste(base: Uint8Array, mask: NonNullable<Answer["mask"]>): Promise<number> {
  const packed = Uint8Array.from(atob(mask.data), (ch) => ch.charCodeAt(0));
  const stream = new Blob([packed]).stream().pipeThrough(new DecompressionStream("deflate"));
  const bits = new Uint8Array(await new Response(stream).arrayBuffer());
  const { xlut, ylut, zlut } = nativeToRAS(nv.volumes[0]);
  const n = mask.box.length / 2;
  const [x0, y0, z0] = [mask.box[0], mask.box[1], n === 3 ? mask.box[2] : 0];
  const [nx, ny, nz] = [mask.shape[0], mask.shape[1], n === 3 ? mask.shape[2] : 1];
  const bitmap = base.slice();
  let i = 0;
  for (let z = 0; z < nz; z++) {
    for (let y = 0; y < ny; y++) {
      const row = ylut[y0 + y] + zlut[z0 + z];
      for (let x = 0; x < nx; x++, i++) {
        if ((bits[i >> 3] >> (i & 7)) & 1) bitmap[xlut[x0 + x] + row] = 1;
      }
    }
  }
  let count = 0;
  let same = nv.drawBitmap?.length === bitmap.length;
  const shown = nv.drawBitmap ?? bitmap;
  for (let j = 0; j < bitmap.length; j++) {
    if (bitmap[j] !== 0 && base[j] === 0) count++;
    if (same && shown[j] !== bitmap[j]) same = false;
  }
  if (same) return count; // the answer changed nothing: no new state to undo
  nv.drawBitmap = bitmap;
  nv.refreshDrawing(true);
  history.record(nv);
  changed("mask");
  return count;
}
