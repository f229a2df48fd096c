// Eye gaze in context (README "Review"): over a radiograph, the heatmap of a reader's gaze (key g) and,
// beside it, the gaze panel: the recording's transcript as sentences with their times and the anatomies
// with their dwell, from the newest gaze label run (the case payload's gaze[].labels, annotation/api/
// case_gaze.py). Choosing a sentence shows the heatmap of its gaze window and marks the sentence and the
// findings it states; choosing an anatomy shows that anatomy's heatmap; "whole recording" is the default.
// A legend says what is shown (and the colour scale: low → high fixation density); a slider sets the
// heatmap's opacity. The chosen item is marked with text and aria-current, not by colour alone.
import { cssPoint, regionOnTile, type Tile } from "./geometry";
import { drawOverlay } from "./overlay";
import { canvas, el, gazeImage, root, say } from "./page";
import { needCase, state } from "./state";
import type { Case, Gaze, GazeAnatomy, GazeSentence } from "./types";

type Choice = { kind: "whole" } | { kind: "sentence"; index: number } | { kind: "anatomy"; anatomy: string };

let recordingId: number | null = null;
let choice: Choice = { kind: "whole" };

/** The recording the panel shows: the one chosen in the reader select, else the case's first. */
function recording(c: Case | null): Gaze | null {
  const all = c?.gaze ?? [];
  return all.find((g) => g.id === recordingId) ?? all[0] ?? null;
}

const secs = (s: number): string => `${Math.max(0, s).toFixed(1)}`;
const anatomyName = (name: string): string => name.replace(/_/g, " ");
const clip = (text: string, n = 48): string => (text.length > n ? `${text.slice(0, n - 1).trimEnd()}…` : text);

function chosenSentence(g: Gaze): GazeSentence | undefined {
  const chosen = choice;
  return chosen.kind === "sentence" ? g.labels?.sentences.find((s) => s.index === chosen.index) : undefined;
}

function chosenAnatomy(g: Gaze): GazeAnatomy | undefined {
  const chosen = choice;
  return chosen.kind === "anatomy" ? g.labels?.anatomies.find((a) => a.anatomy === chosen.anatomy) : undefined;
}

/** What the overlay shows for the current choice: the heatmap's URL, the legend's words and a key for
 * tests (``#review[data-gaze-shown]``). A choice the recording lacks falls back to the whole recording. */
function shown(g: Gaze): { url: string; text: string; key: string } {
  const sentence = chosenSentence(g);
  if (sentence?.heatmap_png) {
    const [from, to] = sentence.window;
    return {
      url: sentence.heatmap_png,
      text: `sentence ${sentence.index + 1}: “${clip(sentence.text)}” spoken ${secs(sentence.start)}–${secs(sentence.end)} s, gaze ${secs(from)}–${secs(to)} s (${sentence.fixation_count} fixations)`,
      key: `sentence:${sentence.index}`,
    };
  }
  const anatomy = chosenAnatomy(g);
  if (anatomy?.heatmap_png) {
    return {
      url: anatomy.heatmap_png,
      text: `anatomy: ${anatomyName(anatomy.anatomy)}, ${anatomy.dwell_s.toFixed(1)} s dwell, ${Math.round(100 * anatomy.dwell_share)}%`,
      key: `anatomy:${anatomy.anatomy}`,
    };
  }
  const whole = g.labels?.recording;
  const fixations = whole ? `, ${whole.fixation_count} fixations` : "";
  return {
    url: whole?.heatmap_png ?? g.heatmap_png,
    text: `whole recording${g.reader ? ` (${g.reader})` : ""}${fixations}`,
    key: "whole",
  };
}

// ---- the heatmap over the image -----------------------------------------------------------------------

