// The review page (annotation/ui.py): #review with the project slug, the reviewer's role, the CSRF token and
// the project's readers per finding as data attributes, the elements the screen works with, and the message
// area (say, the save state, an error shown with a button after it).

export const root = document.getElementById("review") as HTMLElement;
export const slug = root.dataset.slug ?? "";
export const role = root.dataset.role === "radiologist" ? "radiologist" : "annotator";
export const csrf = root.dataset.csrf ?? "";
export const stage = role === "radiologist" ? "review" : "annotate";
/** The project's readers per finding; above 1 an annotator's Next case takes readings (navigation.ts, nextCase). */
export const readersPerFinding = Math.max(1, Math.floor(Number(root.dataset.readers ?? "1")) || 1);
export const reads = role === "annotator" && readersPerFinding > 1;

export const el = <T extends HTMLElement = HTMLElement>(id: string): T => {
  const found = document.getElementById(id);
  if (!found) throw new Error(`review.html lacks #${id}`);
  return found as T;
};
const messages = el("messages");
export const canvas = el<HTMLCanvasElement>("viewer");
export const overlay = el<HTMLCanvasElement>("overlay");
export const preview = el<HTMLImageElement>("preview");
export const gazeImage = el<HTMLImageElement>("gaze");
export const commentBox = el<HTMLTextAreaElement>("comment");
export const opacity = el<HTMLInputElement>("opacity");
export const depthInput = el<HTMLInputElement>("box-depth");
export const missingForm = el<HTMLFormElement>("missing-form");

/** An error to show as it is, with a button (Reload, Claim again) after it. */
export class ShownError extends Error {
  constructor(
    message: string,
    readonly extra?: HTMLElement,
  ) {
    super(message);
  }
}

export function say(text: string, kind: "info" | "error" | "ok" = "info", extra?: HTMLElement): void {
  const line = document.createElement("p");
  line.className = `msg msg-${kind}`;
  line.textContent = text;
  if (extra) line.append(" ", extra);
  messages.replaceChildren(line);
  root.dataset.message = kind;
}

export function setSaveState(text: string, kind: "ok" | "dirty" | "error" | "" = ""): void {
  const box = el("save-state");
  box.textContent = text;
  box.dataset.kind = kind;
}

export function button(label: string, onClick: () => void): HTMLButtonElement {
  const b = document.createElement("button");
  b.textContent = label;
  b.addEventListener("click", onClick);
  return b;
}
