"""Gaze-label definitions as their authors compute them (issue 15, items 2 and 3).

Each ``original_*`` function is a plain re-statement, written here, of one published computation, read
from the authors' repositories (not copied): the file and lines are named in its docstring. The platform's
result is compared with it on every pixel (heatmaps: max abs and max relative difference <= 1e-5) or
exactly (masks, counts). Recordings are written in the datasets' exact file formats
(``studies.ingest.gaze.synthetic``) and read by the platform's importers, so the whole path is tested.
``bench/gaze_agreement.py`` prints the same comparisons as figures.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter
from scipy.stats import multivariate_normal

from labeling.gaze import anatomy as an
from labeling.gaze.definitions import iai_focus, sentence_windows
from labeling.gaze.heatmaps import egd_row_pixels, heatmap
from labeling.gaze.labels import GazeParams, MapSpec, RecordingInput, compute_map, gaze_labels
from labeling.gaze.presets import PLATFORM, PRESETS
from studies.ingest.gaze.common import GazeRecordingData
from studies.ingest.gaze.egd import SCREEN_HEIGHT, SCREEN_WIDTH, read_egd
from studies.ingest.gaze.reflacx import read_reflacx
from studies.ingest.gaze.synthetic import (
    EgdFixation,
    EgdSpec,
    ReflacxSpec,
    egd_paddings,
    write_egd,
    write_reflacx,
)

TOLERANCE = 1e-5


# ------------------------------------------------------------------------------- re-statements


def _number(text: str) -> float:
    """A CSV cell as pandas.read_csv gives it to the authors' code: a float, NaN when empty."""
    try:
        return float(text)
    except ValueError:
        return math.nan


def original_egd_pixel(fpogx, fpogy, pads, grid_w, grid_h):
    """``X_ORIGINAL``/``Y_ORIGINAL`` of one row in EGD-CXR's
    ``DataProcessing/DataPostProcessing/create_heatmap_images_and_or_videos.py`` lines 187-280 (no
    calibration): screen pixel, kept when strictly inside the image's area, else -1, scaled by the count
    map's size over the area's and truncated by ``int``; and whether it was inside."""
    left, right, top, bottom = pads
    eye_x = fpogx * SCREEN_WIDTH
    eye_y = fpogy * SCREEN_HEIGHT
    inside = eye_x > left and eye_x < SCREEN_WIDTH - right and eye_y > top and eye_y < SCREEN_HEIGHT - bottom
    if inside:
        x_original = eye_x - left
        y_original = eye_y - top
    else:
        x_original = -1
        y_original = -1
    resized_width = SCREEN_WIDTH - left - right
    resized_height = SCREEN_HEIGHT - top - bottom
    return int((grid_w / resized_width) * x_original), int((grid_h / resized_height) * y_original), inside


def original_egd_heatmap(rows, pads, width, height, *, pad_even=True, valid_only=False, keep_row0=False):
    """EGD-CXR's heatmap of one image, lines 258-288 and 228 of the same script: the image padded to even
    height and width with zeros (lines 258-261), a zero count map of that size, +1 at each row's pixel
    when its row index is > 0 (line 285; the IndexError of a pixel past the map is caught by the bare
    ``except``), ``ndimage.gaussian_filter(record, 150)``; the image's part of it. ``rows`` are
    ``(time, fpogx, fpogy, fpogv)``. The options re-state the platform's documented departures:
    ``pad_even=False`` (no padding), ``valid_only`` (FPOGV = 1 rows only), ``keep_row0`` (every point
    inside the image's area)."""
    grid_h, grid_w = (height + height % 2, width + width % 2) if pad_even else (height, width)
    record = np.zeros([grid_h, grid_w])
    for _time, fpogx, fpogy, fpogv in rows:
        if valid_only and fpogv != 1:
            continue
        x, y, inside = original_egd_pixel(fpogx, fpogy, pads, grid_w, grid_h)
        if (keep_row0 and inside) or y > 0:
            try:
                record[int(y), int(x)] += 1
            except IndexError:
                pass
    return gaussian_filter(record, 150)[:height, :width]


