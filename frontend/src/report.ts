// The case's text: the report with every finding's span marked, the findings of the study (click one to
// open its task), the task or reading header, which version a radiologist is shown, and the form for a
// finding missing from the list (its words selected in the report).
import {
  annotatorVersion,
  beingRead,
  canOpen,
  findingColour,
  findingWhat,
  proposalVersion,
  proposalsOf,
  readingLabel,
  resultName,
  rgb,
  spansOf,
} from "./cases";
import { el, missingForm, role, root } from "./page";
import { renderAgreement, renderVersions } from "./panels";
import { guarded, needCase, state } from "./state";
import type { Case, Finding } from "./types";

/** What a click on another finding of the list opens (navigation.ts's openFinding: review.ts sets it). */
let openFinding: (f: Finding) => Promise<void> = async () => {};

export function onOpenFinding(open: (f: Finding) => Promise<void>): void {
  openFinding = open;
}

/** What is added to each item of the versions list (versions.ts: open and restore; review.ts sets it). */
let decorateVersions: (c: Case) => void = () => {};

export function onRenderVersions(decorate: (c: Case) => void): void {
  decorateVersions = decorate;
}

export function renderReport(c: Case): void {
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
    // Every mention of every finding (a finding named in Findings and in Impression has two).
    const spans = c.findings
      .flatMap((f) => spansOf(f).map((s) => ({ f, s })))
      .filter(({ s }) => s.section === section && s.end > s.start)
      .sort((a, b) => a.s.start - b.s.start);
    let at = 0;
    for (const { f, s } of spans) {
      const [start, end] = [s.start, s.end];
      if (start < at) continue; // overlapping spans: the first one wins
      para.append(text.slice(at, start));
      const mark = document.createElement("mark");
      mark.textContent = text.slice(start, end);
      mark.dataset.finding = String(f.id);
      mark.title = `${findingWhat(f)} · ${f.status}`;
      mark.style.borderBottom = `3px solid ${rgb(findingColour(c, f.id))}`;
      if (f.id === c.finding.id) mark.className = "current";
      para.append(mark);
      at = end;
    }
    para.append(text.slice(at));
    box.append(head, para);
  }
}

export function renderFindings(c: Case): void {
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
    meta.textContent = ` ${findingWhat(f)} · ${where} · ${f.source || "?"} · ${f.status}${version}`;
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
      if (state.current && f.id !== state.current.finding.id) void guarded(() => openFinding(f));
    });
    list.append(item);
  }
  renderVersions(c);
  decorateVersions(c);
  renderAgreement(c);
}

export function renderTask(c: Case): void {
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

export function renderShowing(c: Case): void {
  const label = el("showing");
  if (role !== "radiologist") {
    label.textContent = "";
    return;
  }
  const v = state.showing === "proposal" ? proposalVersion(c) : annotatorVersion(c);
  label.textContent = v
    ? `Showing ${state.showing === "proposal" ? "the proposal" : resultName(c)}: v${v.version} ${v.kind}${v.author ? ` by ${v.author}` : ""}`
    : "No version to show";
  root.dataset.showing = state.showing;
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

export function showMissingForm(): void {
  needCase();
  if (role !== "annotator") throw new Error("Only annotators add findings.");
  const picked = reportSelection();
  state.missingSpan = picked ? { section: picked.section, start: picked.start, end: picked.end } : null;
  const text = el<HTMLInputElement>("missing-text");
  text.value = picked?.text ?? "";
  el<HTMLInputElement>("missing-code").value = "";
  el("missing-span").textContent = picked
    ? `from the report (${picked.section}, characters ${picked.start}–${picked.end})`
    : "tip: select its words in the report first to link them";
  missingForm.hidden = false;
  text.focus();
}

export function hideMissingForm(): void {
  missingForm.hidden = true;
  state.missingSpan = null;
}
