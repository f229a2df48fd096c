// The review screen: the next case of the queue, its report with every finding's span, the scan in NiiVue
// (axial / coronal / sagittal) with the finding's current mask as an editable drawing, versioned saves and
// the stage transitions of the review API (README "Review"). The page (annotation/ui.py) gives the project
// slug, the reviewer's role and the CSRF token as data attributes of #review.
import { Niivue, NVImage, SHOW_RENDER, MULTIPLANAR_TYPE } from "@niivue/niivue";

type Annotation = {
  id: number;
  version: number;
  kind: string;
  voxels: number | null;
  author: string | null;
  region_proposal_id: number | null;
  comment: string;
  created_at: string;
};
type Finding = {
  id: number;
  scan_id: number | null;
  section: string;
  start: number;
  end: number;
  text: string;
  code: string;
  status: string;
  current_version: number;
  stage: string | null;
};
type Task = { id: number; stage: string; decision: string; returned_comment: string; assignee: string | null };
type Case = {
  task: Task;
  finding: Finding;
  versions: Annotation[];
  scan: { id: number; shape: number[]; modality: string } | null;
  report: { id: number; sections: Record<string, string> } | null;
  findings: Finding[];
};
type Mode = "view" | "paint" | "erase";

/** Window presets in Hounsfield units: [min, max] = level ∓ width / 2. */
const WINDOWS: Record<string, [number, number]> = {
  lung: [-1350, 150],
  mediastinum: [-160, 240],
  bone: [-700, 1300],
};

class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly body: unknown,
    message: string,
  ) {
    super(message);
  }
}

const root = document.getElementById("review") as HTMLElement;
const slug = root.dataset.slug ?? "";
const role = root.dataset.role === "radiologist" ? "radiologist" : "annotator";
const csrf = root.dataset.csrf ?? "";
const stage = role === "radiologist" ? "review" : "annotate";

const el = <T extends HTMLElement = HTMLElement>(id: string): T => {
  const found = document.getElementById(id);
  if (!found) throw new Error(`review.html lacks #${id}`);
  return found as T;
};
const messages = el("messages");
const canvas = el<HTMLCanvasElement>("viewer");
const commentBox = el<HTMLTextAreaElement>("comment");

let current: Case | null = null;
let mode: Mode = "view";
let busy = false;
let decided = false;
const nv = new Niivue({
  backColor: [0, 0, 0, 1],
  show3Dcrosshair: false,
  dragAndDropEnabled: false,
  isResizeCanvas: true,
  loadingText: "No case open",
  multiplanarShowRender: SHOW_RENDER.NEVER,
  multiplanarLayout: MULTIPLANAR_TYPE.ROW,
  penSize: 3,
  maxDrawUndoBitmaps: 32,
  isRadiologicalConvention: true, // patient right on the screen's left, as radiologists read
});

// ---- messages and the API ----------------------------------------------------------------------

function say(text: string, kind: "info" | "error" | "ok" = "info", extra?: HTMLElement): void {
  const line = document.createElement("p");
  line.className = `msg msg-${kind}`;
  line.textContent = text;
  if (extra) line.append(" ", extra);
  messages.replaceChildren(line);
  root.dataset.message = kind;
}

function describe(body: unknown): string {
  if (body === null || body === undefined) return "";
  if (typeof body === "string") return body;
  if (Array.isArray(body)) return body.map(describe).join("; ");
  if (typeof body === "object") {
    return Object.entries(body as Record<string, unknown>)
      .filter(([key]) => key !== "current" && key !== "yours")
      .map(([key, value]) => (key === "detail" ? describe(value) : `${key}: ${describe(value)}`))
      .join("; ");
  }
  return String(body);
}

async function api(path: string, init: RequestInit = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  headers.set("X-CSRFToken", csrf);
  headers.set("Accept", "application/json");
  const response = await fetch(path, { credentials: "same-origin", ...init, headers });
  if (!response.ok) {
    const type = response.headers.get("Content-Type") ?? "";
    const body: unknown = type.includes("json") ? await response.json() : await response.text();
    const text = typeof body === "string" && body.length > 200 ? response.statusText : describe(body);
    throw new ApiError(response.status, body, `${init.method ?? "GET"} ${path}: ${response.status} ${text}`);
  }
  return response;
}

