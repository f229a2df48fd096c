// The keys (by role; the help overlay, ?, lists them) and the buttons' actions by name: how each runs (the
// API's one at a time, guarded; the tools and the view at once).
import { reload } from "./caseview";
import { clickTool } from "./clicks";
import { toggleShowing, windowPreset } from "./images";
import { addMissing, nextCase, stepFinding } from "./navigation";
import { toggleLayers } from "./layers";
import { toggleGaze } from "./overlay";
import { commentBox, el, opacity, role, root, say } from "./page";
import { tasksFromProposals } from "./proposals";
import { hideMissingForm, showMissingForm } from "./report";
import { returnTask, save, transition } from "./saving";
import { guarded, needEditable, setMode, state } from "./state";
import { fillHoles, redo, setOpacity, undo } from "./tools";
import { fillBetweenSlices, growTool } from "./edit3d";
import { stepPenSize } from "./strokes";
import { toggleRange } from "./rangeui";
import { cycleLayout, resetView, toggleMaximise } from "./view";

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
  "from-proposals": tasksFromProposals,
};

const toggles: Record<string, () => void> = {
  paint: () => (needEditable(), setMode(state.mode === "paint" ? "view" : "paint")),
  erase: () => (needEditable(), setMode(state.mode === "erase" ? "view" : "erase")),
  fill: () => (needEditable(), setMode(state.mode === "fill" ? "view" : "fill")),
  box: () => (needEditable(), setMode(state.mode === "box" ? "view" : "box")),
  click: clickTool,
  grow: growTool,
  interpolate: fillBetweenSlices,
  holes: fillHoles,
  undo,
  redo,
  missing: showMissingForm,
  gaze: toggleGaze,
  layers: toggleLayers,
};

const global: Record<string, () => void> = {
  help: toggleHelp,
  "opacity-down": () => setOpacity(Number(opacity.value) - 10),
  "opacity-up": () => setOpacity(Number(opacity.value) + 10),
  lung: () => windowPreset("lung"),
  mediastinum: () => windowPreset("mediastinum"),
  bone: () => windowPreset("bone"),
  "pen-smaller": () => stepPenSize(-1),
  "pen-larger": () => stepPenSize(1),
  range: toggleRange,
  layout: cycleLayout,
  maximise: () => toggleMaximise(),
  "reset-view": resetView,
  escape: () => {
    el("help").hidden = true;
    hideMissingForm();
    if (state.current && state.mode !== "view") setMode("view");
  },
};

const ANNOTATOR_KEYS: Record<string, string> = {
  n: "next", s: "save", a: "accept", r: "reject", p: "paint", e: "erase", f: "fill", h: "holes", b: "box",
  z: "undo", y: "redo", m: "missing", c: "click", w: "grow", i: "interpolate", t: "range", ",": "pen-smaller",
  ".": "pen-larger",
};

const RADIOLOGIST_KEYS: Record<string, string> = { n: "next", a: "approve", r: "return", v: "versions" };

const COMMON_KEYS: Record<string, string> = {
  "[": "prev-finding", "]": "next-finding", g: "gaze", "?": "help", "-": "opacity-down", "=": "opacity-up",
  "+": "opacity-up", "1": "lung", "2": "mediastinum", "3": "bone", escape: "escape", l: "layers",
  o: "layout", x: "maximise", "0": "reset-view",
};

export function trigger(name: string): void {
  if (global[name]) {
    global[name]();
  } else if (toggles[name]) {
    try {
      if (!state.current) throw new Error("Open a case first (Next case, key n).");
      toggles[name]();
    } catch (err) {
      say(err instanceof Error ? err.message : String(err), "error");
    }
  } else if (name === "save" && state.autosaving) {
    // An autosave is under way: wait for it; save again only if something changed since.
    void state.autosaving.then(() => {
      if (state.dirty) void guarded(actions.save);
      else if (state.current && root.dataset.message !== "error") say(`Saved version ${state.current.finding.current_version}.`, "ok");
    });
  } else if (actions[name]) void guarded(actions[name]);
}

/** A key pressed on the page (not while typing in a field): its action. */
export function onKey(event: KeyboardEvent): void {
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
}
