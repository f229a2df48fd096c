// Every version in the versions list can be opened (shown: a mask in the drawing, a box on the overlay, the
// other kind's newest version staying as it is) and, by an annotator, restored (saved again as a new
// version on top of the current one). An opened mask can be edited: a save then makes a new version of it.
import { groundingOf, showVersion } from "./images";
import { drawOverlay } from "./overlay";
import { button, el, role, root, say } from "./page";
import { changed, leaveCase, save } from "./saving";
import { guarded, needCase, needEditable, nv, state } from "./state";
import type { Annotation, Case } from "./types";
import { affineOf } from "./geometry";

export function decorateVersions(c: Case): void {
  const items = el("versions").querySelectorAll<HTMLLIElement>(":scope > li");
  c.versions.forEach((v, i) => {
    const item = items[i];
    if (!item) return;
    item.dataset.version = String(v.version);
    const shown = root.dataset.shownMask === String(v.version) || root.dataset.shownBox === String(v.version);
    item.classList.toggle("shown", shown);
    const actions = document.createElement("span");
    actions.className = "v-actions";
    const open = button("Open", () => void guarded(() => openVersion(v)));
    open.dataset.versionAction = "open";
    open.title = `Show v${v.version} (${v.kind})`;
    actions.append(open);
    if (role === "annotator" && !c.reading?.submitted_at && v.version !== c.finding.current_version) {
      const restore = button("Restore", () => void guarded(() => restoreVersion(v)));
      restore.dataset.versionAction = "restore";
      restore.title = `Save v${v.version} again as the newest version`;
      actions.append(restore);
    }
    item.append(" ", actions);
  });
}

function markShown(c: Case): void {
  for (const item of el("versions").querySelectorAll<HTMLLIElement>(":scope > li")) {
    const n = item.dataset.version;
    item.classList.toggle("shown", n === root.dataset.shownMask || n === root.dataset.shownBox);
  }
  void c;
}

export async function openVersion(v: Annotation): Promise<void> {
  const c = needCase();
  if (role === "annotator" && !state.decided) await leaveCase(); // unsaved changes are saved first
  if (v.kind === "mask") {
    const { box } = groundingOf(c);
    const keep = state.shownBox;
    await showVersion(v, box);
    if (keep && !box) state.shownBox = keep;
  } else if (v.kind === "box" && v.box) {
    state.shownBox = { box: v.box, label: `v${v.version} box` };
    state.pendingBox = null;
    root.dataset.shownBox = String(v.version);
    if (!state.is2D) crosshairTo(v.box);
    drawOverlay();
  } else {
    throw new Error(`Version ${v.version} is ${v.kind}: nothing to show.`);
  }
  markShown(c);
  const current = v.version === c.finding.current_version;
  say(`Showing v${v.version} (${v.kind}${v.kind === "mask" ? `, ${v.voxels ?? 0} voxels` : ""})${current ? ", the current version" : ""}.` + (role === "annotator" && !current ? " Restore saves it as the newest version." : ""), "ok");
}

export async function restoreVersion(v: Annotation): Promise<void> {
  needEditable();
  await openVersion(v);
  if (v.kind === "box" && v.box) {
    state.pendingBox = [...v.box];
    changed("box");
  } else {
    changed("mask");
  }
  await save();
  const c = needCase();
  say(`Restored v${v.version} as version ${c.finding.current_version}.`, "ok");
}

function crosshairTo(box: number[]): void {
  const n = box.length / 2;
  const centre = Array.from({ length: 3 }, (_, a) => (a < n ? (box[a] + box[a + n] - 1) / 2 : 0));
  const affine = affineOf(nv.volumes[0]);
  const mm = [0, 1, 2].map((r) => affine[r][0] * centre[0] + affine[r][1] * centre[1] + affine[r][2] * centre[2] + affine[r][3]);
  nv.scene.crosshairPos = nv.mm2frac(mm as [number, number, number]);
  nv.drawScene();
}
