// What a case says about itself: its versions (the proposal's, the annotator's, the consensus), the label
// of a reading, where its saves go, each finding's colour (by its place in the study's list) and which
// findings the user can open.
import { readersPerFinding, role } from "./page";
import type { Annotation, Case, Finding, Proposal, Reading, Span, Submission } from "./types";

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

export function versionOf(c: Case, number: number): Annotation | undefined {
  return c.versions.find((v) => v.version === number);
}

/** The version made from a region proposal (or an authorless version 1): what the annotator started from.
 * None when the finding had no proposal: a version 1 someone drew is theirs, not a proposal. */
export function proposalVersion(c: Case): Annotation | undefined {
  const first = versionOf(c, 1);
  return c.versions.find((v) => v.region_proposal_id != null) ?? (first && !first.author && !c.agreement ? first : undefined);
}

/** The annotator's newest version (the current one when they saved none: they kept the proposal). After
 * several readers: the consensus, or an annotator's correction of it (a returned consensus). */
export function annotatorVersion(c: Case): Annotation | undefined {
  const consensus = c.agreement?.consensus_version ?? null;
  const mine = c.versions.filter((v) => v.author != null && (consensus == null || v.version > consensus));
  return mine.length ? mine[mine.length - 1] : versionOf(c, consensus ?? c.finding.current_version);
}

/** What annotatorVersion is called on the screen. */
export function resultName(c: Case): string {
  const consensus = c.agreement?.consensus_version;
  return consensus != null && annotatorVersion(c)?.version === consensus ? "the consensus" : "the annotator's result";
}

/** "Reading k of N" (N: the project's readers per finding, at least k: the project may have changed N). */
export function readingLabel(r: Reading): string {
  return `Reading ${r.index} of ${Math.max(readersPerFinding, r.index)}`;
}

/** Where the case's saves and decision go: the user's reading, or the task. */
export function endpoint(c: Case): string {
  return c.reading ? `/api/readings/${c.reading.id}` : `/api/tasks/${c.task.id}`;
}

export function doneText(c: Case): string {
  if (c.readOnly) return `${c.readOnly} Press n for your next case.`;
  return c.reading ? "This reading is submitted: press n for the next case." : "This task is done: press n for the next case.";
}

export function findingColour(c: Case, findingId: number): [number, number, number] {
  const index = Math.max(0, c.findings.findIndex((f) => f.id === findingId));
  return PALETTE[index % PALETTE.length];
}

export const rgb = (colour: number[], alpha = 1): string => `rgba(${colour[0]}, ${colour[1]}, ${colour[2]}, ${alpha})`;

export function proposalsOf(c: Case, f: Finding): Proposal[] {
  // The proposal the finding started from, unless it was cut to the finding's side (its box spans both).
  const start = f.id === c.finding.id && !c.start?.components ? c.start?.proposal : undefined;
  return (c.proposals ?? []).filter((p) => (p.code === f.code && f.code !== "") || p.id === start);
}

/** A finding's mentions in its report: its spans, else its own one. */
export function spansOf(f: Finding): Span[] {
  if (f.spans && f.spans.length) return f.spans;
  return f.start != null && f.end != null ? [{ section: f.section, start: f.start, end: f.end, text: f.text }] : [];
}

/** What the findings list says a finding is: its code in words with the code, side, place and size. */
export function findingWhat(f: Finding): string {
  const named = f.code_name && f.code_name.toLowerCase() !== f.code.toLowerCase(); // "2d", not "Cardiomegaly"
  const name = named ? `${f.code_name} (${f.code})` : f.code || "no code";
  const place = [f.laterality && !(f.location ?? "").includes(f.laterality) ? f.laterality : "", f.location ?? ""]
    .filter(Boolean)
    .join(" ");
  const size = f.size_mm != null ? `${f.size_mm} mm` : "";
  const mentions = spansOf(f).length > 1 ? `${spansOf(f).length} mentions` : "";
  return [name, place, size, mentions].filter(Boolean).join(" · ");
}

/** The annotator's submission in words for the radiologist: decision, comment, and the change from the
 * proposal (none when the finding had no proposal: then nothing was "kept"). */
export function submissionText(s: Submission): string[] {
  const lines = [`${s.annotator ?? "The annotator"} decided: ${s.decision || "?"}${s.comment ? ` — “${s.comment}”` : " (no comment)"}`];
  const ch = s.change;
  if (!ch || ch.proposal == null) lines.push("No proposal: the annotator drew the finding from scratch.");
  else if (ch.kept_proposal) lines.push(`Kept the proposal (v${ch.proposal}, ${ch.proposal_voxels ?? 0} voxels) unchanged.`);
  else {
    const dice = ch.dice != null ? `Dice ${ch.dice.toFixed(2)} against the proposal` : "not comparable with the proposal";
    const diff = ch.voxels_added != null ? `, +${ch.voxels_added} / −${ch.voxels_removed} voxels` : "";
    lines.push(`Changed the proposal (v${ch.proposal} → v${ch.result}): ${dice}${diff}.`);
  }
  return lines;
}

/** A finding still with its readers (several readers per finding): its task opens after the consensus. */
export const beingRead = (f: Finding): boolean => f.stage === "read";

export function canOpen(f: Finding): boolean {
  return f.task_id != null && f.stage != null && workStages().includes(f.stage);
}

/** The stages the user works on (claims): radiologists review and QA, annotators and managers annotate. */
export function workStages(): string[] {
  return role === "radiologist" ? ["review", "qa"] : ["annotate"];
}

/** Why the user cannot work on a case now (its stage is not theirs), or "" when they may claim it. */
export function whyReadOnly(c: Case): string {
  const stage = c.task.stage;
  if (stage === "accepted" || stage === "rejected") {
    return `Finding ${c.finding.id} is ${c.finding.status} (task ${c.task.id} is closed): opened read-only.`;
  }
  if (stage === "read") return `Finding ${c.finding.id} is being read by its readers: opened read-only.`;
  if (workStages().includes(stage)) return "";
  const who = stage === "annotate" ? "the annotators" : "the radiologists";
  const yours = role === "radiologist" ? "review and QA" : "annotate";
  return `Task ${c.task.id} is with ${who} (stage ${stage}; you work on ${yours}): opened read-only.`;
}

/** The review screen's address of a case (README "Links to a case"): ?task=<id>, kept for a reading too
 * (the page finds the user's reading of that task's finding). */
export function caseLink(c: Case | null): string {
  const url = new URL(window.location.href);
  url.searchParams.delete("task");
  url.searchParams.delete("finding");
  if (c) url.searchParams.set("task", String(c.task.id));
  return url.pathname + url.search + url.hash;
}
