"""REFLACX (eye tracking on MIMIC-CXR, PhysioNet) reader; see docs/formats.md "Eye-gaze recordings".

Layout: ``main_data/metadata_phase_{1,2,3}.csv`` and ``main_data/<id>/{fixations.csv,
timestamps_transcription.csv, transcription.txt, chest_bounding_box.csv, anomaly_location_ellipses.csv}``.
The reader may be pointed at the dataset folder or at ``main_data`` itself. Raw samples
(``gaze_data/<id>/gaze.csv``) are not read.

Coordinates: ``x_position``/``y_position`` are pixels of the original image (x = column, y = row);
times are seconds from the start of the dictation audio. ``image_size_x``/``image_size_y`` of the
metadata give the image width/height in pixels.

Rows the authors' code cannot use do not reject the recording (issue 15, item 7). The authors read
``fixations.csv`` and ``timestamps_transcription.csv`` with ``pandas.read_csv`` and no ``dropna`` or sort
(``ricbl/eyetracking`` ``generate_heatmaps.py``, ``ricbl/eye-tracking-localization``
``find_fixations_all_sentences.py``): a row with an empty or NaN cell (``common.NA_STRINGS``) in a column
their heatmaps read (all but the pupil) gives NaN there, so it is skipped here, counted and reported in
``problems`` (a NaN pupil only makes ``pupil`` null, as their heatmaps do not read it); a row that starts
before the row above is used in file order there (their heatmaps sum over rows, their sentences follow the
rows), so it is kept in file order here and reported. Text that is not a number is still an error.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from studies.ingest.gaze.common import (
    Checksum,
    CsvTable,
    GazeItem,
    GazeRecordingData,
    GazeSkipped,
    GazeUnit,
    SkippedRows,
    boolean,
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

FORMAT = "reflacx"
PHASES = (1, 2, 3)
METADATA_COLUMNS = [
    "id",
    "split",
    "eye_tracking_data_discarded",
    "image",
    "dicom_id",
    "subject_id",
    "image_size_x",
    "image_size_y",
]
FIXATION_COLUMNS = [
    "timestamp_start_fixation",
    "timestamp_end_fixation",
    "x_position",
    "y_position",
    "pupil_area_normalized",
    "angular_resolution_x_pixels_per_degree",
    "angular_resolution_y_pixels_per_degree",
    "window_width",
    "window_level",
    "xmin_shown_from_image",
    "ymin_shown_from_image",
    "xmax_shown_from_image",
    "ymax_shown_from_image",
    "xmin_in_screen_coordinates",
    "ymin_in_screen_coordinates",
    "xmax_in_screen_coordinates",
    "ymax_in_screen_coordinates",
]
# Columns the platform stores; the window and screen-rectangle columns are optional.
FIXATION_REQUIRED = FIXATION_COLUMNS[:7] + FIXATION_COLUMNS[9:13]
SHOWN_RECT = FIXATION_COLUMNS[9:13]
# What the authors' heatmaps read of a row (a NaN there makes their map NaN): a NaN elsewhere keeps the row.
HEATMAP_COLUMNS = [c for c in FIXATION_REQUIRED if c != "pupil_area_normalized"]
WORD_COLUMNS = ["word", "timestamp_start_word", "timestamp_end_word"]
BOX_COLUMNS = ["xmin", "ymin", "xmax", "ymax"]
ELLIPSE_FIXED = [*BOX_COLUMNS, "certainty"]


def find_main_data(path: Path) -> Path:
    """The ``main_data`` folder: ``path/main_data`` or ``path`` itself when it holds metadata files."""
    path = Path(path)
    if (path / "main_data").is_dir():
        return path / "main_data"
    if any((path / f"metadata_phase_{p}.csv").is_file() for p in PHASES):
        return path
    raise IngestError(path, "not a REFLACX folder: no main_data/metadata_phase_N.csv")


def reflacx_units(path: Path) -> list[GazeUnit]:
    """One unit per metadata row of every phase (plus one failing unit per unreadable metadata file).

    Raises ``IngestError`` when ``path`` is not a REFLACX folder at all.
    """
    main = find_main_data(path)
    root = Path(path)
    units: list[GazeUnit] = []
    for phase in PHASES:
        meta_path = main / f"metadata_phase_{phase}.csv"
        if not meta_path.is_file():
            continue
        name = rel(meta_path, root)
        try:
            table = read_csv(meta_path, name)
            col = table.index(METADATA_COLUMNS)
        except IngestError as exc:
            units.append(failing_unit(exc))
            continue
        labels = [h for h in table.header if h not in METADATA_COLUMNS]
        for row_no, row in table.rows:
            rec_id = row[col["id"]] if col["id"] < len(row) else ""
            units.append(
                GazeUnit(
                    external_id=rec_id,
                    read=_reader(main, root, table, phase, col, labels, row_no, row),
                )
            )
    return units


def read_reflacx(path: Path) -> Iterator[GazeItem]:
    """Every recording under ``path``: ``GazeRecordingData``, ``GazeSkipped`` or the ``IngestError``."""
    return read_units(reflacx_units(path))


def read_reflacx_fixations(
    path: Path, width: int, height: int, problems: list[str] | None = None
) -> dict[str, list[Any]]:
    """The fixations of one REFLACX ``fixations.csv`` as the columnar dict of ``GazeRecordingData``
    (``start``/``end`` s, ``x``/``y`` image pixels, ``pupil``, ``ang_res_x``/``ang_res_y`` px per degree,
    ``shown_rect`` and ``inside``) for an image of ``width`` x ``height`` px (the metadata's
    ``image_size_x``/``image_size_y``). Pure: no database.

    Errors are ``IngestError``s naming ``path`` as given, the row and the column; fixations outside the
    image are kept (``inside`` False), rows with a NaN cell skipped and rows out of time order kept, each
    reported in ``problems`` when a list is passed (module docstring).
    """
    path = Path(path)
    # Relative to "." a relative path stays as given; an absolute one is named in full.
    return _fixations(path, Path(), int(width), int(height), [] if problems is None else problems)


def _reader(main, root, table: CsvTable, phase, col, labels, row_no, row):
    return lambda: _read_recording(main, root, table, phase, col, labels, row_no, row)


def _read_recording(
    main: Path,
    root: Path,
    table: CsvTable,
    phase: int,
    col: dict[str, int],
    labels: list[str],
    row_no: int,
    row: list[str],
) -> GazeRecordingData | GazeSkipped:
    rec_id = check_id(cell(table, row_no, row, col, "id"), table.name, row_no, "id")
    if boolean(table, row_no, row, col, "eye_tracking_data_discarded"):
        return GazeSkipped(rec_id, "eye_tracking_data_discarded is true in " + table.name)
    dicom_id = cell(table, row_no, row, col, "dicom_id")
    if not dicom_id or len(dicom_id) > 256:
        raise IngestError(table.name, f"row {row_no}: no usable dicom_id: {dicom_id!r}", "dicom_id")
    width = number(table, row_no, row, col, "image_size_x")
    height = number(table, row_no, row, col, "image_size_y")
    for value, column in ((width, "image_size_x"), (height, "image_size_y")):
        if value < 1 or not value.is_integer():
            raise IngestError(table.name, f"row {row_no}: not a positive integer: {value}", column)
    width_px, height_px = int(width), int(height)
    where = {name: i for i, name in enumerate(table.header)}
    label_values = {
        name: loose_value(row[where[name]]) if where[name] < len(row) else None for name in labels
    }

    folder = main / rec_id
    if not folder.is_dir():
        raise IngestError(rel(folder, root), "recording folder is missing")
    checksum = Checksum()
    # The metadata row counts, but not the path of the image or the subject id (not kept anyway).
    checksum.add_json("metadata", {"phase": phase, "row": dict(zip(table.header, row, strict=False))})
    for file in sorted(folder.iterdir()):
        if file.is_file():
            checksum.add_file(file.name, file)

    problems: list[str] = []
    fixations = _fixations(folder / "fixations.csv", root, width_px, height_px, problems)
    transcript = _words(folder / "timestamps_transcription.csv", root, problems)
    text_path = folder / "transcription.txt"
    text = ""
    if text_path.is_file():
        try:
            text = text_path.read_text(encoding="utf-8-sig").strip()
        except UnicodeDecodeError as exc:
            raise IngestError(rel(text_path, root), f"not UTF-8 text: {exc}") from exc
    else:
        problems.append("transcription.txt is missing")
    meta: dict[str, Any] = {
        "split": cell(table, row_no, row, col, "split"),
        "phase": phase,
        "labels": label_values,
        "chest_box": _chest_box(folder / "chest_bounding_box.csv", root, problems),
        "ellipses": _ellipses(folder / "anomaly_location_ellipses.csv", root, problems),
    }
    if not fixations["start"]:
        problems.append("no fixations")
    return GazeRecordingData(
        external_id=rec_id,
        image_ref=dicom_id,
        # The public data does not identify the radiologist (the id prefix is not documented as one).
        reader="",
        source_format=FORMAT,
        image_width=width_px,
        image_height=height_px,
        fixations=fixations,
        transcript=transcript,
        transcript_text=text,
        meta=meta,
        checksum=checksum.hexdigest(),
        problems=problems,
        source=rel(folder, root),
    )


def _fixations(path: Path, root: Path, width: int, height: int, problems: list[str]) -> dict[str, list[Any]]:
    """Fixation columns. A fixation outside the image (the reader looked off it) is kept with
    ``inside`` False and reported in ``problems``, rows named; if every fixation is outside, the image
    size must be wrong and the recording is refused. NaN rows and rows out of order: module docstring."""
    name = rel(path, root)
    if not path.is_file():
        raise IngestError(name, "fixations.csv is missing")
    table = read_csv(path, name)
    col = table.index(FIXATION_REQUIRED)
    out: dict[str, list[Any]] = {
        "start": [],
        "end": [],
        "x": [],
        "y": [],
        "pupil": [],
        "ang_res_x": [],
        "ang_res_y": [],
        "shown_rect": [],
        "inside": [],
    }
    outside: list[int] = []
    skipped, unordered, no_pupil = SkippedRows(name), [], []
    previous_start = None
    for row_no, row in table.rows:
        if missing := na_columns(row, col, HEATMAP_COLUMNS):
            skipped.add(row_no, missing)
            continue
        start = number(table, row_no, row, col, "timestamp_start_fixation")
        end = number(table, row_no, row, col, "timestamp_end_fixation")
        if end < start:
            raise IngestError(
                name,
                f"row {row_no}: fixation ends ({end}) before it starts ({start})",
                "timestamp_end_fixation",
            )
        if previous_start is not None and start < previous_start:
            unordered.append(row_no)
        previous_start = start
        x = number(table, row_no, row, col, "x_position")
        y = number(table, row_no, row, col, "y_position")
        inside = 0 <= x < width and 0 <= y < height
        if not inside:
            outside.append(row_no)
        out["inside"].append(inside)
        out["start"].append(start)
        out["end"].append(end)
        out["x"].append(compact(x))
        out["y"].append(compact(y))
        if na_columns(row, col, ["pupil_area_normalized"]):
            no_pupil.append(row_no)
            out["pupil"].append(None)
        else:
            out["pupil"].append(number(table, row_no, row, col, "pupil_area_normalized"))
        out["ang_res_x"].append(compact(number(table, row_no, row, col, FIXATION_COLUMNS[5])))
        out["ang_res_y"].append(compact(number(table, row_no, row, col, FIXATION_COLUMNS[6])))
        out["shown_rect"].append([compact(number(table, row_no, row, col, c)) for c in SHOWN_RECT])
    skipped.report(problems)
    _report_unordered(name, unordered, "fixation", problems)
    if no_pupil:
        shown = ", ".join(map(str, no_pupil[:10])) + (" ..." if len(no_pupil) > 10 else "")
        problems.append(f"{name}: pupil_area_normalized empty or NaN in rows {shown}; kept with pupil null")
    if outside:
        rows = ", ".join(map(str, outside[:10])) + (" ..." if len(outside) > 10 else "")
        message = (
            f"{len(outside)} of {len(out['x'])} fixations outside the {width}x{height} image (rows {rows})"
        )
        if len(outside) == len(out["x"]):
            raise IngestError(name, f"{message}: is image_size_x/image_size_y right?", "x_position")
        problems.append(f"{name}: {message}; kept with inside=false")
    return out


def _words(path: Path, root: Path, problems: list[str]) -> list[dict[str, Any]]:
    if not path.is_file():
        problems.append("timestamps_transcription.csv is missing")
        return []
    table = read_csv(path, rel(path, root))
    col = table.index(WORD_COLUMNS)
    words = []
    skipped, unordered = SkippedRows(table.name), []
    previous_start = None
    for row_no, row in table.rows:
        if missing := na_columns(row, col, WORD_COLUMNS):
            skipped.add(row_no, missing)
            continue
        start = number(table, row_no, row, col, "timestamp_start_word")
        end = number(table, row_no, row, col, "timestamp_end_word")
        if end < start:
            raise IngestError(
                table.name,
                f"row {row_no}: word ends ({end}) before it starts ({start})",
                "timestamp_end_word",
            )
        if previous_start is not None and start < previous_start:
            unordered.append(row_no)
        previous_start = start
        words.append({"text": cell(table, row_no, row, col, "word"), "start": start, "end": end})
    skipped.report(problems)
    _report_unordered(table.name, unordered, "word", problems)
    return words


def _report_unordered(name: str, rows: list[int], what: str, problems: list[str]) -> None:
    """Rows that start before the row above: kept in file order, as the authors' code reads them."""
    if rows:
        shown = ", ".join(map(str, rows[:10])) + (" ..." if len(rows) > 10 else "")
        problems.append(
            f"{name}: {len(rows)} {what}(s) start before the row above (rows {shown}); kept in file order"
        )


