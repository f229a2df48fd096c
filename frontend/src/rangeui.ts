// The intensity range of the threshold brush and the region grow: a checkbox (key t) that makes the pen
// paint only voxels within [#range-lo, #range-hi] (HU for CT), and "from window" that takes the range
// of the window on screen.
import { el, say } from "./page";
import { nv } from "./state";
import { range } from "./voxels";

const on = (): HTMLInputElement => el<HTMLInputElement>("range-on");
const lo = (): HTMLInputElement => el<HTMLInputElement>("range-lo");
const hi = (): HTMLInputElement => el<HTMLInputElement>("range-hi");

function read(): void {
  const [a, b] = [Number(lo().value), Number(hi().value)];
  if (Number.isFinite(a) && Number.isFinite(b)) [range.lo, range.hi] = a <= b ? [a, b] : [b, a];
  range.on = on().checked;
  document.getElementById("review")?.toggleAttribute("data-threshold", range.on);
}

export function toggleRange(): void {
  on().checked = !on().checked;
  read();
  say(range.on ? `Threshold brush: the pen paints only within [${range.lo}, ${range.hi}].` : "Threshold brush off: the pen paints everything.");
}

export function listenForRange(): void {
  lo().value = String(range.lo);
  hi().value = String(range.hi);
  for (const input of [on(), lo(), hi()]) {
    input.addEventListener("change", read);
    input.addEventListener("input", read);
  }
  el("range-window").addEventListener("click", () => {
    const volume = nv.volumes[0];
    if (!volume) return;
    lo().value = String(Math.round(volume.cal_min ?? range.lo));
    hi().value = String(Math.round(volume.cal_max ?? range.hi));
    read();
    say(`Range [${range.lo}, ${range.hi}]: the window on screen.`);
  });
  read();
}
