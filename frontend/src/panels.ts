// The panels beside the report: the finding's versions (tagged for a radiologist: the proposal, the
// annotator's result, the consensus, each reader's reading) and the readers' agreement after a consensus.
import { annotatorVersion, proposalVersion, submissionText } from "./cases";
import { el, role } from "./page";
import type { Case } from "./types";

export function renderVersions(c: Case): void {
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
      if (proposal && annotator && v.id === proposal.id && proposal.id === annotator.id && !agreement) tags.push("kept by the annotator");
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
  renderSubmission(c);
}

/** For radiologists (review and QA): the annotator's decision, comment and change from the proposal. */
export function renderSubmission(c: Case): void {
  const box = el("submission");
  const s = role === "radiologist" && !c.reading ? c.submission : null;
  box.hidden = !s;
  box.replaceChildren();
  if (!s) return;
  const head = document.createElement("h2");
  head.textContent = c.task.stage === "qa" ? `QA · reviewed by ${c.task.reviewed_by ?? "?"}` : "The annotator's submission";
  box.append(head);
  for (const line of submissionText(s)) {
    const p = document.createElement("p");
    p.textContent = line;
    box.append(p);
  }
}

const fixed = (value: number | null | undefined): string => (value == null ? "—" : value.toFixed(2));

/** The readers' agreement after a consensus (any case whose payload has one; never a reading's). */
export function renderAgreement(c: Case): void {
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