def original_egd_dwell(rows, pads, width, height, masks):
    """EGD-CXR's dwell per region, ``DataProcessing/Validation/validation.py`` lines 81-111, with the
    platform's masks in place of its bounding boxes: each row of the image, in file order, takes
    ``Time (in secs)`` minus the row above's (the first row its own time) and adds it, and one to the
    count, to every region holding its X_ORIGINAL/Y_ORIGINAL pixel (the heatmap script's, padded map)."""
    grid_w, grid_h = width + width % 2, height + height % 2
    dwell = dict.fromkeys(masks, 0.0)
    count = dict.fromkeys(masks, 0)
    previous = None
    for pointer, (time, fpogx, fpogy, _fpogv) in enumerate(rows):
        duration = time if pointer == 0 else time - previous
        previous = time
        x, y, _ = original_egd_pixel(fpogx, fpogy, pads, grid_w, grid_h)
        for name, mask in masks.items():
            if 0 <= x < width and 0 <= y < height and mask[y, x]:
                dwell[name] += duration
                count[name] += 1
    return dwell, count


def egd_csv_rows(root: Path, dicom_id: str):
    """``(time, fpogx, fpogy, fpogv)`` of every fixations.csv row of the image and its paddings, read as
    the authors' scripts read them."""
    with open(root / "fixations.csv", newline="", encoding="utf-8") as fh:
        rows = [
            (_number(r["Time (in secs)"]), _number(r["FPOGX"]), _number(r["FPOGY"]), _number(r["FPOGV"]))
            for r in csv.DictReader(fh)
            if r["DICOM_ID"] == dicom_id
        ]
    with open(root / "master_sheet.csv", newline="", encoding="utf-8") as fh:
        master = next(r for r in csv.DictReader(fh) if r["dicom_id"] == dicom_id)
    pads = tuple(float(master[f"image_{side}_pad"]) for side in ("left", "right", "top", "bottom"))
    return rows, pads


def original_reflacx_sentence_maps(folder: Path, width: int, height: int, seconds: float = 5.0):
    """REFLACX authors' sentence heatmaps, ``ricbl/eye-tracking-localization``
    ``src/find_fixations_all_sentences.py`` at ed30d2f, method ``5s``: words read in order, a sentence
    ending at the word ``.`` (line 130), its heatmap over ``[max(first word start - 5, previous sentence's
    first word start), its '.' end]`` (line 149; the previous start is 0 before the first sentence, line
    108); ``create_heatmap`` (lines 39-54): fixations with ``end > t0`` and ``start <= t1``, each the
    normal density of ``get_gaussian`` (lines 24-35: ``multivariate_normal`` at the integer pixels of the
    rounded shown rectangle, zero elsewhere) times its duration clipped to the window, summed in float32,
    divided by the maximum."""
    with open(folder / "fixations.csv", newline="", encoding="utf-8") as fh:
        fixations = list(csv.DictReader(fh))
    with open(folder / "timestamps_transcription.csv", newline="", encoding="utf-8") as fh:
        words = list(csv.DictReader(fh))

    def create_heatmap(t0, t1):
        img = np.zeros((height, width), dtype=np.float32)
        for row in fixations:
            start, end = float(row["timestamp_start_fixation"]), float(row["timestamp_end_fixation"])
            if not (end > t0 and start <= t1):
                continue
            rect = [round(float(row[f"{k}_shown_from_image"])) for k in ("xmin", "ymin", "xmax", "ymax")]
            mu = [float(row["y_position"]) - rect[1], float(row["x_position"]) - rect[0]]
            sig = [float(row["angular_resolution_y_pixels_per_degree"]) ** 2,
                   float(row["angular_resolution_x_pixels_per_degree"]) ** 2]  # fmt: skip
            xs, ys = np.meshgrid(np.arange(0, rect[2] - rect[0]), np.arange(0, rect[3] - rect[1]))
            pos = np.empty(xs.shape + (2,))
            pos[:, :, 1], pos[:, :, 0] = xs, ys
            gaussian = np.zeros([height, width])
            gaussian[rect[1] : rect[3], rect[0] : rect[2]] = multivariate_normal(mu, sig).pdf(pos)
            img += gaussian * (min(end, t1) - max(start, t0))
        return img / np.max(img)

    maps, windows = [], []
    first_start, new_sentence = 0.0, True
    for row in words:
        if new_sentence:
            previous_start, first_start, new_sentence = first_start, float(row["timestamp_start_word"]), False
        if row["word"] == ".":
            window = (max(first_start - seconds, previous_start), float(row["timestamp_end_word"]))
            windows.append(window)
            maps.append(create_heatmap(*window))
            new_sentence = True
    return maps, windows


