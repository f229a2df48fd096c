"""EGD-CXR (Eye Gaze Data for Chest X-rays, PhysioNet) reader; see docs/formats.md "Eye-gaze recordings".

Files: ``master_sheet.csv``, ``fixations.csv`` (Gazepoint GP3 export), ``bounding_boxes.csv`` and
``audio_segmentation_transcripts/<dicom_id>/{transcript.json, left_lung.png, right_lung.png,
mediastanum.png, aortic_knob.png}``. One recording per ``dicom_id`` of the master sheet; fixation rows
of DICOM_IDs missing from the master sheet (calibration images) are skipped. ``eye_gaze.csv`` (raw
samples) is not read.

Coordinates: FPOGX/FPOGY are fractions of the 1920×1080 screen ((0, 0) top-left). Image pixel
``x = int(W / (1920 − left − right) · (FPOGX·1920 − left))`` (likewise y with 1080, top, bottom) for a
point strictly inside the padded area, else ``x = y = −1`` and ``inside`` False; valid
``X_ORIGINAL``/``Y_ORIGINAL`` (numbers within the image) are taken as they are.

Times: seconds on the clock of ``Time (in secs)``. A fixation row is its last sample (*unverified*), so
the tracker clock of ``FPOGS`` is shifted by ``FPOGS + FPOGD − Time`` of the recording's first valid
fixation: ``start = FPOGS − shift``, ``end = start + FPOGD``. The shift is kept in ``meta["fpogs_shift"]``.

Rows the dataset's scripts cannot use do not reject the recording (issue 15, item 7). They read
``fixations.csv`` with ``pandas.read_csv``, no ``dropna`` and no sort, row by row in file order
(``DataProcessing/DataPostProcessing/create_heatmap_images_and_or_videos.py``), so a NaN FPOGX/FPOGY
fails their inside-the-image test and adds nothing. Here a valid row with an empty or NaN cell
(``common.NA_STRINGS``) in FPOGV, FPOGX, FPOGY, FPOGS, FPOGD (or ``Time (in secs)`` while the clock shift
is not yet known) is skipped, counted and reported in ``problems``; a row whose FPOGS is before the row
above is kept in file order and reported; rows without a DICOM_ID are one skipped item. A transcript
phrase with a NaN time is skipped and reported. Text that is not a number is still an error.
"""

import json
import math
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from studies.ingest.gaze.common import (
    NA_STRINGS,
    Checksum,
    CsvTable,
    GazeItem,
    GazeRecordingData,
    GazeSkipped,
    GazeUnit,
    SkippedRows,
    cell,
    check_id,
    compact,
    failing_unit,
    loose_value,
    na_columns,
    number,
    read_csv,
    read_units,
    rel,
)
from studies.ingest.types import IngestError

FORMAT = "egd"
SCREEN_WIDTH, SCREEN_HEIGHT = 1920, 1080
GAZEPOINT_COLUMNS = [
    "SESSION_ID", "MEDIA_ID", "DICOM_ID", "CNT", "Time (in secs)", "TIMETICK(f=10000000)", "FPOGX", "FPOGY",
    "FPOGS", "FPOGD", "FPOGID", "FPOGV", "BPOGX", "BPOGY", "BPOGV", "LPCX", "LPCY", "LPD", "LPS", "LPV",
    "RPCX", "RPCY", "RPD", "RPS", "RPV", "BKID", "BKDUR", "BKPMIN", "LPMM", "LPMMV", "RPMM", "RPMMV",
    "SACCADE_MAG", "SACCADE_DIR", "VID_FRAME", "X_ORIGINAL", "Y_ORIGINAL",
]  # fmt: skip
EVERY_ROW_COLUMNS = (("time", "Time (in secs)"), ("fpogx", "FPOGX"), ("fpogy", "FPOGY"), ("fpogv", "FPOGV"))
FIXATION_REQUIRED = ["DICOM_ID", "Time (in secs)", "FPOGX", "FPOGY", "FPOGS", "FPOGD", "FPOGV"]
PADDINGS = {
    "left": "image_left_pad",
    "right": "image_right_pad",
    "top": "image_top_pad",
    "bottom": "image_bottom_pad",
}
# Master-sheet columns never copied into the recording (identity, free text, paths).
IDENTIFYING = {
    "dicom_id",
    "path",
    "study_id",
    "patient_id",
    "stay_id",
    "gender",
    "anchor_age",
    "cxr_exam_indication",
}
DX = re.compile(r"^dx(\d+)(_icd)?$")
BOX_COLUMNS = ["dicom_id", "bbox_name", "x1", "x2", "y1", "y2"]
# File name in the dataset -> canonical anatomy name (the dataset spells mediastinum "mediastanum").
MASK_FILES = {
    "left_lung.png": "left_lung",
    "right_lung.png": "right_lung",
    "mediastanum.png": "mediastinum",
    "mediastinum.png": "mediastinum",
    "aortic_knob.png": "aortic_knob",
}
TRANSCRIPTS = "audio_segmentation_transcripts"


