// The review screen: the next case of the queue, its report with every finding's span, the findings of the
// study (click one, or [ and ], to open its task), the scan in NiiVue (CT: axial / coronal / sagittal;
// radiograph: one 2D view) with the finding's current mask as an editable drawing (pen, eraser, filled
// outline, fill holes, undo / redo), boxes drawn on an overlay, gaze heatmaps over radiographs, versioned
// saves (autosaved after painting stops) and the stage transitions of the review API (README "Review").
// The page (annotation/ui.py) gives the project slug, the reviewer's role, the CSRF token and the project's
// readers per finding as data attributes of #review.
// Several readers per finding (README "Several readers per finding", readers_per_finding > 1): an
// annotator works on blinded readings instead of tasks (next-reading; saves and accept / reject go to the
// reading's endpoints; only the proposal and their own versions are shown), findings still with their
// readers are listed as "being read", and after the consensus the case shows the readers' agreement.
import { Niivue, NVImage, SHOW_RENDER, MULTIPLANAR_TYPE, cmapper } from "@niivue/niivue";
import {
  affineOf,
  axialTile,
  canvasPoint,
  cssPoint,
  inTile,
  mmToVox,
  regionOnTile,
  sliceAxis,
  tileToMM,
  type Tile,
} from "./geometry";
import { DrawHistory } from "./history";
import { bitmapToPng, countDrawn, fillHolesInSlice, pngToBitmap } from "./masks";

type Annotation = {
  id: number;
  version: number;
  kind: string;
  box: number[] | null;
  voxels: number | null;
  author: string | null;
  region_proposal_id: number | null;
  comment: string;
  created_at: string;
};
type Finding = {
  id: number;
  study_id: number;
  scan_id: number | null;
  section: string;
  start: number | null;
  end: number | null;
  text: string;
  code: string;
  status: string;
  source: string;
  current_version: number;
  stage: string | null;
  task_id?: number | null;
};
type Proposal = {
  id: number;
  source: string;
  code: string;
  label: string;
  box: number[] | null;
  pixels: number;
  score: number;
  confidence: number | null;
};
type Gaze = { id: number; reader: string; heatmap_png: string };
/** One reader's reading of a finding (the API's ReadingOut); ``stage`` is the finding's task's. */
type Reading = {
  id: number;
  finding_id: number;
  index: number;
  reader: string | null;
  status: string;
  decision: string;
  annotation_id: number | null;
  version: number | null;
  lease_expires_at: string | null;
  submitted_at: string | null;
  stage: string | null;
};
type AgreementReader = {
  reading: number;
  index: number;
  username: string | null;
  decision: string;
  version: number | null;
  voxels: number | null;
  in_consensus: boolean;
  dice: number | null;
  iou: number | null;
};
/** Finding.agreement after the last reading (annotation/readers.py): null before. */
type Agreement = {
  method: string;
  readers: AgreementReader[];
  pairs: { readings: number[]; readers: string[]; dice: number; iou: number }[];
  mean_dice: number | null;
  mean_iou: number | null;
  decisions: { accept: number; reject: number };
  decision_agreement: number;
  decision: string;
  tie: boolean;
  consensus_version: number | null;
  consensus_voxels: number | null;
};
type Task = { id: number; stage: string; decision: string; returned_comment: string; assignee: string | null };
type Case = {
  task: Task;
  finding: Finding;
  versions: Annotation[];
  scan: { id: number; shape: number[]; ndim?: number; modality: string } | null;
  report: { id: number; sections: Record<string, string> } | null;
  findings: Finding[];
  proposals?: Proposal[];
  gaze?: Gaze[];
  /** Present when the case is the user's reading (next-reading, a reading's detail). */
  reading?: Reading;
  agreement?: Agreement | null;
};
type Mode = "view" | "paint" | "erase" | "fill" | "box";
type Showing = "annotator" | "proposal";

/** Window presets in Hounsfield units: [min, max] = level ∓ width / 2. */
const WINDOWS: Record<string, [number, number]> = {
  lung: [-1350, 150],
  mediastinum: [-160, 240],
  bone: [-700, 1300],
};
/** One colour per finding of the study (by its place in the list). */
const PALETTE: [number, number, number][] = [
  [235, 64, 52],
  [41, 128, 255],
  [46, 204, 113],
  [243, 156, 18],
  [155, 89, 182],
  [26, 188, 196],
  [236, 100, 165],
  [180, 180, 40],
];
const AUTOSAVE_MS = 3000;

class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly body: unknown,
    message: string,
  ) {
    super(message);
  }
}

/** An error to show as it is, with a button (Reload, Claim again) after it. */
class ShownError extends Error {
  constructor(
    message: string,
    readonly extra?: HTMLElement,
  ) {
    super(message);
  }
}

const root = document.getElementById("review") as HTMLElement;
const slug = root.dataset.slug ?? "";
const role = root.dataset.role === "radiologist" ? "radiologist" : "annotator";
const csrf = root.dataset.csrf ?? "";
const stage = role === "radiologist" ? "review" : "annotate";
/** The project's readers per finding; above 1 an annotator's Next case takes readings (see nextCase). */
const readersPerFinding = Math.max(1, Math.floor(Number(root.dataset.readers ?? "1")) || 1);
const reads = role === "annotator" && readersPerFinding > 1;

const el = <T extends HTMLElement = HTMLElement>(id: string): T => {
  const found = document.getElementById(id);
  if (!found) throw new Error(`review.html lacks #${id}`);
  return found as T;
};
const messages = el("messages");
const canvas = el<HTMLCanvasElement>("viewer");
const overlay = el<HTMLCanvasElement>("overlay");
const preview = el<HTMLImageElement>("preview");
const gazeImage = el<HTMLImageElement>("gaze");
const commentBox = el<HTMLTextAreaElement>("comment");
const opacity = el<HTMLInputElement>("opacity");
const depthInput = el<HTMLInputElement>("box-depth");
const missingForm = el<HTMLFormElement>("missing-form");

let current: Case | null = null;
let mode: Mode = "view";
let busy = false;
let decided = false;
/** What the user changed since the last save: a mask (the drawing) or a box. */
let dirty: "mask" | "box" | null = null;
let autosaveTimer: number | undefined;
let autosaving: Promise<void> | null = null;
/** A failed save before leaving the case: the next try leaves without saving. */
let leaveAnyway = false;
let pendingBox: number[] | null = null;
let shownBox: { box: number[]; label: string } | null = null;
let drag: { tile: Tile; from: [number, number]; to: [number, number] } | null = null;
let loadedScan: number | null = null;
let is2D = false;
let showing: Showing = "annotator";
let gazeOn = false;
let missingSpan: { section: string; start: number; end: number } | null = null;
const history = new DrawHistory();