def original_iai_mask(image8: np.ndarray, resize: int | None) -> np.ndarray:
    """I-AI's intense focus, ``UARK-AICV/IAI`` ``iai/utils/misc.py`` ``read_gt_heatmap`` lines 37-44:
    the 8-bit heatmap through ``transforms.Resize([224, 224])`` (a PIL image: PIL's bilinear resize) and
    ``ToTensor``, ``gt_heatmap.unique()[len(np.unique(gt_heatmap)) // 5]`` as the threshold, ``>`` it as
    the mask."""
    image = Image.fromarray(image8)
    if resize:
        image = image.resize((resize, resize), Image.Resampling.BILINEAR)
    values = np.asarray(image).astype(np.float32) / 255.0
    threshold = np.unique(values)[len(np.unique(values)) // 5]
    return values > threshold


def assert_equal_maps(got: np.ndarray, ref: np.ndarray) -> None:
    assert got.shape == ref.shape and got.dtype == np.float32
    ref = ref.astype(np.float64)
    diff = np.abs(got.astype(np.float64) - ref)
    assert diff.max() <= TOLERANCE * np.abs(ref).max()
    live = ref != 0
    assert np.array_equal(got != 0, live)
    assert (diff[live] / np.abs(ref[live])).max(initial=0.0) <= TOLERANCE


# ------------------------------------------------------------------------------- EGD-CXR recordings


def _fixation_at(px: float, py: float, size, pads, *, valid=1, start=0.0) -> EgdFixation:
    """A fixation whose screen point the script maps to the padded pixel ``(px, py)`` (its centre)."""
    width, height = size
    grid_w, grid_h = width + width % 2, height + height % 2
    left, right, top, bottom = pads
    fx = (left + (px + 0.5) * (SCREEN_WIDTH - left - right) / grid_w) / SCREEN_WIDTH
    fy = (top + (py + 0.5) * (SCREEN_HEIGHT - top - bottom) / grid_h) / SCREEN_HEIGHT
    return EgdFixation(round(fx, 5), round(fy, 5), start, 0.2, valid)


def edge_case_fixations(size, pads, case: str) -> list[EgdFixation]:
    """Interior fixations plus those of one edge case (``all``: every case)."""
    width, height = size
    points = [(0.3, 0.4), (0.62, 0.35), (0.5, 0.7), (0.2, 0.8)]
    plain = [(width * u, height * v, 1) for u, v in points]
    cases = {
        "fpogv0": [(width * 0.7, height * 0.6, 0), (width * 0.4, height * 0.2, 0)],
        "row0": [(width * 0.45, 0, 1), (width * 0.8, 0, 1)],
        "last_row_col": [
            (width - 1, height * 0.5, 1),
            (width * 0.5, height - 1, 1),
            (width - 1, height - 1, 1),
            (0, height * 0.3, 1),
        ],  # fmt: skip
        "padding": [(width, height * 0.5, 1)] * (width % 2)
        + [(width * 0.3, height, 1)] * (height % 2)
        + [(width, height, 1)] * (width % 2 * height % 2),
        "off_image": [(-3, height * 0.5, 1)],  # beside the image on the screen (left of it)
    }
    chosen = [p for name, extra in cases.items() for p in extra] if case == "all" else cases.get(case, [])
    out = []
    for i, (px, py, valid) in enumerate(plain + chosen):
        out.append(_fixation_at(int(px), int(py), size, pads, valid=valid, start=0.3 + 0.5 * i))
    return out


def egd_recording(tmp_path: Path, size, case: str = "all", **spec) -> tuple[GazeRecordingData, Path]:
    pads = egd_paddings(size)
    fixations = edge_case_fixations(size, pads, case)
    spec.setdefault("bad_cells", {})
    if case in ("all", "fpogv0"):  # an FPOGV 0 row with an empty FPOGX: NaN for the script
        fixations.append(EgdFixation(0.5, 0.5, 0.3 + 0.5 * len(fixations), 0.2, 0))
        spec["bad_cells"][("fixations.csv", len(fixations) - 1, "FPOGX")] = ""
    root = write_egd(tmp_path / f"egd-{size[0]}x{size[1]}-{case}",
                     recordings=[EgdSpec(image_size=size, fixations=fixations, **spec)])  # fmt: skip
    (item,) = list(read_egd(root))
    assert isinstance(item, GazeRecordingData), item
    return item, root


def recording_input(item: GazeRecordingData) -> RecordingInput:
    return RecordingInput(
        external_id=item.external_id, source_format=item.source_format, width=item.image_width,
        height=item.image_height, fixations=item.fixations, transcript=item.transcript,
    )  # fmt: skip


@pytest.mark.parametrize("size", [(400, 300), (401, 300), (400, 301), (401, 301)])
def test_egd_heatmap_equals_the_original_on_every_pixel(tmp_path, size):
    item, root = egd_recording(tmp_path, size)
    rows, pads = egd_csv_rows(root, item.external_id)
    width, height = size
    grid_w, grid_h = width + width % 2, height + height % 2
    pixels = [original_egd_pixel(fx, fy, pads, grid_w, grid_h)[:2] for _, fx, fy, _ in rows]
    # the edge cases are really there: FPOGV 0 rows, row 0, the last row and column, the padding
    assert sum(1 for *_, v in rows if v == 0) == 3 and any(math.isnan(fx) for _, fx, _, _ in rows)
    assert any(y == 0 and x >= 0 for x, y in pixels) and (width - 1, height - 1) in pixels
    assert (width % 2 == 0) or any(x == width for x, _ in pixels)
    assert (height % 2 == 0) or any(y == height for _, y in pixels)

    rec = recording_input(item)
    got = compute_map(rec, MapSpec(kind="recording"), {}, GazeParams())
    assert_equal_maps(got, original_egd_heatmap(rows, pads, width, height))
    for option, kwargs in (
        ({"egd_fpogv": "valid"}, {"valid_only": True}),
        ({"egd_pad_even": False}, {"pad_even": False}),
        ({"egd_keep_row0": True}, {"keep_row0": True}),
    ):
        got = compute_map(rec, MapSpec(kind="recording"), {}, GazeParams.from_dict(option))
        assert_equal_maps(got, original_egd_heatmap(rows, pads, width, height, **kwargs))
    # the platform's map before issue 15: the valid fixations' x/y, no padding, row 0 kept
    earlier = {"egd_fpogv": "valid", "egd_pad_even": False, "egd_keep_row0": True}
    old = heatmap({k: v for k, v in rec.fixations.items() if k != "egd_rows"}, width=width, height=height,
                  method="egd", **earlier)  # fmt: skip
    assert not np.allclose(old, got, rtol=1e-3)


def test_egd_row_one_past_the_edge_is_skipped_like_the_original():
    # points just inside the screen area's right and bottom edges: the float scale can land them one past
    # the count map, where the script's IndexError skips them; both must agree on every such point
    rows, found = [], 0
    for width in range(1, 40):
        pads = (0.0, 0.0, 0.0, 0.0)
        for k in range(1, 6):
            f = 1.0 - k * 2.0**-53
            rows = [(1.0, f, 0.5, 1), (1.0, 0.5, f, 1), (1.0, f, f, 1), (1.0, 0.25, 0.75, 1)]
            egd_rows = {"time": [r[0] for r in rows], "fpogx": [r[1] for r in rows],
                        "fpogy": [r[2] for r in rows], "fpogv": [r[3] for r in rows],
                        "pads": list(pads), "screen": [SCREEN_WIDTH, SCREEN_HEIGHT]}  # fmt: skip
            px, py, counted = egd_row_pixels(egd_rows, width, 7)
            for i, (_, fx, fy, _) in enumerate(rows):
                x, y, _ = original_egd_pixel(fx, fy, pads, width + width % 2, 8)
                assert (px[i], py[i]) == (x, y)
                assert bool(counted[i]) == (y > 0 and x < width + width % 2 and y < 8)
                found += x == width + width % 2 or y == 8
            fix = {"start": [0.0], "end": [1.0], "x": [0], "y": [0], "egd_rows": egd_rows}
            got = heatmap(fix, width=width, height=7, method="egd")
            assert_equal_maps(got, original_egd_heatmap(rows, pads, width, 7))
    assert found  # the rounding case does occur among these


def test_egd_dwell_equals_validation_py(tmp_path):
    item, root = egd_recording(tmp_path, (401, 301))
    rows, pads = egd_csv_rows(root, item.external_id)
    masks = {name: np.asarray(Image.open(path).convert("L")) > 0 for name, path in item.anatomy_masks.items()}
    rec = recording_input(item)
    labels = gaze_labels(rec, masks, GazeParams.from_dict({"preset": "egd"}))
    dwell, count = original_egd_dwell(rows, pads, 401, 301, masks)
    assert {r["anatomy"] for r in labels.anatomy} == set(masks)
    assert sum(count.values()) > 0
    for record in labels.anatomy:
        name = record["anatomy"]
        assert record["dwell_s"] == pytest.approx(dwell[name], rel=1e-12, abs=1e-12)
        assert record["fixation_count"] == count[name]
    platform = gaze_labels(rec, masks, GazeParams())
    by_name = {r["anatomy"]: r for r in platform.anatomy}
    assert any(by_name[n]["dwell_s"] != pytest.approx(dwell[n]) for n in masks)  # a different definition


def test_egd_recording_without_its_rows_says_so(tmp_path):
    item, _ = egd_recording(tmp_path, (201, 151), case="plain")
    rec = recording_input(item)
    assert not any("fixations.csv row" in p for p in gaze_labels(rec, {}, GazeParams()).problems)
    rec.fixations = {k: v for k, v in rec.fixations.items() if k != "egd_rows"}
    problems = gaze_labels(rec, {}, GazeParams()).problems
    assert any(p.startswith("fixations: only the valid fixations were kept") for p in problems)


# ------------------------------------------------------------------------------- REFLACX sentence window


def test_reflacx_preset_sentence_maps_equal_the_authors(tmp_path):
    size = (96, 72)
    fixations = [
        (0.05 + 0.45 * i, 0.05 + 0.45 * i + 0.3, 8 + (37 * i) % 80, 5 + (23 * i) % 62) for i in range(14)
    ]
    spec = ReflacxSpec(image_size=size, fixations=fixations)
    root = write_reflacx(tmp_path / "reflacx", recordings=[spec])
    (item,) = list(read_reflacx(root))
    assert isinstance(item, GazeRecordingData), item
    rec = recording_input(item)
    params = GazeParams.from_dict({"preset": "reflacx"})
    labels = gaze_labels(rec, {}, params)
    ref_maps, ref_windows = original_reflacx_sentence_maps(root / "main_data" / spec.id, *size)
    assert len(labels.sentences) == len(ref_maps) == 2
    # the second window is capped at the first sentence's start (3.1 - 5 < 1.2), the first at 0
    assert [t for s in labels.sentences for t in s["window"]] == pytest.approx(
        [t for w in ref_windows for t in w]
    )
    assert ref_windows[1][0] == pytest.approx(1.2) and ref_windows[0][0] == 0.0
    for sentence, ref in zip(labels.sentences, ref_maps, strict=True):
        got = compute_map(rec, labels.maps[sentence["map"]].spec, {}, params)
        assert got.max() == pytest.approx(1.0)
        assert_equal_maps(got, ref)
    # today's definition gives other windows
    today = gaze_labels(rec, {}, GazeParams())
    assert [tuple(s["window"]) for s in today.sentences] != [tuple(s["window"]) for s in labels.sentences]


def test_sentence_windows_cap():
    spans = [(1.0, 2.0), (2.5, 4.0), (9.0, 10.0)]
    assert sentence_windows(spans, 5.0, "previous_start") == [(0.0, 2.0), (1.0, 4.0), (4.0, 10.0)]
    assert sentence_windows(spans, 2.0, "none") == [(-1.0, 2.0), (0.5, 4.0), (7.0, 10.0)]
    with pytest.raises(ValueError, match="^window_cap:"):
        sentence_windows(spans, 2.0, "later")


# ------------------------------------------------------------------------------- I-AI intense focus


def _smooth_map(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    out = np.zeros((height, width))
    for _ in range(5):
        cy, cx, s = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(8, 60)
        out += rng.uniform(0.2, 1) * np.exp(-((rows - cy) ** 2 + (cols - cx) ** 2) / (2 * s * s))
    return out.astype(np.float32)


@pytest.mark.parametrize(("height", "width", "resize"), [(301, 257, None), (301, 257, 224), (90, 60, 224),
                                                         (512, 400, 224), (7, 5, None)])  # fmt: skip
def test_iai_focus_equals_the_authors(height, width, resize):
    h = _smooth_map(height, width, height + width)
    image8 = an.to_uint8(h)
    ref = original_iai_mask(image8, resize)
    assert np.array_equal(iai_focus(h, resize, at_input=True), ref)
    full = iai_focus(h, resize)
    assert full.shape == (height, width)
    if resize is None:
        assert np.array_equal(full, ref)
    else:
        back = np.asarray(
            Image.fromarray(ref.astype(np.uint8) * 255).resize((width, height), Image.Resampling.NEAREST)
        )
        assert np.array_equal(full, back > 127)
    # the platform's percentile focus is another definition: a map with few distinct values tells them apart
    few = np.repeat(np.arange(10, dtype=np.float32), 3)[None, :]
    assert not np.array_equal(iai_focus(few), an.intense_focus(few, 20.0))
    assert np.array_equal(iai_focus(few), original_iai_mask(an.to_uint8(few), None))


def test_iai_preset_focus_in_labels(tmp_path):
    item, _ = egd_recording(tmp_path, (201, 151), case="plain")
    masks = {name: np.asarray(Image.open(path).convert("L")) > 0 for name, path in item.anatomy_masks.items()}
    rec = recording_input(item)
    params = GazeParams.from_dict({"preset": "iai"})
    labels = gaze_labels(rec, masks, params)
    assert labels.anatomy
    for record in labels.anatomy:
        array = compute_map(rec, labels.maps[record["map"]].spec, masks, params)
        assert np.array_equal(record["focus"], iai_focus(array, 224))


# ------------------------------------------------------------------------------- presets and params


def test_presets_resolve_and_override():
    assert GazeParams.from_dict(None).as_dict() == {**PLATFORM, "preset": "platform"}
    assert GazeParams().as_dict() == GazeParams.from_dict({}).as_dict()
    reflacx = GazeParams.from_dict({"preset": "reflacx", "lead_s": 3})
    assert (reflacx.preset, reflacx.lead_s, reflacx.window_cap) == ("reflacx", 3, "previous_start")
    assert reflacx.sentence_normalise == "max" and reflacx.focus == "percentile"
    fgcxr = GazeParams.from_dict({"preset": "fgcxr"})
    assert (fgcxr.focus, fgcxr.focus_resize, fgcxr.regions) == ("iai", 224, "fgcxr")
    iai = GazeParams.from_dict({"preset": "iai", "focus_resize": None})
    assert (iai.focus, iai.focus_resize) == ("iai", None)
    assert GazeParams.from_dict({"preset": "egd"}).dwell == "egd"
    assert set(PRESETS) >= {"platform", "reflacx", "egd", "iai", "fgcxr"}
    # a stored run's params (every value and the preset's name) resolve to the same definition
    for name in PRESETS:
        stored = GazeParams.from_dict({"preset": name}).as_dict()
        assert GazeParams.from_dict(stored).as_dict() == stored
        assert GazeParams.from_stored(stored).as_dict() == stored
    # params stored before presets keep the EGD-CXR map they were made with
    before = {"method": "auto", "lead_s": 2.0, "percentile": 20.0, "min_share": 0.5, "sigma_px": None,
              "sigma_deg": None, "duration_weighting": True, "normalise": None}  # fmt: skip
    old = GazeParams.from_stored(before)
    assert (old.egd_fpogv, old.egd_pad_even, old.egd_keep_row0) == ("valid", False, True)
    assert old.lead_s == 2.0 and old.preset == "platform"


@pytest.mark.parametrize(
    ("raw", "field"),
    [({"preset": "reflacks"}, "preset"), ({"window_cap": "later"}, "window_cap"), ({"focus": "max"}, "focus"),
     ({"focus_resize": 224}, "focus_resize"), ({"focus": "iai", "focus_resize": 0}, "focus_resize"),
     ({"focus": "iai", "focus_resize": True}, "focus_resize"), ({"dwell": "long"}, "dwell"),
     ({"egd_fpogv": 0}, "egd_fpogv"), ({"egd_pad_even": "yes"}, "egd_pad_even"),
     ({"sentence_normalise": "mean"}, "sentence_normalise"), ({"preset": 3}, "preset")],
)  # fmt: skip
def test_bad_params_name_the_field(raw, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        GazeParams.from_dict(raw)


@pytest.mark.django_db
def test_run_params_record_the_resolved_definition(project):
    from labeling.gaze.service import gaze_run_get_or_create

    run = gaze_run_get_or_create(project=project, params={"preset": "fgcxr", "lead_s": 4.0})
    assert run.params == {**PRESETS["fgcxr"], "lead_s": 4.0, "preset": "fgcxr"}
    again = gaze_run_get_or_create(project=project, params=run.params)
    assert again.pk == run.pk
    other = gaze_run_get_or_create(project=project, params={"preset": "reflacx"})
    assert other.pk != run.pk and other.params["window_cap"] == "previous_start"
