"""Issue 15 figures: per gaze definition and per edge case, the max relative difference between the
platform and a plain re-statement of the authors' code, beside the same figure for today's code (the
definitions before issue 15) measured in the same run.

The re-statements are the ones the tests use (``tests/labeling/test_gaze_definitions.py``,
``tests/labeling/test_gaze_heatmaps.py``); recordings are written in the datasets' exact file formats and
read by the platform's importers. Heatmaps: max over the pixels of ``|platform - original| / |original|``
(``inf`` when one is zero where the other is not) and the max absolute difference over the original's
peak. Masks: the share of pixels that differ. Dwell: max over the masks of the relative difference of the
dwell time (and whether the counts agree).

    .venv/bin/python bench/gaze_agreement.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from labeling.gaze import anatomy as an  # noqa: E402
from labeling.gaze.definitions import iai_focus  # noqa: E402
from labeling.gaze.heatmaps import heatmap  # noqa: E402
from labeling.gaze.labels import LEGACY_EGD, GazeParams, MapSpec, compute_map, gaze_labels  # noqa: E402
from studies.ingest.gaze.egd import SCREEN_HEIGHT, SCREEN_WIDTH  # noqa: E402
from studies.ingest.gaze.reflacx import read_reflacx  # noqa: E402
from studies.ingest.gaze.synthetic import ReflacxSpec, write_reflacx  # noqa: E402
from tests.labeling.test_gaze_definitions import (  # noqa: E402
    egd_csv_rows,
    egd_recording,
    original_egd_dwell,
    original_egd_heatmap,
    original_iai_mask,
    original_reflacx_sentence_maps,
    recording_input,
)
from tests.labeling.test_gaze_heatmaps import reference_reflacx  # noqa: E402

# today's EGD-CXR map: the valid fixations' x/y as imported, the image's own size, image row 0 counted
TODAY_EGD = LEGACY_EGD
EGD_CASES = [  # (name, image size, which fixations: see edge_case_fixations)
    ("interior points only", (400, 300), "plain"),
    ("FPOGV = 0 rows", (400, 300), "fpogv0"),
    ("odd width", (401, 300), "plain"),
    ("odd height", (400, 301), "plain"),
    ("points on image row 0", (400, 300), "row0"),
    ("points on the last row / column", (400, 300), "last_row_col"),
    ("points in the padding (odd width and height)", (401, 301), "padding"),
    ("points beside the image", (400, 300), "off_image"),
    ("all of the above at once", (401, 301), "all"),
]


def map_difference(got: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(max relative difference over the pixels, max absolute difference / the original's peak)."""
    got, ref = got.astype(np.float64), ref.astype(np.float64)
    diff = np.abs(got - ref)
    if np.any((got != 0) != (ref != 0)):
        rel = float("inf")
    else:
        live = ref != 0
        rel = float((diff[live] / np.abs(ref[live])).max(initial=0.0))
    return rel, float(diff.max() / np.abs(ref).max())


def relative(got: float, ref: float) -> float:
    if ref == 0:
        return 0.0 if got == 0 else float("inf")
    return abs(got - ref) / abs(ref)


def fmt(value: float) -> str:
    return "inf" if value == float("inf") else f"{value:.1e}"


def egd_rows(tmp: Path) -> list[tuple[str, str, str, str]]:
    out = []
    for name, size, case in EGD_CASES:
        item, root = egd_recording(tmp, size, case)
        rows, pads = egd_csv_rows(root, item.external_id)
        width, height = size
        ref = original_egd_heatmap(rows, pads, width, height)
        rec = recording_input(item)
        got = compute_map(rec, MapSpec(kind="recording"), {}, GazeParams())
        fixations = {k: v for k, v in rec.fixations.items() if k != "egd_rows"}
        today = heatmap(fixations, width=width, height=height, method="egd", **TODAY_EGD)
        (rel, absolute), (rel0, absolute0) = map_difference(got, ref), map_difference(today, ref)
        out.append((f"EGD-CXR heatmap: {name} ({width}×{height})", f"{fmt(rel)} / {fmt(absolute)}",
                    f"{fmt(rel0)} / {fmt(absolute0)}", f"{len(rows)} rows"))  # fmt: skip
    # one past the edge: float rounding of the scale puts a point just inside the screen area's right edge
    # one past the count map; the script's IndexError skips it
    width, height = 3, 7
    f = 1.0 - 2.0**-53
    rows = [(1.0, f, 0.5, 1), (1.0, 0.25, 0.75, 1)]
    egd = {"time": [1.0, 1.0], "fpogx": [f, 0.25], "fpogy": [0.5, 0.75], "fpogv": [1, 1],
           "pads": [0, 0, 0, 0], "screen": [SCREEN_WIDTH, SCREEN_HEIGHT]}  # fmt: skip
    ref = original_egd_heatmap(rows, (0, 0, 0, 0), width, height)
    got = heatmap({"start": [0.0], "end": [1.0], "x": [0], "y": [0], "egd_rows": egd}, width=width,
                  height=height, method="egd")  # fmt: skip
    # today's import maps with the image's own size (egd._fixations: int(width / area width · x))
    xs = [int(width / SCREEN_WIDTH * (fx * SCREEN_WIDTH)) for fx in (f, 0.25)]
    ys = [int(height / SCREEN_HEIGHT * (fy * SCREEN_HEIGHT)) for fy in (0.5, 0.75)]
    today_fix = {"start": [0.0, 1.0], "end": [1.0, 2.0], "x": xs, "y": ys}
    today = heatmap(today_fix, width=width, height=height, method="egd", **TODAY_EGD)
    (rel, absolute), (rel0, absolute0) = map_difference(got, ref), map_difference(today, ref)
    out.append((f"EGD-CXR heatmap: a point one past the last column ({width}×{height})",
                f"{fmt(rel)} / {fmt(absolute)}", f"{fmt(rel0)} / {fmt(absolute0)}", "2 rows"))  # fmt: skip
    return out