def _chest_box(path: Path, root: Path, problems: list[str]) -> list[int | float] | None:
    if not path.is_file():
        problems.append("chest_bounding_box.csv is missing")
        return None
    table = read_csv(path, rel(path, root))
    col = table.index(BOX_COLUMNS)
    if not table.rows:
        problems.append("chest_bounding_box.csv has no box")
        return None
    row_no, row = table.rows[0]
    return [compact(number(table, row_no, row, col, c)) for c in BOX_COLUMNS]


def _ellipses(path: Path, root: Path, problems: list[str]) -> list[dict[str, Any]]:
    """Each ellipse: ``box`` (xmin, ymin, xmax, ymax of the bounding box, image pixels), ``certainty``
    (as stored, 1/3/5/7/9 scale unverified) and ``labels`` (names of the label columns that are true)."""
    if not path.is_file():
        problems.append("anomaly_location_ellipses.csv is missing")
        return []
    table = read_csv(path, rel(path, root))
    col = table.index(ELLIPSE_FIXED)
    label_cols = [h for h in table.header if h not in ELLIPSE_FIXED]
    label_index = {h: table.header.index(h) for h in label_cols}
    out = []
    for row_no, row in table.rows:
        box = [compact(number(table, row_no, row, col, c)) for c in BOX_COLUMNS]
        certainty = compact(number(table, row_no, row, col, "certainty"))
        names = [h for h in label_cols if boolean(table, row_no, row, label_index, h)]
        out.append({"box": box, "certainty": certainty, "labels": names})
    return out
