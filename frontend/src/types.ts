// The review API's payloads as the review screen reads them (README "Review"), and the screen's modes.

export type Annotation = {
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

/** One mention of a finding in its report (Findings and Impression may both name it). */
export type Span = { section: string; start: number; end: number; text: string };

export type Finding = {
  id: number;
  study_id: number;
  scan_id: number | null;
  section: string;
  start: number | null;
  end: number | null;
  text: string;
  code: string;
  /** The code in words ("2d": "nodule / mass"). */
  code_name?: string;
  location?: string;
  laterality?: string;
  size_mm?: number | null;
  spans?: Span[];
  status: string;
  source: string;
  current_version: number;
  stage: string | null;
  task_id?: number | null;
};

export type Proposal = {
  id: number;
  source: string;
  code: string;
  label: string;
  box: number[] | null;
  pixels: number;
  score: number;
  confidence: number | null;
};

/** A sentence of a gaze recording's transcript as the newest gaze label run made it: spoken ``start``..``end``
 * s, its gaze ``window`` (s; starts before the speech by the run's lead), the findings it states and the
 * study's findings they are tied to, and its window's heatmap. */
export type GazeSentence = {
  index: number;
  text: string;
  start: number;
  end: number;
  window: [number, number];
  fixation_count: number;
  anatomies: string[];
  assigned_by: string;
  findings: { code: string; assertion: string; phrase: string }[];
  finding_ids: number[];
  heatmap_id: number | null;
  heatmap_png: string | null;
};

/** An anatomy of a gaze recording: dwell (s, and share of the recording's), its heatmap. */
export type GazeAnatomy = {
  anatomy: string;
  dwell_s: number;
  dwell_share: number;
  fixation_count: number;
  time_to_first_s: number | null;
  sentence_indexes: number[];
  caption: string;
  heatmap_id: number | null;
  heatmap_png: string | null;
  heatmap_source: string;
};

export type GazeLabels = {
  run_id: number;
  preset: string;
  method: string;
  lead_s: number | null;
  problems: string[];
  recording: { heatmap_id: number | null; heatmap_png: string | null; fixation_count: number };
  sentences: GazeSentence[];
  anatomies: GazeAnatomy[];
};

/** An eye-gaze recording of the case's radiograph: ``heatmap_png`` the whole recording's heatmap computed
 * now; ``labels`` what the newest gaze label run made of it (null before one: ``labels_note`` says why). */
export type Gaze = { id: number; reader: string; heatmap_png: string; labels?: GazeLabels | null; labels_note?: string };

/** An anatomy proposal of the case's scan, shown as a context layer (``context``: of the finding's place). */
export type Layer = { id: number; label: string; organ: string; source: string; context: boolean };

/** Which proposal the finding's version 1 started from and the rule that chose it (annotation/proposals/);
 * ``components``: [kept, of] when the proposal was cut to the finding's side or zone. */
export type Start = { proposal: number; rule: string; components?: [number, number] };

/** Where the finding is: organ, side, zone (part) and lobe, from its report words. */
export type Place = { organ: string; side: string; part: string; lobe: string };

/** One reader's reading of a finding (the API's ReadingOut); ``stage`` is the finding's task's. */
export type Reading = {
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

export type AgreementReader = {
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
export type Agreement = {
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

export type Task = {
  id: number;
  stage: string;
  decision: string;
  returned_comment: string;
  assignee: string | null;
  annotated_by?: string | null;
  reviewed_by?: string | null;
};

/** What changed from the proposal when the annotator submitted (annotation/versions.py version_change). */
export type Change = {
  proposal: number | null;
  proposal_voxels: number | null;
  result: number | null;
  result_voxels: number | null;
  kept_proposal: boolean;
  dice: number | null;
  voxels_added: number | null;
  voxels_removed: number | null;
};

/** The annotator's submission as the radiologists see it (review and QA). */
export type Submission = { annotator: string | null; decision: string; comment: string; at: string; change: Change | null };

export type Case = {
  task: Task;
  finding: Finding;
  versions: Annotation[];
  scan: { id: number; shape: number[]; ndim?: number; modality: string } | null;
  report: { id: number; sections: Record<string, string> } | null;
  findings: Finding[];
  proposals?: Proposal[];
  gaze?: Gaze[];
  layers?: Layer[];
  start?: Start | null;
  place?: Place;
  /** Present when the case is the user's reading (next-reading, a reading's detail). */
  reading?: Reading;
  agreement?: Agreement | null;
  submission?: Submission | null;
  /** Set by the screen (navigation.ts), not the API: why this case is open read-only (no claim). */
  readOnly?: string;
};

export type Mode = "view" | "paint" | "erase" | "fill" | "box" | "click" | "grow";

export type Showing = "annotator" | "proposal";