def egd_units(path: Path, image_sizes: Mapping[str, tuple[int, int]] | None = None) -> list[GazeUnit]:
    """One unit per master-sheet row, then one skipped unit per DICOM_ID found only in fixations.csv.

    ``image_sizes`` maps a dicom_id to ``(width, height)`` in pixels for recordings without anatomy
    masks (the service passes the sizes of linked scans). Raises ``IngestError`` when ``master_sheet.csv``
    or ``fixations.csv`` is missing or lacks a required column.
    """
    root = Path(path)
    for name in ("master_sheet.csv", "fixations.csv"):
        if not (root / name).is_file():
            raise IngestError(root / name, "missing: not an EGD-CXR folder")
    master = read_csv(root / "master_sheet.csv", "master_sheet.csv")
    master_col = master.index(["dicom_id", *PADDINGS.values()])
    fixations = read_csv(root / "fixations.csv", "fixations.csv")
    fix_col = fixations.index(FIXATION_REQUIRED, ["X_ORIGINAL", "Y_ORIGINAL"])
    by_id: dict[str, list[tuple[int, list[str]]]] = {}
    for row_no, row in fixations.rows:
        by_id.setdefault(_at(row, fix_col["DICOM_ID"]), []).append((row_no, row))
    boxes: dict[str, list[tuple[int, list[str]]]] = {}
    box_table = None
    if (root / "bounding_boxes.csv").is_file():
        box_table = read_csv(root / "bounding_boxes.csv", "bounding_boxes.csv")
        box_col = box_table.index(BOX_COLUMNS)
        for row_no, row in box_table.rows:
            boxes.setdefault(_at(row, box_col["dicom_id"]), []).append((row_no, row))
    sizes = image_sizes if image_sizes is not None else {}

    units: list[GazeUnit] = []
    seen: set[str] = set()
    for row_no, row in master.rows:
        dicom_id = _at(row, master_col["dicom_id"])
        if dicom_id in seen:
            error = IngestError(master.name, f"row {row_no}: dicom_id {dicom_id!r} appears twice", "dicom_id")
            units.append(failing_unit(error, dicom_id))
            continue
        seen.add(dicom_id)
        context = _Context(root, master, master_col, fixations, fix_col, box_table, sizes)
        units.append(
            GazeUnit(
                dicom_id,
                _reader(context, row_no, row, by_id.get(dicom_id, []), boxes.get(dicom_id, [])),
            )
        )
    for dicom_id in by_id:
        if dicom_id in NA_STRINGS:  # NaN in pandas: the dataset's scripts find no image for these rows
            rows = [row_no for row_no, _ in by_id[dicom_id]]
            shown = ", ".join(map(str, rows[:10])) + (" ..." if len(rows) > 10 else "")
            reason = f"fixations.csv: {len(rows)} row(s) without a DICOM_ID (rows {shown})"
        elif dicom_id not in seen:
            reason = "not in master_sheet.csv (calibration image?)"
        else:
            continue
        units.append(GazeUnit(dicom_id, lambda s=GazeSkipped(dicom_id, reason): s))  # noqa: B008
    return units