async function postJson(path: string, data: object): Promise<unknown> {
  const response = await api(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(data),
  });
  return response.json();
}

/** Run one user action at a time; every failure ends up in the message area. */
async function guarded(action: () => Promise<void>): Promise<void> {
  if (busy) {
    say("Still working on the last action…");
    return;
  }
  busy = true;
  root.dataset.busy = "1";
  try {
    await action();
  } catch (err) {
    say(err instanceof Error ? err.message : String(err), "error");
    console.error(err);
  } finally {
    busy = false;
    delete root.dataset.busy;
  }
}

// ---- the case ------------------------------------------------------------------------------------

function currentMask(c: Case): Annotation | undefined {
  return c.versions.find((v) => v.version === c.finding.current_version && v.kind === "mask");
}

function renderReport(c: Case): void {
  const box = el("report");
  box.replaceChildren();
  if (!c.report) {
    box.textContent = "This case has no report.";
    return;
  }
  for (const [section, text] of Object.entries(c.report.sections)) {
    if (!text) continue;
    const head = document.createElement("h3");
    head.textContent = section;
    const para = document.createElement("p");
    para.className = "report-text";
    const spans = c.findings
      .filter((f) => f.section === section && f.end > f.start)
      .sort((a, b) => a.start - b.start);
    let at = 0;
    for (const f of spans) {
      if (f.start < at) continue; // overlapping spans: the first one wins
      para.append(text.slice(at, f.start));
      const mark = document.createElement("mark");
      mark.textContent = text.slice(f.start, f.end);
      mark.dataset.finding = String(f.id);
      mark.title = `${f.code} · ${f.status}`;
      if (f.id === c.finding.id) mark.className = "current";
      para.append(mark);
      at = f.end;
    }
    para.append(text.slice(at));
    box.append(head, para);
  }
}

function renderFindings(c: Case): void {
  const list = el("findings");
  list.replaceChildren();
  for (const f of c.findings) {
    const item = document.createElement("li");
    item.textContent = `${f.text} — ${f.code || "?"} · ${f.status}${f.stage ? ` · ${f.stage}` : ""}`;
    if (f.id === c.finding.id) item.className = "current";
    list.append(item);
  }
  const versions = el("versions");
  versions.replaceChildren();
  for (const v of c.versions) {
    const item = document.createElement("li");
    const who = v.author ?? (v.region_proposal_id ? `proposal ${v.region_proposal_id}` : "?");
    item.textContent = `v${v.version} ${v.kind} by ${who}${v.voxels != null ? ` · ${v.voxels} voxels` : ""}`;
    if (v.version === c.finding.current_version) item.className = "current";
    versions.append(item);
  }
}

function renderTask(c: Case): void {
  el("case-title").textContent =
    `Task ${c.task.id} · finding ${c.finding.id}: ${c.finding.text} (${c.task.stage}, version ${c.finding.current_version})`;
  const returned = el("returned");
  returned.hidden = !c.task.returned_comment || role !== "annotator";
  el("returned-text").textContent = c.task.returned_comment || "";
}