const nv = new Niivue({
  backColor: [0, 0, 0, 1],
  crosshairColor: [0.25, 0.8, 1, 0.6], // not red: the first finding's colour
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

function setSaveState(text: string, kind: "ok" | "dirty" | "error" | "" = ""): void {
  const box = el("save-state");
  box.textContent = text;
  box.dataset.kind = kind;
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
  if (busy && autosaving) await autosaving; // an autosave is quick: the action waits for it
  if (busy) {
    say("Still working on the last action…");
    return;
  }
  busy = true;
  root.dataset.busy = "1";
  try {
    await action();
  } catch (err) {
    if (err instanceof ShownError) say(err.message, "error", err.extra);
    else say(err instanceof Error ? err.message : String(err), "error");
    console.error(err);
  } finally {
    busy = false;
    delete root.dataset.busy;
  }
}

function button(label: string, onClick: () => void): HTMLButtonElement {
  const b = document.createElement("button");
  b.textContent = label;
  b.addEventListener("click", onClick);
  return b;
}

// ---- the case ------------------------------------------------------------------------------------

function versionOf(c: Case, number: number): Annotation | undefined {
  return c.versions.find((v) => v.version === number);
}

/** The version made from a region proposal (or version 1): what the annotator started from. After several
 * readers, version 1 may be a reader's own: then only a proposal's version is one. */
function proposalVersion(c: Case): Annotation | undefined {
  const first = versionOf(c, 1);
  return c.versions.find((v) => v.region_proposal_id != null) ?? (c.agreement && first?.author ? undefined : first);
}

/** The annotator's newest version (the current one when they saved none: they kept the proposal). After
 * several readers: the consensus, or an annotator's correction of it (a returned consensus). */
function annotatorVersion(c: Case): Annotation | undefined {
  const consensus = c.agreement?.consensus_version ?? null;
  const mine = c.versions.filter((v) => v.author != null && (consensus == null || v.version > consensus));
  return mine.length ? mine[mine.length - 1] : versionOf(c, consensus ?? c.finding.current_version);
}

/** What annotatorVersion is called on the screen. */
function resultName(c: Case): string {
  const consensus = c.agreement?.consensus_version;
  return consensus != null && annotatorVersion(c)?.version === consensus ? "the consensus" : "the annotator's result";
}

/** "Reading k of N" (N: the project's readers per finding, at least k: the project may have changed N). */
function readingLabel(r: Reading): string {
  return `Reading ${r.index} of ${Math.max(readersPerFinding, r.index)}`;
}

/** Where the case's saves and decision go: the user's reading, or the task. */
function endpoint(c: Case): string {
  return c.reading ? `/api/readings/${c.reading.id}` : `/api/tasks/${c.task.id}`;
}

function doneText(c: Case): string {
  return c.reading ? "This reading is submitted: press n for the next case." : "This task is done: press n for the next case.";
}

function findingColour(c: Case, findingId: number): [number, number, number] {
  const index = Math.max(0, c.findings.findIndex((f) => f.id === findingId));
  return PALETTE[index % PALETTE.length];
}

const rgb = (colour: number[], alpha = 1): string => `rgba(${colour[0]}, ${colour[1]}, ${colour[2]}, ${alpha})`;

function proposalsOf(c: Case, f: Finding): Proposal[] {
  return (c.proposals ?? []).filter((p) => p.code === f.code && f.code !== "");
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
    para.dataset.section = section;
    const spans = c.findings
      .filter((f) => f.section === section && f.start != null && f.end != null && f.end > f.start)
      .sort((a, b) => (a.start ?? 0) - (b.start ?? 0));
    let at = 0;
    for (const f of spans) {
      const [start, end] = [f.start ?? 0, f.end ?? 0];
      if (start < at) continue; // overlapping spans: the first one wins
      para.append(text.slice(at, start));
      const mark = document.createElement("mark");
      mark.textContent = text.slice(start, end);
      mark.dataset.finding = String(f.id);
      mark.title = `${f.code} · ${f.status}`;
      mark.style.borderBottom = `3px solid ${rgb(findingColour(c, f.id))}`;
      if (f.id === c.finding.id) mark.className = "current";
      para.append(mark);
      at = end;
    }
    para.append(text.slice(at));
    box.append(head, para);
  }
}

/** A finding still with its readers (several readers per finding): its task opens after the consensus. */
const beingRead = (f: Finding): boolean => f.stage === "read";

function canOpen(f: Finding): boolean {
  const open = role === "radiologist" ? ["review", "qa"] : ["annotate"];
  return f.task_id != null && f.stage != null && open.includes(f.stage);
}

function renderFindings(c: Case): void {
  const list = el("findings");
  list.replaceChildren();
  for (const f of c.findings) {
    const item = document.createElement("li");
    item.dataset.finding = String(f.id);
    if (f.task_id != null) item.dataset.task = String(f.task_id);
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = rgb(findingColour(c, f.id));
    const text = document.createElement("span");
    text.className = "f-text";
    text.textContent = f.text;
    const meta = document.createElement("span");
    meta.className = "f-meta";
    // Another finding being read: its version number would tell how much its readers saved (blinded).
    const version = beingRead(f) && f.id !== c.finding.id ? "" : ` · v${f.current_version}`;
    const where = beingRead(f) ? "being read" : (f.stage ?? "no task");
    meta.textContent = ` ${f.code || "no code"} · ${where} · ${f.source || "?"} · ${f.status}${version}`;
    item.append(swatch, text, meta);
    const proposals = proposalsOf(c, f);
    if (proposals.length) {
      const sub = document.createElement("ul");
      sub.className = "f-proposals";
      for (const p of proposals) {
        const line = document.createElement("li");
        const conf = p.confidence != null ? ` · confidence ${p.confidence.toFixed(2)}` : "";
        const box = p.box ? ` · box [${p.box.join(", ")}]` : "";
        line.textContent = `proposal #${p.id} from ${p.source}${p.label ? ` (${p.label})` : ""}${conf}${box}`;
        sub.append(line);
      }
      item.append(sub);
    }
    if (f.id === c.finding.id) item.classList.add("current");
    else if (canOpen(f)) {
      item.classList.add("openable");
      item.title = "Open this finding's task";
    } else if (beingRead(f)) {
      item.classList.add("closed", "being-read");
      item.title = "Being read by its readers (blinded): its task opens after their consensus";
    } else item.classList.add("closed");
    item.addEventListener("click", () => {
      if (current && f.id !== current.finding.id) void guarded(() => openFinding(f));
    });
    list.append(item);
  }
  renderVersions(c);
  renderAgreement(c);
}

function renderVersions(c: Case): void {
  const versions = el("versions");
  versions.replaceChildren();
  el("versions-title").textContent = c.reading ? "Versions (the proposal and yours only)" : "Versions";
  const agreement = c.agreement;
  const proposal = proposalVersion(c);
  const annotator = annotatorVersion(c);
  for (const v of c.versions) {
    const item = document.createElement("li");
    const isConsensus = agreement != null && v.version === agreement.consensus_version;
    const who = v.author ?? (v.region_proposal_id ? `proposal ${v.region_proposal_id}` : "?");
    const size = v.kind === "box" && v.box ? ` [${v.box.join(", ")}]` : v.voxels != null ? ` · ${v.voxels} voxels` : "";
    // The consensus has no author: its comment says what it is ("consensus of N readers (method)").
    item.textContent = isConsensus
      ? `v${v.version} ${v.kind}, ${v.comment || "consensus of the readers"}${size}`
      : `v${v.version} ${v.kind} by ${who}${size}`;
    if (role === "radiologist") {
      const tags: string[] = [];
      if (proposal && v.id === proposal.id) tags.push("proposal");
      if (annotator && v.id === annotator.id && v.author) tags.push("annotator's result");
      if (isConsensus) tags.push("consensus");
      const readBy = (agreement?.readers ?? []).filter((r) => r.version === v.version);
      if (readBy.length) tags.push(readBy.map((r) => `reader ${r.index}'s reading`).join(", "));
      if (tags.length) {
        const tag = document.createElement("span");
        tag.className = "tag";
        tag.textContent = tags.join(", ");
        item.append(" ", tag);
      }
    }
    if (v.version === c.finding.current_version) item.classList.add("current");
    versions.append(item);
  }
}

const fixed = (value: number | null | undefined): string => (value == null ? "—" : value.toFixed(2));

/** The readers' agreement after a consensus (any case whose payload has one; never a reading's). */
function renderAgreement(c: Case): void {
  const box = el("agreement");
  const body = el("agreement-body");
  body.replaceChildren();
  const a = c.reading ? null : c.agreement;
  box.hidden = !a;
  if (!a) return;
  const n = a.readers.length;
  const votes = `${a.decisions.accept} accept, ${a.decisions.reject} reject${a.tie ? ": a tie accepts" : ""}`;
  const summary = document.createElement("p");
  summary.className = "ag-summary";
  summary.textContent =
    `${n} readers · decision ${a.decision} (${votes}) · mean Dice ${fixed(a.mean_dice)} · mean IoU ${fixed(a.mean_iou)}` +
    ` · ${Math.round(a.decision_agreement * 100)}% of reader pairs decided alike`;
  const consensus = document.createElement("p");
  consensus.className = "ag-consensus";
  consensus.textContent =
    a.consensus_version != null
      ? `Consensus: v${a.consensus_version} (${a.method}, ${a.consensus_voxels ?? 0} voxels) of the accepting readers' masks.`
      : "No consensus mask: the readers' majority rejected the finding.";
  const table = document.createElement("table");
  const head = table.createTHead().insertRow();
  for (const title of ["Reading", "Reader", "Decision", "Version", "Dice", "IoU"]) {
    const th = document.createElement("th");
    th.textContent = title;
    head.append(th);
  }
  const rows = table.createTBody();
  for (const r of [...a.readers].sort((x, y) => x.index - y.index)) {
    const row = rows.insertRow();
    row.dataset.reader = r.username ?? "";
    const version = r.version == null ? "—" : `v${r.version}${r.in_consensus ? "" : " (not in consensus)"}`;
    for (const text of [String(r.index), r.username ?? "?", r.decision, version, fixed(r.dice), fixed(r.iou)]) {
      row.insertCell().textContent = text;
    }
    row.classList.add(`decision-${r.decision}`);
  }
  const note = document.createElement("p");
  note.className = "ag-note";
  note.textContent =
    "Dice and IoU per reader: the mean against the other accepting readers' masks." +
    (a.pairs.length > 1 ? ` Pairs: ${a.pairs.map((p) => `${p.readers.join("–")} ${fixed(p.dice)}`).join(", ")}.` : "");
  body.append(summary, consensus, table, note);
}

function renderTask(c: Case): void {
  const r = c.reading;
  el("case-title").textContent = r
    ? `${readingLabel(r)} · finding ${c.finding.id}: ${c.finding.text} (your version ${c.finding.current_version})`
    : `Task ${c.task.id} · finding ${c.finding.id}: ${c.finding.text} (${c.task.stage}, version ${c.finding.current_version})`;
  const returned = el("returned");
  returned.hidden = !c.task.returned_comment || role !== "annotator" || r != null;
  el("returned-text").textContent = c.task.returned_comment || "";
  el("reading").hidden = !r;
  if (r) {
    el("reading-head").textContent = `${readingLabel(r)} — your own reading: other readers' work is hidden.`;
    const submitted = r.status === "submitted" ? ` You submitted it (${r.decision}).` : "";
    el("reading-note").textContent =
      "You see the proposal (when there is one) and your own versions; after the last reading a consensus of the readers goes to a " +
      `radiologist.${submitted}`;
    root.dataset.reading = String(r.id);
  } else delete root.dataset.reading;
}

function renderShowing(c: Case): void {
  const label = el("showing");
  if (role !== "radiologist") {
    label.textContent = "";
    return;
  }
  const v = showing === "proposal" ? proposalVersion(c) : annotatorVersion(c);
  label.textContent = v
    ? `Showing ${showing === "proposal" ? "the proposal" : resultName(c)}: v${v.version} ${v.kind}${v.author ? ` by ${v.author}` : ""}`
    : "No version to show";
  root.dataset.showing = showing;
}

// ---- the images ----------------------------------------------------------------------------------

function setColour(c: Case): void {
  const [r, g, b] = findingColour(c, c.finding.id);
  nv.drawLut = cmapper.makeDrawLut({ R: [0, r], G: [0, g], B: [0, b], A: [0, 255], I: [0, 1] });
  if (nv.volumes.length) {
    nv.refreshColormaps();
    nv.drawScene();
  }
}

function showPreview(c: Case): void {
  if (!c.scan) return;
  const window = c.scan.modality === "CT" && (c.scan.ndim ?? c.scan.shape.length) === 3 ? "&window=lung" : "";
  preview.onload = () => {
    if (current !== c) return;
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
  loadedScan = null;
  const scanBytes = await (await api(`/api/scans/${c.scan.id}/nifti/`)).arrayBuffer();
  const gz = new Uint8Array(scanBytes.slice(0, 2));
  const name = gz[0] === 0x1f && gz[1] === 0x8b ? `scan-${c.scan.id}.nii.gz` : `scan-${c.scan.id}.nii`;
  const ct = c.scan.modality === "CT" && !is2D;
  const [min, max] = ct ? WINDOWS.lung : [NaN, NaN];
  const volume = await NVImage.loadFromUrl({ url: name, name, buffer: scanBytes, cal_min: min, cal_max: max });
  nv.setSliceType(is2D ? nv.sliceTypeAxial : nv.sliceTypeMultiplanar);
  nv.setCrosshairWidth(is2D ? 0 : 1);
  nv.setIsOrientationTextVisible(!is2D); // a radiograph's rows are not anterior-posterior
  nv.addVolume(volume);
  loadedScan = c.scan.id;
  root.dataset.window = ct ? "lung" : "image";
}

/** Load `version` into the drawing (a mask) or the overlay (a box); an empty drawing otherwise. */
async function showVersion(version: Annotation | undefined): Promise<void> {
  shownBox = null;
  pendingBox = null;
  let loaded = false;
  if (version?.kind === "mask") {
    if (is2D) {
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
    shownBox = { box: version.box, label: `v${version.version} box` };
  }
  if (!loaded) nv.createEmptyDrawing();
  nv.setDrawOpacity(Number(opacity.value) / 100);
  history.reset(nv);
  dirty = null;
  leaveAnyway = false;
  setMode(mode);
  const [n, centre] = drawnVoxels();
  root.dataset.maskVoxels = String(n);
  if (centre && !is2D) {
    // Show the mask: the crosshair to the painted voxel nearest its centroid's slices.
    nv.scene.crosshairPos = nv.vox2frac(centre);
    nv.drawScene(); // moving the crosshair needs a redraw, not a new volume upload (~8 s on 512x512x300)
  } else if (shownBox && !is2D) {
    crosshairToBox(shownBox.box);
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

async function loadImages(c: Case): Promise<void> {
  if (!c.scan) {
    nv.closeDrawing();
    while (nv.volumes.length) nv.removeVolume(nv.volumes[0]);
    loadedScan = null;
    say("This finding has no scan to show.", "error");
    return;
  }
  is2D = (c.scan.ndim ?? c.scan.shape.length) === 2;
  root.classList.toggle("scan-2d", is2D);
  root.classList.toggle("scan-3d", !is2D);
  root.classList.toggle("scan-ct", c.scan.modality === "CT" && !is2D);
  setColour(c);
  if (loadedScan !== c.scan.id || !nv.volumes.length) await loadScan(c);
  const version = role === "radiologist" && showing === "proposal" ? proposalVersion(c) : versionOf(c, c.finding.current_version);
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

async function openCase(c: Case, note = ""): Promise<void> {
  window.clearTimeout(autosaveTimer);
  current = c;
  decided = false;
  dirty = null;
  showing = "annotator";
  root.dataset.task = String(c.task.id);
  root.dataset.finding = String(c.finding.id);
  root.dataset.state = "loading";
  el("empty").hidden = true;
  hideMissingForm();
  renderTask(c);
  renderReport(c);
  renderFindings(c);
  renderShowing(c);
  commentBox.value = "";
  setSaveState(`v${c.finding.current_version}`);
  mode = "view"; // a new case never starts with the pen down
  delete root.dataset.message;
  const sameScan = c.scan != null && loadedScan === c.scan.id && nv.volumes.length > 0;
  if (!sameScan) {
    showPreview(c);
    say(`Opening ${c.reading ? readingLabel(c.reading).toLowerCase() : `task ${c.task.id}`}: loading the scan…`);
  }
  try {
    await loadImages(c);
  } finally {
    // NiiVue has drawn the volume (or failed to): the server's preview gives way on the next frame.
    requestAnimationFrame(() => (preview.hidden = true));
  }
  setGaze(gazeOn && is2D && (c.gaze ?? []).length > 0);
  renderGazeChoices(c);
  root.dataset.state = "ready";
  // For bench/bench_case_open.py: two animation frames after loading, the case's first frame is on screen.
  requestAnimationFrame(() => requestAnimationFrame(() => performance.mark("case-rendered")));
  if (note && root.dataset.message !== "error") say(note, "ok");
}

function clearCase(): void {
  current = null;
  el("empty").hidden = false;
  for (const id of ["case-title", "report", "findings", "versions", "showing", "agreement-body"]) el(id).replaceChildren();
  el("returned").hidden = true;
  el("reading").hidden = true;
  el("agreement").hidden = true;
  nv.closeDrawing();
  while (nv.volumes.length) nv.removeVolume(nv.volumes[0]);
  loadedScan = null;
  setGaze(false);
  drawOverlay();
  setSaveState("");
  root.dataset.state = "empty";
  delete root.dataset.task;
  delete root.dataset.finding;
  delete root.dataset.reading;
}

async function nextCase(): Promise<void> {
  await leaveCase();
  const project = encodeURIComponent(slug);
  // Several readers per finding: readings first (one the reader holds, else a free one), since every
  // finding waits in stage read for all its readers before anyone else sees it. Only when no reading is
  // waiting for this reader, the annotate queue: with several readers it holds the consensuses a
  // radiologist returned for one annotator to correct (and findings made before the project took several
  // readers), worked on as tasks, as with one reader.
  let response = reads ? await api(`/api/projects/${project}/next-reading/`) : null;
  if (response === null || response.status === 204) {
    response = await api(`/api/projects/${project}/next-task/?stage=${stage}`);
  }
  if (response.status === 204) {
    clearCase();
    say(reads ? "Queue empty: no reading and no returned task is waiting for you." : "Queue empty.");
    return;
  }
  const c = (await response.json()) as Case;
  await openCase(c, c.reading ? `Opened ${readingLabel(c.reading).toLowerCase()} of finding ${c.finding.id}.` : `Opened task ${c.task.id}.`);
}

async function reload(): Promise<void> {
  if (!current) return;
  const c = (await (await api(`${endpoint(current)}/`)).json()) as Case;
  await openCase(c, `Reloaded: version ${c.finding.current_version} is current.`);
}

/** Before another case or finding opens: save what changed (annotators), or say why not. */
async function leaveCase(): Promise<void> {
  window.clearTimeout(autosaveTimer);
  if (autosaving) await autosaving;
  if (!current || !dirty || decided || role !== "annotator") return;
  if (leaveAnyway) {
    leaveAnyway = false;
    return;
  }
  try {
    await saveNow(true);
  } catch (err) {
    leaveAnyway = true;
    const text = err instanceof Error ? err.message : String(err);
    throw new ShownError(`${text} — your changes are not saved; do it again to leave without them.`, err instanceof ShownError ? err.extra : undefined);
  }
}

/** Claim a finding's task (it must not be held by someone else) and open it. */
async function openFinding(f: Finding): Promise<void> {
  if (beingRead(f)) {
    // Its task is with the readers (nobody claims it); readings come in the queue's order only.
    const next = reads ? " Press n for your next reading." : "";
    say(`“${f.text}” is being read: its readers work blinded, and its task opens after their consensus.${next} The current case stays open.`);
    return;
  }
  if (f.task_id == null) throw new Error(`Finding ${f.id} has no review task.`);
  await leaveCase();
  let c: Case;
  try {
    const claimed = (await postJson(`/api/tasks/${f.task_id}/claim/`, {})) as Partial<Case>;
    c = claimed.task && claimed.finding && claimed.versions
      ? (claimed as Case)
      : ((await (await api(`/api/tasks/${f.task_id}/`)).json()) as Case);
  } catch (err) {
    if (err instanceof ApiError && (err.status === 409 || err.status === 400 || err.status === 403)) {
      throw new ShownError(`Cannot open “${f.text}”: ${describe(err.body)}. The current case stays open.`);
    }
    throw err;
  }
  await openCase(c, `Opened task ${c.task.id}: ${c.finding.text}`);
}

async function stepFinding(step: 1 | -1): Promise<void> {
  const c = needCase();
  const list = c.findings;
  const at = list.findIndex((f) => f.id === c.finding.id);
  for (let i = 1; i < list.length; i++) {
    const f = list[(at + step * i + list.length * i) % list.length];
    if (canOpen(f)) return openFinding(f);
  }
  say(`No other finding of this study is waiting for ${role === "radiologist" ? "review" : "annotation"}.`);
}

// ---- a missing finding -------------------------------------------------------------------------------

/** The text selected in the report, with its section and offsets. */
function reportSelection(): { text: string; section: string; start: number; end: number } | null {
  const selection = window.getSelection();
  if (!selection || selection.isCollapsed || selection.rangeCount === 0) return null;
  const range = selection.getRangeAt(0);
  const paraOf = (node: Node): HTMLElement | null =>
    (node.nodeType === Node.ELEMENT_NODE ? (node as HTMLElement) : node.parentElement)?.closest<HTMLElement>(".report-text") ?? null;
  const para = paraOf(range.startContainer);
  if (!para || para !== paraOf(range.endContainer) || !para.dataset.section) return null;
  const before = document.createRange();
  before.setStart(para, 0);
  before.setEnd(range.startContainer, range.startOffset);
  const raw = range.toString();
  const lead = raw.length - raw.trimStart().length;
  const text = raw.trim();
  if (!text) return null;
  const start = before.toString().length + lead;
  return { text, section: para.dataset.section, start, end: start + text.length };
}

function showMissingForm(): void {
  needCase();
  if (role !== "annotator") throw new Error("Only annotators add findings.");
  const picked = reportSelection();
  missingSpan = picked ? { section: picked.section, start: picked.start, end: picked.end } : null;
  const text = el<HTMLInputElement>("missing-text");
  text.value = picked?.text ?? "";
  el<HTMLInputElement>("missing-code").value = "";
  el("missing-span").textContent = picked
    ? `from the report (${picked.section}, characters ${picked.start}–${picked.end})`
    : "tip: select its words in the report first to link them";
  missingForm.hidden = false;
  text.focus();
}

function hideMissingForm(): void {
  missingForm.hidden = true;
  missingSpan = null;
}

async function addMissing(): Promise<void> {
  const c = needCase();
  const text = el<HTMLInputElement>("missing-text").value.trim();
  const code = el<HTMLInputElement>("missing-code").value.trim();
  if (!text) {
    el("missing-text").focus();
    throw new Error("Say what the missing finding is (the text field).");
  }
  await leaveCase();
  const body: Record<string, unknown> = { study_id: c.finding.study_id, scan_id: c.scan?.id ?? null, text };
  if (code) body.code = code;
  if (missingSpan) Object.assign(body, missingSpan);
  const made = (await postJson(`/api/projects/${encodeURIComponent(slug)}/findings/`, body)) as Partial<Case> & {
    task?: Task;
  };
  hideMissingForm();
  // Several readers: the new finding waits for its readers, and its author holds reading 1 of it.
  const opened = made.reading
    ? ((await (await api(`/api/readings/${made.reading.id}/`)).json()) as Case)
    : made.task && made.finding && made.versions
      ? (made as Case)
      : ((await (await api(`/api/tasks/${made.task?.id}/`)).json()) as Case);
  const what = opened.reading ? readingLabel(opened.reading).toLowerCase() : `task ${opened.task.id}`;
  await openCase(opened, `Added finding ${opened.finding.id} (${what}): draw it and save.`);
}

// ---- drawing -------------------------------------------------------------------------------------

function setMode(next: Mode): void {
  mode = next;
  const drawing = next === "paint" || next === "erase" || next === "fill";
  nv.setDrawingEnabled(drawing);
  if (drawing) nv.setPenValue(next === "erase" ? 0 : 1, next === "fill");
  for (const name of ["paint", "erase", "fill", "box"]) el(name).classList.toggle("on", next === name);
  overlay.classList.toggle("active", next === "box");
  root.dataset.mode = next;
}

function needCase(): Case {
  if (!current) throw new Error("Open a case first (Next case, key n).");
  return current;
}

function needEditable(): Case {
  const c = needCase();
  if (role !== "annotator") throw new Error("Only annotators edit the mask.");
  if (decided) throw new Error(doneText(c));
  return c;
}

/** The drawing or a box changed: count, remember for autosave. */
function changed(kind: "mask" | "box"): void {
  dirty = kind;
  leaveAnyway = false;
  root.dataset.maskVoxels = String(countDrawn(nv.drawBitmap));
  setSaveState("unsaved changes", "dirty");
  scheduleAutosave();
}

function scheduleAutosave(delay = AUTOSAVE_MS): void {
  window.clearTimeout(autosaveTimer);
  if (role !== "annotator" || decided || !current) return;
  autosaveTimer = window.setTimeout(() => {
    if (!dirty || decided) return;
    if (busy) {
      scheduleAutosave(1000);
      return;
    }
    autosaving = guarded(() => saveNow(true)).finally(() => (autosaving = null));
  }, delay);
}

function undo(): void {
  needEditable();
  if (history.undo(nv)) changed(dirty === "box" ? "box" : "mask");
  else say("Nothing to undo.");
}

function redo(): void {
  needEditable();
  if (history.redo(nv)) changed(dirty === "box" ? "box" : "mask");
  else say("Nothing to redo.");
}

/** The current slice as native voxel coordinates (continuous) of the crosshair. */
function crosshairVox(): [number, number, number] {
  const mm = nv.frac2mm(nv.scene.crosshairPos);
  return mmToVox(affineOf(nv.volumes[0]), [mm[0], mm[1], mm[2]]);
}

function fillHoles(): void {
  needEditable();
  const bitmap = nv.drawBitmap;
  const dims = nv.back?.dims;
  if (!bitmap || !dims) throw new Error("No drawing is open.");
  const z = is2D ? 0 : nv.frac2vox(nv.scene.crosshairPos)[2];
  const filled = fillHolesInSlice(bitmap, dims, z);
  if (!filled) {
    say("No holes in the mask on this slice (fill closes regions surrounded by paint).");
    return;
  }
  nv.refreshDrawing(true);
  history.record(nv);
  changed("mask");
  say(`Filled ${filled} ${is2D ? "pixels" : "voxels"} of holes${is2D ? "" : " on this axial slice"}.`, "ok");
}

// ---- boxes and the overlay ---------------------------------------------------------------------------

function inPlaneAxes(affine: number[][]): { slice: number; axes: [number, number] } {
  if (is2D) return { slice: 2, axes: [0, 1] };
  const slice = sliceAxis(affine);
  const axes = [0, 1, 2].filter((a) => a !== slice) as [number, number];
  return { slice, axes };
}

/** The box (native voxel indices, max exclusive) of a drag between two canvas points on the axial tile. */
function boxFromDrag(c: Case, tile: Tile, from: [number, number], to: [number, number]): number[] {
  const affine = affineOf(nv.volumes[0]);
  const z = nv.frac2mm(nv.scene.crosshairPos)[2];
  const [a, b] = [tileToMM(tile, ...from), tileToMM(tile, ...to)];
  const va = mmToVox(affine, [a[0], a[1], z]);
  const vb = mmToVox(affine, [b[0], b[1], z]);
  const shape = c.scan?.shape ?? [];
  const { slice } = inPlaneAxes(affine);
  const n = is2D ? 2 : 3;
  const lo: number[] = [];
  const hi: number[] = [];
  for (let axis = 0; axis < n; axis++) {
    const size = shape[axis];
    if (!is2D && axis === slice) {
      const k = Math.min(size - 1, Math.max(0, Math.round(va[axis])));
      const depth = Math.max(0, Math.floor(Number(depthInput.value) || 0));
      lo.push(Math.max(0, k - depth));
      hi.push(Math.min(size, k + depth + 1));
      continue;
    }
    // voxel edges are at index ± 0.5: the drag's edges, rounded to the nearest voxel edge
    let low = Math.round(Math.min(va[axis], vb[axis]) + 0.5);
    let high = Math.round(Math.max(va[axis], vb[axis]) + 0.5);
    low = Math.min(size - 1, Math.max(0, low));
    high = Math.min(size, Math.max(0, high));
    if (high <= low) high = low + 1;
    lo.push(low);
    hi.push(high);
  }
  return [...lo, ...hi];
}

function strokeBox(
  context: CanvasRenderingContext2D,
  tile: Tile,
  affine: number[][],
  box: number[],
  colour: string,
  label: string,
  dashed: boolean,
): void {
  const n = box.length / 2;
  const { slice, axes } = inPlaneAxes(affine);
  let k = 0;
  if (n === 3) {
    k = Math.round(crosshairVox()[slice]);
    if (k < box[slice] || k >= box[slice + n]) return; // the box is not on this slice
  }
  const lo = [box[axes[0]] - 0.5, box[axes[1]] - 0.5];
  const hi = [box[axes[0] + n] - 0.5, box[axes[1] + n] - 0.5];
  const { rect } = regionOnTile(tile, affine, lo, hi, k, axes);
  context.save();
  context.strokeStyle = colour;
  context.lineWidth = 2;
  if (dashed) context.setLineDash([6, 4]);
  context.strokeRect(rect[0], rect[1], rect[2] - rect[0], rect[3] - rect[1]);
  context.font = "12px system-ui, sans-serif";
  context.fillStyle = colour;
  context.fillText(label, rect[0] + 2, Math.max(12, rect[1] - 4));
  context.restore();
}

let overlayQueued = false;
function drawOverlaySoon(): void {
  if (overlayQueued) return;
  overlayQueued = true;
  requestAnimationFrame(() => {
    overlayQueued = false;
    drawOverlay();
  });
}

/** Boxes (proposals of this finding dashed, the shown version solid, a new one yellow) and the gaze
 * heatmap's place, over NiiVue's axial tile. */
function drawOverlay(): void {
  if (overlay.width !== canvas.width || overlay.height !== canvas.height) {
    overlay.width = canvas.width;
    overlay.height = canvas.height;
  }
  const context = overlay.getContext("2d");
  if (!context) return;
  context.clearRect(0, 0, overlay.width, overlay.height);
  const c = current;
  const tile = nv.volumes.length ? axialTile(nv) : null;
  if (!c || !tile || !c.scan) {
    gazeImage.hidden = true;
    return;
  }
  const affine = affineOf(nv.volumes[0]);
  const colour = findingColour(c, c.finding.id);
  for (const p of proposalsOf(c, c.finding)) {
    if (p.box && p.box.length === 2 * (is2D ? 2 : 3)) {
      strokeBox(context, tile, affine, p.box, rgb(colour, 0.9), `proposal #${p.id} (${p.source})`, true);
    }
  }
  if (shownBox && !pendingBox) strokeBox(context, tile, affine, shownBox.box, rgb(colour), shownBox.label, false);
  if (pendingBox) strokeBox(context, tile, affine, pendingBox, "#ffd400", "new box (s saves)", false);
  if (drag) {
    context.save();
    context.strokeStyle = "#ffd400";
    context.lineWidth = 2;
    context.setLineDash([4, 3]);
    const [x0, y0] = drag.from;
    const [x1, y1] = drag.to;
    context.strokeRect(Math.min(x0, x1), Math.min(y0, y1), Math.abs(x1 - x0), Math.abs(y1 - y0));
    context.restore();
  }
  placeGaze(tile, affine, c);
}

function placeGaze(tile: Tile, affine: number[][], c: Case): void {
  if (!gazeOn || !is2D || !c.scan) {
    gazeImage.hidden = true;
    return;
  }
  const [nx, ny] = c.scan.shape;
  const { rect, flipX, flipY } = regionOnTile(tile, affine, [-0.5, -0.5], [nx - 0.5, ny - 0.5], 0, [0, 1]);
  const [left, top] = cssPoint(canvas, rect[0], rect[1]);
  const [right, bottom] = cssPoint(canvas, rect[2], rect[3]);
  Object.assign(gazeImage.style, {
    left: `${left}px`,
    top: `${top}px`,
    width: `${right - left}px`,
    height: `${bottom - top}px`,
    transform: `scale(${flipX ? -1 : 1}, ${flipY ? -1 : 1})`,
  });
  gazeImage.hidden = false;
}

overlay.addEventListener("pointerdown", (event) => {
  if (mode !== "box" || !current || !nv.volumes.length) return;
  const tile = axialTile(nv);
  const point = canvasPoint(canvas, event.clientX, event.clientY);
  if (!tile || !inTile(tile, ...point)) {
    say(is2D ? "Draw the box on the image." : "Draw the box on the axial view (the left tile).", "error");
    return;
  }
  overlay.setPointerCapture(event.pointerId);
  drag = { tile, from: point, to: point };
  event.preventDefault();
});
overlay.addEventListener("pointermove", (event) => {
  if (!drag) return;
  drag.to = canvasPoint(canvas, event.clientX, event.clientY);
  drawOverlaySoon();
});
overlay.addEventListener("pointerup", (event) => {
  if (!drag || !current) return;
  const done = drag;
  drag = null;
  done.to = canvasPoint(canvas, event.clientX, event.clientY);
  if (Math.hypot(done.to[0] - done.from[0], done.to[1] - done.from[1]) < 3) {
    drawOverlay();
    return;
  }
  try {
    needEditable();
    pendingBox = boxFromDrag(current, done.tile, done.from, done.to);
    changed("box");
    const depth = is2D ? "" : ` (slices ${pendingBox[2]}–${pendingBox[5] - 1})`;
    say(`Box [${pendingBox.join(", ")}]${depth}: s saves it (autosaved in ${AUTOSAVE_MS / 1000} s).`);
  } catch (err) {
    say(err instanceof Error ? err.message : String(err), "error");
  }
  drawOverlay();
});

// ---- gaze ------------------------------------------------------------------------------------------

function renderGazeChoices(c: Case): void {
  const select = el<HTMLSelectElement>("gaze-reader");
  select.replaceChildren();
  for (const g of c.gaze ?? []) {
    const option = document.createElement("option");
    option.value = g.heatmap_png;
    option.textContent = `gaze ${g.id}${g.reader ? ` (${g.reader})` : ""}`;
    select.append(option);
  }
  select.hidden = (c.gaze ?? []).length < 2;
}

function setGaze(on: boolean): void {
  gazeOn = on;
  el("gaze-toggle").classList.toggle("on", on);
  root.dataset.gaze = on ? "on" : "off";
  if (on && current) {
    const url = el<HTMLSelectElement>("gaze-reader").value || current.gaze?.[0]?.heatmap_png || "";
    if (gazeImage.getAttribute("src") !== url) gazeImage.src = url;
  }
  drawOverlay();
}

function toggleGaze(): void {
  const c = needCase();
  if (!is2D) throw new Error("Gaze heatmaps are shown on radiographs.");
  if (!(c.gaze ?? []).length) throw new Error("No eye-gaze recording of this image.");
  setGaze(!gazeOn);
}

// ---- saving and transitions --------------------------------------------------------------------------

function leaseLost(c: Case, reason: string): ShownError {
  if (c.reading) return readingLeaseLost(c, reason);
  const claim = button("Claim again", () =>
    void guarded(async () => {
      const claimed = (await postJson(`/api/tasks/${c.task.id}/claim/`, {})) as Case;
      c.task = claimed.task;
      say(`You hold task ${c.task.id} again: save (s) to keep your drawing.`, "ok");
    }),
  );
  return new ShownError(`Not saved — lease: ${reason}`, claim);
}

/** A reading's lease ran out: next-reading gives it back while nobody took it over (an expired reading is
 * still the reader's until then); else the reading went to another reader with a fresh start. */
function readingLeaseLost(c: Case, reason: string): ShownError {
  const again = button("Take it again", () =>
    void guarded(async () => {
      const response = await api(`/api/projects/${encodeURIComponent(slug)}/next-reading/`);
      const got = response.status === 204 ? null : ((await response.json()) as Case);
      if (got?.reading && c.reading && got.reading.id === c.reading.id) {
        c.reading = got.reading;
        renderTask(c);
        say(`You hold ${readingLabel(got.reading).toLowerCase()} again: save (s) to keep your drawing.`, "ok");
        return;
      }
      dirty = null; // the drawing belonged to a reading another reader now holds
      if (!got) {
        clearCase();
        say("Your reading went to another reader, and no other reading is waiting for you.", "error");
        return;
      }
      await openCase(got);
      const what = got.reading ? readingLabel(got.reading).toLowerCase() : `task ${got.task.id}`;
      say(`Your reading went to another reader: opened ${what} of finding ${got.finding.id} instead.`, "error");
    }),
  );
  return new ShownError(`Not saved — lease: ${reason}`, again);
}

async function saveNow(auto: boolean): Promise<void> {
  const c = needEditable();
  window.clearTimeout(autosaveTimer);
  setSaveState("saving…");
  const url = `${endpoint(c)}/annotations/`;
  const base = c.finding.current_version;
  // What changed; with no change (a second press of s) what the current version is, so that saving again
  // never turns a box into an empty mask.
  const box = dirty === "box" ? pendingBox : dirty === null && shownBox ? shownBox.box : null;
  let saved: Annotation;
  try {
    if (box) {
      saved = (await postJson(url, { base_version: base, kind: "box", box })) as Annotation;
    } else {
      const form = new FormData();
      form.append("kind", "mask");
      form.append("base_version", String(base));
      if (is2D) {
        form.append("mask", await bitmapToPng(nv), "mask.png");
      } else {
        const bytes = await nv.saveImage({ filename: "", isSaveDrawing: true, volumeByIndex: 0 });
        if (!(bytes instanceof Uint8Array)) throw new Error("Nothing to save: no scan or no drawing is open.");
        form.append("mask", new Blob([bytes as Uint8Array<ArrayBuffer>], { type: "application/octet-stream" }), "mask.nii");
      }
      saved = (await (await api(url, { method: "POST", body: form })).json()) as Annotation;
    }
  } catch (err) {
    setSaveState("not saved", "error");
    if (err instanceof ApiError && err.status === 409) {
      const body = err.body as { current?: Annotation | null; yours?: number; lease?: string };
      if (body.current !== undefined) {
        const theirs = body.current;
        if (c.reading) {
          // A reading conflicts only with its reader's own saves (another tab, another window).
          throw new ShownError(
            `Your reading has version ${theirs ? theirs.version : 0}${theirs ? ` (saved ${theirs.created_at})` : ""} ` +
              `since the one you edited (version ${body.yours ?? base}) — reload.`,
            button("Reload", () => void guarded(reload)),
          );
        }
        throw new ShownError(
          `Someone saved version ${theirs ? theirs.version : 0}${theirs?.author ? ` (${theirs.author}, ${theirs.created_at})` : ""} ` +
            `since yours (you edited version ${body.yours ?? base}) — reload.`,
          button("Reload", () => void guarded(reload)),
        );
      }
      if (body.lease) throw leaseLost(c, body.lease);
    }
    if (err instanceof ApiError && err.status === 400) {
      throw new ShownError(`Not saved — ${describe(err.body)}`);
    }
    throw err;
  }
  c.versions.push(saved);
  c.finding.current_version = saved.version;
  const sibling = c.findings.find((f) => f.id === c.finding.id);
  if (sibling) sibling.current_version = saved.version;
  dirty = null;
  if (saved.kind === "box" && saved.box) {
    // The version is the box now: the drawing starts empty, as when the case is opened again.
    shownBox = { box: saved.box, label: `v${saved.version} box` };
    pendingBox = null;
    nv.createEmptyDrawing();
    history.reset(nv);
    root.dataset.maskVoxels = "0";
    drawOverlay();
  } else {
    shownBox = null;
    drawOverlay();
  }
  renderTask(c);
  renderFindings(c);
  setSaveState(`saved v${saved.version}`, "ok");
  const size = saved.kind === "box" ? `box [${(saved.box ?? []).join(", ")}]` : `${saved.voxels ?? 0} voxels`;
  say(`${auto ? "Autosaved" : "Saved"} version ${saved.version} (${size}).`, "ok");
}

async function save(): Promise<void> {
  await saveNow(false);
}

async function transition(action: "submit" | "approve" | "return", data: Record<string, string>): Promise<void> {
  const c = needCase();
  if (decided) throw new Error(doneText(c));
  window.clearTimeout(autosaveTimer);
  if (action === "submit" && data.decision === "accept" && dirty) await saveNow(true); // accept what is drawn
  if (c.reading) {
    await submitReading(c, data);
    return;
  }
  const task = (await postJson(`/api/tasks/${c.task.id}/${action}/`, data)) as Task;
  decided = true;
  dirty = null;
  root.dataset.state = "done";
  const what = action === "submit" ? `Submitted (${data.decision})` : action === "approve" ? "Approved" : "Returned";
  say(`${what}: task ${task.id} is now at ${task.stage}. Press n for the next case.`, "ok");
}

/** Accept or reject the user's reading; the last reading of a finding sends the consensus to review. */
async function submitReading(c: Case, data: Record<string, string>): Promise<void> {
  let reading: Reading;
  try {
    reading = (await postJson(`/api/readings/${c.reading?.id}/submit/`, data)) as Reading;
  } catch (err) {
    if (err instanceof ApiError && err.status === 409 && (err.body as { lease?: string }).lease) {
      throw readingLeaseLost(c, (err.body as { lease: string }).lease);
    }
    throw err;
  }
  c.reading = reading;
  decided = true;
  dirty = null;
  root.dataset.state = "done";
  renderTask(c);
  const after =
    reading.stage === "review"
      ? "that was the finding's last reading: the readers' consensus goes to a radiologist"
      : "the finding waits for its other readers";
  say(`Submitted (${data.decision}): ${readingLabel(reading).toLowerCase()} is in; ${after}. Press n for the next case.`, "ok");
}

async function returnTask(): Promise<void> {
  const comment = commentBox.value.trim();
  if (!comment) {
    commentBox.focus();
    throw new Error("Returning a task needs a comment for the annotator.");
  }
  await transition("return", { comment });
}

async function toggleShowing(): Promise<void> {
  const c = needCase();
  if (role !== "radiologist") throw new Error("The proposal / result toggle is for reviewers.");
  const proposal = proposalVersion(c);
  const annotator = annotatorVersion(c);
  if (!proposal && annotator && c.agreement) {
    say(`This finding had no proposal: there is only ${resultName(c)} to show.`);
    return;
  }
  if (!proposal || !annotator || proposal.id === annotator.id) {
    say("The annotator kept the proposal: there is only one version to show.");
    return;
  }
  showing = showing === "annotator" ? "proposal" : "annotator";
  renderShowing(c);
  await showVersion(showing === "proposal" ? proposal : annotator);
  const v = showing === "proposal" ? proposal : annotator;
  say(`Showing ${showing === "proposal" ? "the proposal" : resultName(c)} (v${v.version}, ${v.voxels ?? 0} voxels): v switches.`, "ok");
}

// ---- controls --------------------------------------------------------------------------------------

function windowPreset(name: string): void {
  const volume = nv.volumes[0];
  if (!volume || !current?.scan || current.scan.modality !== "CT" || is2D) return;
  [volume.cal_min, volume.cal_max] = WINDOWS[name];
  nv.updateGLVolume();
  root.dataset.window = name;
}

function setOpacity(value: number): void {
  opacity.value = String(Math.max(0, Math.min(100, value)));
  nv.setDrawOpacity(Number(opacity.value) / 100);
  el("opacity-value").textContent = `${opacity.value}%`;
}

function toggleHelp(): void {
  const help = el("help");
  help.hidden = !help.hidden;
}

const actions: Record<string, () => Promise<void>> = {
  next: nextCase,
  save,
  accept: () => transition("submit", { decision: "accept", comment: commentBox.value }),
  reject: () => transition("submit", { decision: "reject", comment: commentBox.value }),
  approve: () => transition("approve", { comment: commentBox.value }),
  return: returnTask,
  reload,
  "prev-finding": () => stepFinding(-1),
  "next-finding": () => stepFinding(1),
  "add-missing": addMissing,
  versions: toggleShowing,
};
const toggles: Record<string, () => void> = {
  paint: () => (needEditable(), setMode(mode === "paint" ? "view" : "paint")),
  erase: () => (needEditable(), setMode(mode === "erase" ? "view" : "erase")),
  fill: () => (needEditable(), setMode(mode === "fill" ? "view" : "fill")),
  box: () => (needEditable(), setMode(mode === "box" ? "view" : "box")),
  holes: fillHoles,
  undo,
  redo,
  missing: showMissingForm,
  gaze: toggleGaze,
};
const global: Record<string, () => void> = {
  help: toggleHelp,
  "opacity-down": () => setOpacity(Number(opacity.value) - 10),
  "opacity-up": () => setOpacity(Number(opacity.value) + 10),
  lung: () => windowPreset("lung"),
  mediastinum: () => windowPreset("mediastinum"),
  bone: () => windowPreset("bone"),
  escape: () => {
    el("help").hidden = true;
    hideMissingForm();
    if (current && mode !== "view") setMode("view");
  },
};
const ANNOTATOR_KEYS: Record<string, string> = {
  n: "next", s: "save", a: "accept", r: "reject", p: "paint", e: "erase", f: "fill", h: "holes", b: "box",
  z: "undo", y: "redo", m: "missing",
};
const RADIOLOGIST_KEYS: Record<string, string> = { n: "next", a: "approve", r: "return", v: "versions" };
const COMMON_KEYS: Record<string, string> = {
  "[": "prev-finding", "]": "next-finding", g: "gaze", "?": "help", "-": "opacity-down", "=": "opacity-up",
  "+": "opacity-up", "1": "lung", "2": "mediastinum", "3": "bone", escape: "escape",
};

function trigger(name: string): void {
  if (global[name]) {
    global[name]();
  } else if (toggles[name]) {
    try {
      if (!current) throw new Error("Open a case first (Next case, key n).");
      toggles[name]();
    } catch (err) {
      say(err instanceof Error ? err.message : String(err), "error");
    }
  } else if (name === "save" && autosaving) {
    // An autosave is under way: wait for it; save again only if something changed since.
    void autosaving.then(() => {
      if (dirty) void guarded(actions.save);
      else if (current && root.dataset.message !== "error") say(`Saved version ${current.finding.current_version}.`, "ok");
    });
  } else if (actions[name]) void guarded(actions[name]);
}

for (const b of root.querySelectorAll<HTMLButtonElement>("button[data-action]")) {
  // Keep the report's text selection: the missing-finding button reads it.
  if (b.dataset.action === "missing") b.addEventListener("mousedown", (event) => event.preventDefault());
  b.addEventListener("click", () => trigger(b.dataset.action ?? ""));
}
for (const b of root.querySelectorAll<HTMLButtonElement>("button[data-window]")) {
  b.addEventListener("click", () => windowPreset(b.dataset.window ?? "lung"));
}
opacity.addEventListener("input", () => setOpacity(Number(opacity.value)));
el<HTMLSelectElement>("gaze-reader").addEventListener("change", () => setGaze(gazeOn));
missingForm.addEventListener("submit", (event) => {
  event.preventDefault();
  void guarded(addMissing);
});
el("missing-cancel").addEventListener("click", hideMissingForm);
missingForm.addEventListener("keydown", (event) => {
  if (event.key === "Escape") hideMissingForm();
});

document.addEventListener("keydown", (event) => {
  const target = event.target as HTMLElement | null;
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (target && (target.tagName === "TEXTAREA" || target.tagName === "SELECT" || target.isContentEditable)) return;
  if (target instanceof HTMLInputElement && !["range", "checkbox", "button"].includes(target.type)) return;
  const key = event.key === "Escape" ? "escape" : event.key.length === 1 ? event.key : "";
  let name: string | undefined;
  if (key === "Z") name = role === "annotator" ? "redo" : undefined; // shift+z
  else {
    const lower = key.toLowerCase();
    name = (role === "radiologist" ? RADIOLOGIST_KEYS : ANNOTATOR_KEYS)[lower] ?? COMMON_KEYS[lower];
  }
  if (!name) return;
  event.preventDefault();
  trigger(name);
});

// NiiVue: a stroke ended (pen, eraser, filled outline): a new state of the drawing.
nv.onDrawingChanged = (action: string) => {
  if (action !== "draw" || !current) return;
  history.recordFromRing(nv);
  changed("mask");
};
// Every frame NiiVue draws (slice change, resize, zoom) moves the overlay with it.
const drawScene = nv.drawScene.bind(nv);
nv.drawScene = () => {
  const out = drawScene();
  drawOverlaySoon();
  return out;
};
new ResizeObserver(drawOverlaySoon).observe(el("viewer-box"));
// Working on the image gives the keys back to the page (after typing the box depth, s saves).
el("viewer-box").addEventListener(
  "pointerdown",
  () => {
    const active = document.activeElement;
    if (active instanceof HTMLInputElement || active instanceof HTMLSelectElement) active.blur();
  },
  { capture: true },
);
depthInput.addEventListener("keydown", (event) => {
  if (event.key === "Enter") depthInput.blur();
});

root.classList.add(`role-${role}`);
setOpacity(50);
nv.attachToCanvas(canvas)
  .then(() => {
    nv.setSliceType(nv.sliceTypeMultiplanar);
    root.dataset.state = "idle";
    say(
      reads
        ? `Ready: press n (Next case) to take your next reading (${readersPerFinding} readers per finding); ? lists the keys.`
        : `Ready: press n (Next case) to open the next ${stage} task; ? lists the keys.`,
    );
  })
  .catch((err: unknown) => say(`The image viewer could not start (WebGL2 needed): ${String(err)}`, "error"));

// For the browser tests and the console: the viewer and the open case.
(window as unknown as { groundlabReview: object }).groundlabReview = {
  nv,
  current: () => current,
  history,
};