def read_egd(path: Path, image_sizes: Mapping[str, tuple[int, int]] | None = None) -> Iterator[GazeItem]:
    """Every recording under ``path``: ``GazeRecordingData``, ``GazeSkipped`` or the ``IngestError``."""
    return read_units(egd_units(path, image_sizes))


def read_egd_fixations(
    path: Path, master_sheet: Path, dicom_id: str, width: int, height: int, problems: list[str] | None = None
) -> dict[str, list[Any]]:
    """The valid fixations (``FPOGV`` = 1) of image ``dicom_id`` in an EGD-CXR ``fixations.csv`` (which
    holds every image's fixations) as the columnar dict of ``GazeRecordingData`` (``start``/``end`` s,
    ``x``/``y`` image pixels or -1, ``inside``), mapped with the paddings of the image's row in
    ``master_sheet`` for an image of ``width`` x ``height`` px. Pure: no database.

    Errors are ``IngestError``s naming the file as given, the row and the column: a missing file or
    column, ``dicom_id`` not in the master sheet (or twice), no fixation row with that ``DICOM_ID``. Rows
    with a NaN cell (skipped) and rows out of order (kept) are said in ``problems`` when a list is passed.
    """
    path, master_sheet = Path(path), Path(master_sheet)
    width, height = int(width), int(height)
    for file in (master_sheet, path):
        if not file.is_file():
            raise IngestError(file.as_posix(), "file is missing")
    master = read_csv(master_sheet, master_sheet.as_posix())
    master_col = master.index(["dicom_id", *PADDINGS.values()])
    found = [(row_no, row) for row_no, row in master.rows if _at(row, master_col["dicom_id"]) == dicom_id]
    if not found:
        raise IngestError(master.name, f"no row with dicom_id {dicom_id!r}", "dicom_id")
    if len(found) > 1:
        rows = ", ".join(str(row_no) for row_no, _ in found)
        raise IngestError(master.name, f"rows {rows}: dicom_id {dicom_id!r} appears twice", "dicom_id")
    pads = _paddings(master, *found[0], master_col)
    table = read_csv(path, path.as_posix())
    fix_col = table.index(FIXATION_REQUIRED, ["X_ORIGINAL", "Y_ORIGINAL"])
    fix_rows = [(row_no, row) for row_no, row in table.rows if _at(row, fix_col["DICOM_ID"]) == dicom_id]
    if not fix_rows:
        raise IngestError(table.name, f"no fixation rows with DICOM_ID {dicom_id!r}", "DICOM_ID")
    ctx = _Context(path.parent, master, master_col, table, fix_col, None, {})
    fixations, _shift = _fixations(ctx, fix_rows, width, height, pads, problems)
    return fixations


def _at(row: list[str], i: int) -> str:
    return row[i] if i < len(row) else ""


class _Context:
    def __init__(self, root, master, master_col, fixations, fix_col, box_table, sizes):
        self.root: Path = root
        self.master: CsvTable = master
        self.master_col: dict[str, int] = master_col
        self.fixations: CsvTable = fixations
        self.fix_col: dict[str, int] = fix_col
        self.boxes: CsvTable | None = box_table
        self.sizes: Mapping[str, tuple[int, int]] = sizes


def _reader(context: _Context, row_no: int, row: list[str], fix_rows, box_rows):
    return lambda: _read_recording(context, row_no, row, fix_rows, box_rows)


