// What a case says about itself: its versions (the proposal's, the annotator's, the consensus), the label
// of a reading, where its saves go, each finding's colour (by its place in the study's list) and which
// findings the user can open.
import { readersPerFinding, role } from "./page";
import type { Annotation, Case, Finding, Proposal, Reading } from "./types";

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

/** The version made from a region proposal (or version 1): what the annotator started from. After several
 * readers, version 1 may be a reader's own: then only a proposal's version is one. */
export function proposalVersion(c: Case): Annotation | undefined {
  const first = versionOf(c, 1);
  return c.versions.find((v) => v.region_proposal_id != null) ?? (c.agreement && first?.author ? undefined : first);
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

/** A finding still with its readers (several readers per finding): its task opens after the consensus. */
export const beingRead = (f: Finding): boolean => f.stage === "read";

export function canOpen(f: Finding): boolean {
  const open = role === "radiologist" ? ["review", "qa"] : ["annotate"];
  return f.task_id != null && f.stage != null && open.includes(f.stage);
}