async function loadImages(c: Case): Promise<void> {
  nv.closeDrawing();
  while (nv.volumes.length) nv.removeVolume(nv.volumes[0]);
  if (!c.scan) {
    say("This finding has no scan to show.", "error");
    return;
  }
  const scanBytes = await (await api(`/api/scans/${c.scan.id}/nifti/`)).arrayBuffer();
  const gz = new Uint8Array(scanBytes.slice(0, 2));
  const name = gz[0] === 0x1f && gz[1] === 0x8b ? `scan-${c.scan.id}.nii.gz` : `scan-${c.scan.id}.nii`;
  const [min, max] = c.scan.modality === "CT" ? WINDOWS.lung : [NaN, NaN];
  const volume = await NVImage.loadFromUrl({ url: name, name, buffer: scanBytes, cal_min: min, cal_max: max });
  nv.addVolume(volume);
  const mask = currentMask(c);
  if (mask) {
    // encoding=http: the server sends the NIfTI with Content-Encoding gzip, and the browser inflates it
    // natively (NiiVue inflating 78 M voxels in JavaScript took ~20 s).
    const maskBytes = await (await api(`/api/annotations/${mask.id}/mask/?encoding=http`)).arrayBuffer();
    const view = new DataView(maskBytes);
    const gz = view.byteLength > 2 && view.getUint8(0) === 0x1f && view.getUint8(1) === 0x8b;
    const nifti = view.byteLength > 348 && view.getInt32(0, true) === 348;
    if (gz || nifti) {
      const name = gz ? "mask.nii.gz" : "mask.nii";
      const drawing = await NVImage.loadFromUrl({ url: name, name, buffer: maskBytes });
      if (!nv.loadDrawing(drawing)) say(`Mask v${mask.version} does not fit the scan's grid.`, "error");
    } else {
      say(`Mask v${mask.version} is a 2D image: not shown on the volume.`, "error");
    }
  }
  if (!nv.drawBitmap) nv.createEmptyDrawing();
  nv.setDrawOpacity(0.5);
  setMode(mode);
  const [n, centre] = drawnVoxels();
  root.dataset.maskVoxels = String(n);
  if (centre) {
    // Show the mask: the crosshair to the painted voxel nearest its centroid's slices.
    nv.scene.crosshairPos = nv.vox2frac(centre);
    nv.drawScene(); // moving the crosshair needs a redraw, not a new volume upload (~8 s on 512x512x300)
  }
  nv.refreshDrawing(true);
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

async function openCase(c: Case, note = ""): Promise<void> {
  current = c;
  decided = false;
  root.dataset.task = String(c.task.id);
  root.dataset.state = "loading";
  el("empty").hidden = true;
  renderTask(c);
  renderReport(c);
  renderFindings(c);
  commentBox.value = "";
  mode = "view"; // a new case never starts with the pen down
  delete root.dataset.message;
  await loadImages(c);
  root.dataset.state = "ready";
  // For bench/bench_case_open.py: two animation frames after loading, the case's first frame is on screen.
  requestAnimationFrame(() => requestAnimationFrame(() => performance.mark("case-rendered")));
  if (note && root.dataset.message !== "error") say(note, "ok");
}

async function nextCase(): Promise<void> {
  const response = await api(`/api/projects/${encodeURIComponent(slug)}/next-task/?stage=${stage}`);
  if (response.status === 204) {
    current = null;
    el("empty").hidden = false;
    for (const id of ["case-title", "report", "findings", "versions"]) el(id).replaceChildren();
    el("returned").hidden = true;
    nv.closeDrawing();
    while (nv.volumes.length) nv.removeVolume(nv.volumes[0]);
    root.dataset.state = "empty";
    delete root.dataset.task;
    say("Queue empty.");
    return;
  }
  const c = (await response.json()) as Case;
  await openCase(c, `Opened task ${c.task.id}.`);
}

async function reload(): Promise<void> {
  if (!current) return;
  const c = (await (await api(`/api/tasks/${current.task.id}/`)).json()) as Case;
  await openCase(c, `Reloaded: version ${c.finding.current_version} is current.`);
}

// ---- drawing -------------------------------------------------------------------------------------

function setMode(next: Mode): void {
  mode = next;
  nv.setDrawingEnabled(next !== "view");
  if (next !== "view") nv.setPenValue(next === "paint" ? 1 : 0, false);
  el("paint").classList.toggle("on", next === "paint");
  el("erase").classList.toggle("on", next === "erase");
  root.dataset.mode = next;
}

function needCase(): Case {
  if (!current) throw new Error("Open a case first (Next case, key n).");
  return current;
}

async function save(): Promise<void> {
  const c = needCase();
  if (role !== "annotator") throw new Error("Only annotators save versions.");
  const bytes = await nv.saveImage({ filename: "", isSaveDrawing: true, volumeByIndex: 0 });
  if (!(bytes instanceof Uint8Array)) throw new Error("Nothing to save: no scan or no drawing is open.");
  const form = new FormData();
  form.append("kind", "mask");
  form.append("base_version", String(c.finding.current_version));
  form.append("mask", new Blob([bytes as Uint8Array<ArrayBuffer>], { type: "application/octet-stream" }), "mask.nii");
  try {
    const saved = (await (await api(`/api/tasks/${c.task.id}/annotations/`, { method: "POST", body: form })).json()) as Annotation;
    c.versions.push(saved);
    c.finding.current_version = saved.version;
    renderTask(c);
    renderFindings(c);
    say(`Saved version ${saved.version} (${saved.voxels ?? 0} voxels).`, "ok");
  } catch (err) {
    if (err instanceof ApiError && err.status === 409) {
      const body = err.body as { current?: Annotation | null; yours?: number };
      if (body.current !== undefined) {
        const theirs = body.current;
        const button = document.createElement("button");
        button.textContent = "Reload";
        button.addEventListener("click", () => void guarded(reload));
        say(
          `Someone saved version ${theirs ? theirs.version : 0}${theirs?.author ? ` (${theirs.author}, ${theirs.created_at})` : ""} ` +
            `since yours (you edited version ${body.yours ?? c.finding.current_version}) — reload.`,
          "error",
          button,
        );
        return;
      }
    }
    throw err;
  }
}

async function transition(action: "submit" | "approve" | "return", data: Record<string, string>): Promise<void> {
  const c = needCase();
  if (decided) throw new Error("This task is done: press n for the next case.");
  const task = (await postJson(`/api/tasks/${c.task.id}/${action}/`, data)) as Task;
  decided = true;
  root.dataset.state = "done";
  const what = action === "submit" ? `Submitted (${data.decision})` : action === "approve" ? "Approved" : "Returned";
  say(`${what}: task ${task.id} is now at ${task.stage}. Press n for the next case.`, "ok");
}

async function returnTask(): Promise<void> {
  const comment = commentBox.value.trim();
  if (!comment) {
    commentBox.focus();
    throw new Error("Returning a task needs a comment for the annotator.");
  }
  await transition("return", { comment });
}

// ---- controls --------------------------------------------------------------------------------------

function windowPreset(name: string): void {
  const volume = nv.volumes[0];
  if (!volume) return;
  [volume.cal_min, volume.cal_max] = WINDOWS[name];
  nv.updateGLVolume();
  root.dataset.window = name;
}

const actions: Record<string, () => Promise<void>> = {
  next: nextCase,
  save,
  accept: () => transition("submit", { decision: "accept", comment: commentBox.value }),
  reject: () => transition("submit", { decision: "reject", comment: commentBox.value }),
  approve: () => transition("approve", { comment: commentBox.value }),
  return: returnTask,
  reload,
};
const toggles: Record<string, () => void> = {
  paint: () => setMode(mode === "paint" ? "view" : "paint"),
  erase: () => setMode(mode === "erase" ? "view" : "erase"),
  undo: () => nv.drawUndo(),
};
const keys: Record<string, string> = { n: "next", s: "save", a: "accept", r: "reject", p: "paint", e: "erase", z: "undo" };

function trigger(name: string): void {
  if (toggles[name]) {
    if (!current) say("Open a case first (Next case, key n).", "error");
    else toggles[name]();
  } else if (actions[name]) void guarded(actions[name]);
}

for (const button of root.querySelectorAll<HTMLButtonElement>("button[data-action]")) {
  button.addEventListener("click", () => trigger(button.dataset.action ?? ""));
}
for (const button of root.querySelectorAll<HTMLButtonElement>("button[data-window]")) {
  button.addEventListener("click", () => windowPreset(button.dataset.window ?? "lung"));
}
document.addEventListener("keydown", (event) => {
  const target = event.target as HTMLElement | null;
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (target && (target.tagName === "TEXTAREA" || target.tagName === "INPUT" || target.isContentEditable)) return;
  const name = keys[event.key.toLowerCase()];
  if (!name) return;
  if (role === "radiologist" && ["save", "accept", "reject", "paint", "erase", "undo"].includes(name)) return;
  event.preventDefault();
  trigger(name);
});

root.classList.add(`role-${role}`);
nv.attachToCanvas(canvas)
  .then(() => {
    nv.setSliceType(nv.sliceTypeMultiplanar);
    root.dataset.state = "idle";
    say(`Ready: press n (Next case) to open the next ${stage} task.`);
  })
  .catch((err: unknown) => say(`The image viewer could not start (WebGL2 needed): ${String(err)}`, "error"));

// For the browser tests and the console: the viewer and the open case.
(window as unknown as { groundlabReview: object }).groundlabReview = { nv, current: () => current };