def _read_recording(ctx: _Context, row_no: int, row: list[str], fix_rows, box_rows) -> GazeRecordingData:
    master = ctx.master
    dicom_id = check_id(
        cell(master, row_no, row, ctx.master_col, "dicom_id"), master.name, row_no, "dicom_id"
    )
    pads = _paddings(master, row_no, row, ctx.master_col)
    problems: list[str] = []
    checksum = Checksum()
    checksum.add_json("master_sheet", dict(zip(master.header, row, strict=False)))
    checksum.add_json("fixations", [r for _, r in fix_rows])
    checksum.add_json("bounding_boxes", [r for _, r in box_rows])

    folder = ctx.root / TRANSCRIPTS / dicom_id
    masks, mask_pixels, mask_size = _masks(folder, ctx.root, checksum)
    if mask_size is not None:
        width, height = mask_size
    elif dicom_id in ctx.sizes:
        width, height = (int(v) for v in ctx.sizes[dicom_id])
    else:
        raise IngestError(
            rel(folder, ctx.root),
            f"image size of {dicom_id} unknown: no anatomy mask PNG and no scan named {dicom_id}",
            "image_size",
        )
    fixations, shift = _fixations(ctx, fix_rows, width, height, pads, problems)
    if not fixations["start"]:
        problems.append("no valid fixations")
    transcript, text = _transcript(folder / "transcript.json", ctx.root, checksum, problems)
    meta = _master_meta(master, row)
    meta["paddings"] = {side: compact(value) for side, value in pads.items()}
    meta["screen"] = [SCREEN_WIDTH, SCREEN_HEIGHT]
    meta["fpogs_shift"] = shift
    meta["time_base"] = "Time (in secs) clock; start = FPOGS - fpogs_shift, end = start + FPOGD"
    meta["bounding_boxes"] = _boxes(ctx.boxes, box_rows) if ctx.boxes is not None else []
    if ctx.boxes is None:
        problems.append("bounding_boxes.csv is missing")
    return GazeRecordingData(
        external_id=dicom_id,
        image_ref=dicom_id,
        reader="",
        source_format=FORMAT,
        image_width=width,
        image_height=height,
        fixations=fixations,
        transcript=transcript,
        transcript_text=text,
        meta=meta,
        anatomy_masks=masks,
        anatomy_mask_pixels=mask_pixels,
        checksum=checksum.hexdigest(),
        problems=problems,
        source=rel(folder, ctx.root),
    )


def _paddings(master: CsvTable, row_no: int, row: list[str], col: dict[str, int]) -> dict[str, float]:
    """``left``/``right``/``top``/``bottom`` screen paddings (px) of a master-sheet row, validated."""
    pads = {}
    for side, column in PADDINGS.items():
        value = number(master, row_no, row, col, column)
        if value < 0:
            raise IngestError(master.name, f"row {row_no}: negative padding {value}", column)
        pads[side] = value
    if pads["left"] + pads["right"] >= SCREEN_WIDTH or pads["top"] + pads["bottom"] >= SCREEN_HEIGHT:
        raise IngestError(
            master.name, f"row {row_no}: paddings leave no room for the image", "image_left_pad"
        )
    return pads


def _masks(folder: Path, root: Path, checksum: Checksum):
    """Anatomy masks of one recording: name -> path, name -> non-zero pixels, and their common size."""
    masks: dict[str, Path] = {}
    pixels: dict[str, int] = {}
    size: tuple[int, int] | None = None
    size_from = ""
    for file_name, anatomy in MASK_FILES.items():
        path = folder / file_name
        if anatomy in masks or not path.is_file():
            continue
        name = rel(path, root)
        try:
            with Image.open(path) as image:
                image.load()
                this_size = image.size  # (width, height)
                pixels[anatomy] = int(np.count_nonzero(np.asarray(image.convert("L"))))
        except (OSError, UnidentifiedImageError) as exc:
            raise IngestError(name, f"not a readable PNG: {exc}") from exc
        if size is not None and this_size != size:
            raise IngestError(name, f"mask size {this_size} differs from {size} of {size_from}", "size")
        size, size_from = this_size, name
        masks[anatomy] = path
        checksum.add_file(file_name, path)
    return masks, pixels, size