def egd_dwell_row(tmp: Path) -> tuple[str, str, str, str]:
    from PIL import Image

    item, root = egd_recording(tmp, (401, 301), "all")
    rows, pads = egd_csv_rows(root, item.external_id)
    masks = {n: np.asarray(Image.open(p).convert("L")) > 0 for n, p in item.anatomy_masks.items()}
    dwell, count = original_egd_dwell(rows, pads, 401, 301, masks)
    rec = recording_input(item)

    def worst(params: GazeParams) -> str:
        labels = gaze_labels(rec, masks, params)
        rel = max(relative(r["dwell_s"], dwell[r["anatomy"]]) for r in labels.anatomy)
        same = all(r["fixation_count"] == count[r["anatomy"]] for r in labels.anatomy)
        return f"{fmt(rel)} (counts {'equal' if same else 'differ'})"

    return ("EGD-CXR dwell time per mask (preset `egd`, `validation.py`)", worst(GazeParams.from_dict(
        {"preset": "egd"})), worst(GazeParams()), f"{len(masks)} masks, {len(rows)} rows")  # fmt: skip


def reflacx_rows(tmp: Path) -> list[tuple[str, str, str, str]]:
    size = (96, 72)
    fixations = [(0.05 + 0.45 * i, 0.35 + 0.45 * i, 8 + (37 * i) % 80, 5 + (23 * i) % 62) for i in range(14)]
    spec = ReflacxSpec(image_size=size, fixations=fixations)
    root = write_reflacx(tmp / "reflacx", recordings=[spec])
    (item,) = list(read_reflacx(root))
    rec = recording_input(item)
    out = []
    whole = compute_map(rec, MapSpec(kind="recording"), {}, GazeParams())
    fx = rec.fixations
    ref = reference_reflacx(fx, *size)
    rel, absolute = map_difference(whole, ref)
    out.append(("REFLACX whole-recording map (dataset script)", f"{fmt(rel)} / {fmt(absolute)}",
                f"{fmt(rel)} / {fmt(absolute)} (unchanged code)", f"{len(fx['x'])} fixations"))  # fmt: skip
    ref_maps, _ = original_reflacx_sentence_maps(root / "main_data" / spec.id, *size)
    params = GazeParams.from_dict({"preset": "reflacx"})
    today = GazeParams.from_dict({"lead_s": 5.0, "normalise": "max"})  # the nearest today's code allows
    labels, before = gaze_labels(rec, {}, params), gaze_labels(rec, {}, today)
    for i, ref in enumerate(ref_maps):
        got = compute_map(rec, labels.maps[labels.sentences[i]["map"]].spec, {}, params)
        old = compute_map(rec, before.maps[before.sentences[i]["map"]].spec, {}, today)
        (rel, absolute), (rel0, absolute0) = map_difference(got, ref), map_difference(old, ref)
        window = labels.sentences[i]["window"]
        out.append((f"REFLACX authors' sentence map {i + 1} (presets `reflacx`, `fgcxr`), window "
                    f"[{window[0]:g}, {window[1]:g}] s", f"{fmt(rel)} / {fmt(absolute)}",
                    f"{fmt(rel0)} / {fmt(absolute0)} (lead 5 s, max, no cap)", "5 s, capped"))  # fmt: skip
    return out


def iai_rows(tmp: Path) -> list[tuple[str, str, str, str]]:
    maps = []
    for size, case in (((401, 301), "all"), ((400, 300), "plain")):
        item, _ = egd_recording(tmp / "iai", size, case)
        maps.append(compute_map(recording_input(item), MapSpec(kind="recording"), {}, GazeParams()))
    rng = np.random.default_rng(15)
    rows, cols = np.mgrid[0:512, 0:420]
    blobs = sum(
        np.exp(-((rows - rng.uniform(0, 512)) ** 2 + (cols - rng.uniform(0, 420)) ** 2) / (2 * s * s))
        for s in rng.uniform(10, 70, 6)
    )
    maps.append(blobs.astype(np.float32))
    out = []
    for resize in (None, 224):
        worst = worst_today = 0.0
        for h in maps:
            ref = original_iai_mask(an.to_uint8(h), resize)
            got = iai_focus(h, resize, at_input=True)
            today = an.intense_focus(h, 20.0)
            if resize:
                from PIL import Image

                today = (
                    np.asarray(
                        Image.fromarray(today.astype(np.uint8) * 255).resize(
                            (resize, resize), Image.Resampling.NEAREST
                        )
                    )
                    > 127
                )
            worst = max(worst, float(np.mean(got != ref)))
            worst_today = max(worst_today, float(np.mean(today != ref)))
        name = "I-AI intense focus" + (
            f" after a {resize} px resize (presets `iai`, `fgcxr`)" if resize else ""
        )
        today = f"{worst_today:.1e} of pixels differ (percentile 20)"
        out.append((name, f"{worst:.1e} of pixels differ", today, f"{len(maps)} maps"))
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        table = [*egd_rows(tmp), egd_dwell_row(tmp), *reflacx_rows(tmp), *iai_rows(tmp)]
    print("| definition / edge case | platform: max rel / max abs÷peak | today's code | data |")
    print("|---|---|---|---|")
    for row in table:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