/** The heatmap's place: the image's rectangle on NiiVue's tile (called by overlay.ts on every draw). */
export function placeGaze(tile: Tile, affine: number[][], c: Case): void {
  if (!state.gazeOn || !state.is2D || !c.scan) {
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

export function setGaze(on: boolean): void {
  state.gazeOn = on;
  el("gaze-toggle").classList.toggle("on", on);
  el("gaze-toggle").setAttribute("aria-pressed", String(on));
  root.dataset.gaze = on ? "on" : "off";
  const g = recording(state.current);
  if (!g) el("gaze-box").hidden = true; // no case (the queue is empty) or no recording
  else {
    const now = shown(g);
    if (on && gazeImage.getAttribute("src") !== now.url) {
      delete root.dataset.gazeLoaded;
      el("gaze-shown").dataset.loading = ""; // "(loading…)" until the heatmap is there
      gazeImage.src = now.url;
    }
    root.dataset.gazeShown = now.key;
    el("gaze-shown").textContent = on ? `Shown: ${now.text}` : `Hidden (g or a choice below shows it): ${now.text}`;
  }
  drawOverlay();
}

export function toggleGaze(): void {
  const c = needCase();
  if (!state.is2D) throw new Error("Gaze heatmaps are shown on radiographs.");
  if (!(c.gaze ?? []).length) throw new Error("No eye-gaze recording of this image.");
  setGaze(!state.gazeOn);
}

/** Show ``next`` (a sentence's, an anatomy's or the whole recording's heatmap) and mark it. */
function choose(next: Choice): void {
  choice = next;
  markChoice();
  setGaze(true);
}

// ---- the panel --------------------------------------------------------------------------------------

function item(label: string, parts: [string, string][], onChoose: () => void, disabled = false): HTMLLIElement {
  const li = document.createElement("li");
  const b = document.createElement("button");
  b.type = "button";
  b.className = "gaze-item";
  b.disabled = disabled;
  for (const [cls, text] of parts) {
    const span = document.createElement("span");
    span.className = cls;
    span.textContent = text;
    b.append(span, " ");
  }
  const mark = document.createElement("span");
  mark.className = "gaze-mark";
  mark.textContent = "◀ chosen";
  b.append(mark);
  b.setAttribute("aria-label", label);
  b.addEventListener("click", onChoose);
  li.append(b);
  return li;
}

function findingNames(c: Case, ids: number[]): string {
  return ids
    .map((id) => c.findings.find((f) => f.id === id))
    .filter((f) => f != null)
    .map((f) => f.code_name || f.code || f.text)
    .join(", ");
}

function renderPanel(c: Case, g: Gaze | null): void {
  const box = el("gaze-box");
  box.hidden = !state.is2D || g == null;
  const sentences = el("gaze-sentences");
  const anatomies = el("gaze-anatomies");
  sentences.replaceChildren();
  anatomies.replaceChildren();
  if (!g) return;
  const labels = g.labels;
  el("gaze-note").textContent = labels
    ? `Gaze label run ${labels.run_id} (${labels.preset || labels.method}, gaze leads speech by ${labels.lead_s ?? "?"} s)` +
      (labels.problems.length ? `; problems: ${labels.problems.join("; ")}` : "")
    : (g.labels_note ?? "");
  el("gaze-lists").hidden = !labels;
  const whole = item("Whole recording", [["gaze-text", "Whole recording"]], () => choose({ kind: "whole" }));
  whole.firstElementChild?.setAttribute("data-gaze-choice", "whole");
  el("gaze-whole").replaceChildren(whole);
  if (!labels) return;
  for (const s of labels.sentences) {
    const tied = findingNames(c, s.finding_ids);
    const where = [s.anatomies.map(anatomyName).join(", "), tied ? `finding: ${tied}` : ""].filter(Boolean).join(" · ");
    const li = item(
      `Sentence ${s.index + 1}, ${secs(s.start)} to ${secs(s.end)} seconds: ${s.text}${tied ? `; states ${tied}` : ""}`,
      [
        ["gaze-time", `${secs(s.start)}–${secs(s.end)} s`],
        ["gaze-text", s.text],
        ["gaze-meta", where],
      ],
      () => choose({ kind: "sentence", index: s.index }),
      !s.heatmap_png,
    );
    li.firstElementChild?.setAttribute("data-sentence", String(s.index));
    sentences.append(li);
  }
  for (const a of labels.anatomies) {
    const pct = Math.round(100 * a.dwell_share);
    const first = a.time_to_first_s != null ? `, first at ${secs(a.time_to_first_s)} s` : "";
    const li = item(
      `Anatomy ${anatomyName(a.anatomy)}: ${a.dwell_s.toFixed(1)} seconds dwell, ${pct} percent${first}`,
      [
        ["gaze-text", anatomyName(a.anatomy)],
        ["gaze-time", `${a.dwell_s.toFixed(1)} s · ${pct}%${first}`],
      ],
      () => choose({ kind: "anatomy", anatomy: a.anatomy }),
      !a.heatmap_png,
    );
    const bar = document.createElement("span");
    bar.className = "gaze-bar";
    bar.setAttribute("aria-hidden", "true");
    const fill = document.createElement("span");
    fill.style.width = `${Math.min(100, Math.max(0, 100 * a.dwell_share))}%`;
    bar.append(fill);
    li.firstElementChild?.append(bar);
    li.firstElementChild?.setAttribute("data-anatomy", a.anatomy);
    anatomies.append(li);
  }
  if (!labels.sentences.length) sentences.append(Object.assign(document.createElement("li"), { textContent: "No transcript." }));
  if (!labels.anatomies.length) anatomies.append(Object.assign(document.createElement("li"), { textContent: "No anatomy masks." }));
}

/** The chosen item: aria-current and the "◀ chosen" mark; a chosen sentence's findings in the findings
 * list get a "said in sentence N" tag. */
function markChoice(): void {
  const key = choice.kind === "sentence" ? `[data-sentence="${choice.index}"]` : choice.kind === "anatomy" ? `[data-anatomy="${CSS.escape(choice.anatomy)}"]` : `[data-gaze-choice="whole"]`;
  for (const b of el("gaze-box").querySelectorAll<HTMLButtonElement>("button.gaze-item")) {
    if (b.matches(key)) b.setAttribute("aria-current", "true");
    else b.removeAttribute("aria-current");
  }
  for (const tag of el("findings").querySelectorAll(".gaze-tag")) tag.remove();
  for (const li of el("findings").querySelectorAll("li.gaze-tied")) li.classList.remove("gaze-tied");
  const g = recording(state.current);
  const sentence = g ? chosenSentence(g) : undefined;
  for (const id of sentence?.finding_ids ?? []) {
    const li = el("findings").querySelector(`li[data-finding="${id}"]`);
    if (!li || !sentence) continue;
    li.classList.add("gaze-tied");
    const tag = document.createElement("span");
    tag.className = "gaze-tag";
    tag.textContent = `said in sentence ${sentence.index + 1}`;
    li.querySelector(".f-meta")?.after(tag);
  }
}

/** After a case opened: the reader select (several recordings), the panel, the choice (the whole
 * recording when the recording changed). */
export function renderGazeChoices(c: Case): void {
  const select = el<HTMLSelectElement>("gaze-reader");
  select.replaceChildren();
  for (const g of c.gaze ?? []) {
    const option = document.createElement("option");
    option.value = String(g.id);
    option.textContent = `gaze ${g.id}${g.reader ? ` (${g.reader})` : ""}`;
    select.append(option);
  }
  select.hidden = (c.gaze ?? []).length < 2;
  const g = recording(c);
  if (g?.id !== recordingId) {
    recordingId = g?.id ?? null;
    choice = { kind: "whole" };
  }
  if (g) select.value = String(g.id);
  renderPanel(c, g);
  markChoice();
  setGaze(state.gazeOn);
}

function setGazeOpacity(percent: number): void {
  const value = Math.min(100, Math.max(0, percent));
  const input = el<HTMLInputElement>("gaze-opacity");
  input.value = String(value);
  el("gaze-opacity-value").textContent = `${value}%`;
  gazeImage.style.opacity = String(value / 100);
}

/** The panel's controls (review.ts calls this once). */
export function listenForGaze(): void {
  const select = el<HTMLSelectElement>("gaze-reader");
  select.addEventListener("change", () => {
    recordingId = Number(select.value);
    choice = { kind: "whole" };
    if (state.current) renderGazeChoices(state.current);
  });
  const input = el<HTMLInputElement>("gaze-opacity");
  input.addEventListener("input", () => setGazeOpacity(Number(input.value)));
  setGazeOpacity(Number(input.value));
  gazeImage.addEventListener("load", () => {
    root.dataset.gazeLoaded = root.dataset.gazeShown ?? "";
    delete el("gaze-shown").dataset.loading;
  });
  gazeImage.addEventListener("error", () => {
    delete el("gaze-shown").dataset.loading;
    if (gazeImage.getAttribute("src")) say("The gaze heatmap could not be loaded (see the server's log).", "error");
  });
}