def _fixations(ctx: _Context, fix_rows, width: int, height: int, pads: dict[str, float], problems=None):
    """Valid fixations of one image; NaN rows skipped and rows out of order kept, both said in
    ``problems`` (module docstring)."""
    table, col = ctx.fixations, ctx.fix_col
    problems = [] if problems is None else problems
    out: dict[str, Any] = {"start": [], "end": [], "x": [], "y": [], "inside": []}
    shift = None
    previous_start = None
    skipped, unordered = SkippedRows(table.name), []
    scale_x = width / (SCREEN_WIDTH - pads["left"] - pads["right"])
    scale_y = height / (SCREEN_HEIGHT - pads["top"] - pads["bottom"])
    every = _every_row(fix_rows, col, pads)
    for row_no, row in fix_rows:
        if missing := na_columns(row, col, ["FPOGV"]):
            skipped.add(row_no, missing)
            continue
        if number(table, row_no, row, col, "FPOGV") != 1:
            continue
        needed = ["FPOGX", "FPOGY", "FPOGS", "FPOGD"] + (["Time (in secs)"] if shift is None else [])
        if missing := na_columns(row, col, needed):
            skipped.add(row_no, missing)
            continue
        fx = number(table, row_no, row, col, "FPOGX")
        fy = number(table, row_no, row, col, "FPOGY")
        for value, column in ((fx, "FPOGX"), (fy, "FPOGY")):
            if not 0 <= value <= 1:
                raise IngestError(
                    table.name, f"row {row_no}: {value} is not a screen fraction in [0, 1]", column
                )
        fpogs = number(table, row_no, row, col, "FPOGS")
        fpogd = number(table, row_no, row, col, "FPOGD")
        if fpogd < 0:
            raise IngestError(table.name, f"row {row_no}: negative fixation duration {fpogd}", "FPOGD")
        if previous_start is not None and fpogs < previous_start:
            unordered.append(row_no)
        previous_start = fpogs
        if shift is None:
            shift = round(fpogs + fpogd - number(table, row_no, row, col, "Time (in secs)"), 6)
        start = round(fpogs - shift, 6)
        out["start"].append(start)
        out["end"].append(round(start + fpogd, 6))
        x, y = _original(table, row_no, row, col, width, height)
        if x is None:
            xs, ys = fx * SCREEN_WIDTH, fy * SCREEN_HEIGHT
            inside = (
                pads["left"] < xs < SCREEN_WIDTH - pads["right"]
                and pads["top"] < ys < SCREEN_HEIGHT - pads["bottom"]
            )
            x = int(scale_x * (xs - pads["left"])) if inside else -1
            y = int(scale_y * (ys - pads["top"])) if inside else -1
        out["x"].append(x)
        out["y"].append(y)
        out["inside"].append(x >= 0)
    skipped.report(problems)
    if unordered:
        rows = ", ".join(map(str, unordered[:10])) + (" ..." if len(unordered) > 10 else "")
        problems.append(
            f"{table.name}: {len(unordered)} fixation(s) start (FPOGS) before the row above "
            f"(rows {rows}); kept in file order"
        )
    out["egd_rows"] = every
    return out, shift or 0.0


def _every_row(fix_rows, col: dict[str, int], pads: dict[str, float]) -> dict[str, Any]:
    """Every fixations.csv row of the image as the dataset's own scripts read it (FPOGV 0 included, a
    cell that is no finite number as None): ``time``, ``fpogx``, ``fpogy``, ``fpogv`` lists, ``pads``
    (left, right, top, bottom) and ``screen``; used by ``labeling.gaze.heatmaps`` (method egd) and
    EGD-CXR's dwell time."""
    rows: dict[str, Any] = {"time": [], "fpogx": [], "fpogy": [], "fpogv": []}
    for _, row in fix_rows:
        for key, column in EVERY_ROW_COLUMNS:
            try:
                value = float(_at(row, col[column]))
            except ValueError:
                value = math.nan
            rows[key].append(compact(value) if math.isfinite(value) else None)
    rows["pads"] = [compact(pads[side]) for side in ("left", "right", "top", "bottom")]
    rows["screen"] = [SCREEN_WIDTH, SCREEN_HEIGHT]
    return rows


def _original(table: CsvTable, row_no: int, row: list[str], col, width: int, height: int):
    """``(X_ORIGINAL, Y_ORIGINAL)`` when both are numbers within the image, else ``(None, None)``."""
    if "X_ORIGINAL" not in col or "Y_ORIGINAL" not in col:
        return None, None
    values = []
    for column in ("X_ORIGINAL", "Y_ORIGINAL"):
        i = col[column]
        raw = row[i] if i < len(row) else ""
        try:
            values.append(float(raw))
        except ValueError:
            return None, None
    x, y = values
    if 0 <= x < width and 0 <= y < height:
        return compact(x), compact(y)
    return None, None


def _transcript(path: Path, root: Path, checksum: Checksum, problems: list[str]):
    name = rel(path, root)
    if not path.is_file():
        problems.append("transcript.json is missing")
        return [], ""
    data = path.read_bytes()
    checksum.add_bytes("transcript.json", data)
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IngestError(name, f"not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise IngestError(name, "not a JSON object")
    text = doc.get("full_text", "")
    if not isinstance(text, str):
        raise IngestError(name, "not a string", "full_text")
    phrases = doc.get("time_stamped_text", [])
    if not isinstance(phrases, list):
        raise IngestError(name, "not a list", "time_stamped_text")
    out, nan = [], []
    for i, item in enumerate(phrases):
        where = f"time_stamped_text[{i}]"
        if not isinstance(item, dict):
            raise IngestError(name, "not an object", where)
        times = []
        for key in ("begin_time", "end_time"):
            value = item.get(key)
            if isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    value = None
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise IngestError(name, f"not a number: {item.get(key)!r}", f"{where}.{key}")
            times.append(float(value))
        if not all(map(math.isfinite, times)):  # NaN/Infinity (Python's json reads them)
            nan.append(i)
            continue
        if times[1] < times[0]:
            raise IngestError(
                name, f"phrase ends ({times[1]}) before it begins ({times[0]})", f"{where}.end_time"
            )
        phrase = item.get("phrase")
        if not isinstance(phrase, str):
            raise IngestError(name, "not a string", f"{where}.phrase")
        out.append({"text": phrase, "start": times[0], "end": times[1]})
    if nan:
        shown = ", ".join(map(str, nan[:10])) + (" ..." if len(nan) > 10 else "")
        problems.append(f"{name}: {len(nan)} phrase(s) with a NaN time skipped (time_stamped_text[{shown}])")
    return out, text


def _master_meta(master: CsvTable, row: list[str]) -> dict[str, Any]:
    """Diagnoses, condition labels and CheXpert labels of the master sheet; nothing identifying."""
    dx: dict[int, dict[str, str]] = {}
    labels: dict[str, Any] = {}
    chexpert: dict[str, Any] = {}
    for name, raw in zip(master.header, row, strict=False):
        if name in IDENTIFYING or name in PADDINGS.values():
            continue
        match = DX.match(name)
        if match:
            if raw:
                dx.setdefault(int(match.group(1)), {})["icd" if match.group(2) else "text"] = raw
            continue
        value = loose_value(raw)
        if isinstance(value, str):
            continue  # free text outside the known columns might identify someone
        if name.endswith("__chx"):
            chexpert[name[: -len("__chx")]] = value
        else:
            labels[name] = value
    return {
        "dx": [{"text": d.get("text", ""), "icd": d.get("icd", "")} for _, d in sorted(dx.items())],
        "labels": labels,
        "chexpert": chexpert,
    }


def _boxes(table: CsvTable, rows) -> list[dict[str, Any]]:
    """Bounding boxes as ``{"name", "box": [xmin, ymin, xmax, ymax]}`` (image pixels)."""
    col = table.index(BOX_COLUMNS)
    out = []
    for row_no, row in rows:
        x1, x2, y1, y2 = (compact(number(table, row_no, row, col, c)) for c in ("x1", "x2", "y1", "y2"))
        out.append({"name": cell(table, row_no, row, col, "bbox_name"), "box": [x1, y1, x2, y2]})
    return out
