"""Types and CSV helpers shared by the REFLACX and EGD-CXR readers (pure: no database).

Row numbers in errors are spreadsheet rows: the header is row 1, the first data row is row 2.
File names in errors are relative to the folder the import was pointed at (POSIX separators).
"""

import csv
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studies.ingest.types import IngestError

# External ids become folder names and storage keys: nothing that could climb out of a folder.
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
TRUE_WORDS = {"true", "1", "yes", "t", "y", "1.0"}
FALSE_WORDS = {"false", "0", "no", "f", "n", "0.0"}


@dataclass
class GazeRecordingData:
    """One eye-gaze recording of one image, parsed and validated.

    ``fixations`` is columnar (see ``studies.models.GazeRecording``): ``start``/``end`` in seconds from
    the start of the dictation, ``x``/``y`` in pixels of the original image (x = column, y = row, origin
    top-left; ``-1`` where the point fell outside the image and ``inside`` is False). ``image_width`` and
    ``image_height`` are in pixels. ``anatomy_masks`` maps a canonical anatomy name to its PNG file
    (image resolution); ``anatomy_mask_pixels`` holds the non-zero pixel count of each mask.
    """

    external_id: str
    image_ref: str
    reader: str
    source_format: str
    image_width: int
    image_height: int
    fixations: dict[str, list[Any]]
    transcript: list[dict[str, Any]] = field(default_factory=list)
    transcript_text: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    anatomy_masks: dict[str, Path] = field(default_factory=dict)
    anatomy_mask_pixels: dict[str, int] = field(default_factory=dict)
    checksum: str = ""
    problems: list[str] = field(default_factory=list)
    source: str = ""  # where the recording was read from, for errors (relative to the import root)

    @property
    def fixation_count(self) -> int:
        return len(self.fixations.get("start", []))

    @property
    def usable(self) -> bool:
        """At least one fixation on the image."""
        inside = self.fixations.get("inside")
        if inside is not None:
            return any(inside)
        return self.fixation_count > 0


@dataclass
class GazeSkipped:
    """A recording deliberately not imported (e.g. REFLACX ``eye_tracking_data_discarded``)."""

    external_id: str
    reason: str


GazeItem = GazeRecordingData | GazeSkipped | IngestError


@dataclass
class GazeUnit:
    """One recording found in a folder, not yet read. ``read()`` parses it or raises ``IngestError``."""

    external_id: str
    read: Callable[[], GazeRecordingData | GazeSkipped]


def read_units(units: Iterable[GazeUnit]) -> Iterator[GazeItem]:
    """Read each unit; a broken recording yields its ``IngestError`` and the others go on."""
    for unit in units:
        try:
            yield unit.read()
        except IngestError as exc:
            yield exc


def failing_unit(error: IngestError, external_id: str = "") -> GazeUnit:
    """A unit that only reports a folder- or file-level problem."""

    def read() -> GazeRecordingData:
        raise error

    return GazeUnit(external_id=external_id, read=read)


def rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


@dataclass
class CsvTable:
    """A CSV file read whole: ``header`` with surrounding spaces stripped, rows with their row numbers."""

    name: str  # for errors, relative to the import root
    header: list[str]
    rows: list[tuple[int, list[str]]]

    def index(self, required: Iterable[str], optional: Iterable[str] = ()) -> dict[str, int]:
        """Column positions; ``IngestError`` naming the first required column that is missing."""
        where = {name: i for i, name in enumerate(self.header)}
        out: dict[str, int] = {}
        for name in required:
            if name not in where:
                raise IngestError(self.name, f"missing column {name!r}", name)
            out[name] = where[name]
        for name in optional:
            if name in where:
                out[name] = where[name]
        return out


def read_csv(path: Path, name: str) -> CsvTable:
    """Read a CSV (LF or CRLF line endings, optional UTF-8 BOM). Empty file: ``IngestError``."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise IngestError(name, "empty file (no header row)")
            rows: list[tuple[int, list[str]]] = []
            row_no = 1
            for row in reader:
                row_no += 1
                if not row or all(not cell.strip() for cell in row):
                    continue
                rows.append((row_no, [cell.strip() for cell in row]))
    except UnicodeDecodeError as exc:
        raise IngestError(name, f"not UTF-8 text: {exc}") from exc
    except csv.Error as exc:
        raise IngestError(name, f"malformed CSV: {exc}") from exc
    return CsvTable(name=name, header=[h.strip() for h in header], rows=rows)


def cell(table: CsvTable, row_no: int, row: list[str], col: dict[str, int], name: str) -> str:
    i = col[name]
    if i >= len(row):
        raise IngestError(table.name, f"row {row_no}: no value (row has {len(row)} cells)", name)
    return row[i]


def number(table: CsvTable, row_no: int, row: list[str], col: dict[str, int], name: str) -> float:
    """A finite number from a cell, or ``IngestError`` naming file, row and column."""
    raw = cell(table, row_no, row, col, name)
    try:
        value = float(raw)
    except ValueError:
        raise IngestError(table.name, f"row {row_no}: not a number: {raw!r}", name) from None
    if not math.isfinite(value):
        raise IngestError(table.name, f"row {row_no}: not a finite number: {raw!r}", name)
    return value


# pandas.read_csv's default NA strings: the datasets' authors read these files with pandas, where such a
# cell (or a cell missing from a short row) is NaN.
NA_STRINGS = frozenset({
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A",
    "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
})  # fmt: skip


def na_columns(row: list[str], col: dict[str, int], names: Iterable[str]) -> list[str]:
    """The columns among ``names`` whose cell is missing or NaN as pandas reads it (``NA_STRINGS``)."""
    return [name for name in names if col[name] >= len(row) or row[col[name]] in NA_STRINGS]


class SkippedRows:
    """Rows of one file left out of a recording (a NaN cell where the authors' code gets NaN), reported
    as one problem naming the file, the rows and the columns."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.rows: list[int] = []
        self.columns: list[str] = []

    def add(self, row_no: int, columns: Iterable[str]) -> None:
        self.rows.append(row_no)
        self.columns.extend(c for c in columns if c not in self.columns)

    def report(self, problems: list[str]) -> None:
        if not self.rows:
            return
        rows = ", ".join(map(str, self.rows[:10])) + (" ..." if len(self.rows) > 10 else "")
        plural = "s" if len(self.rows) > 1 else ""
        problems.append(
            f"{self.name}: {len(self.rows)} row{plural} with an empty or NaN value skipped "
            f"(row{plural} {rows}; {', '.join(self.columns)})"
        )


def boolean(table: CsvTable, row_no: int, row: list[str], col: dict[str, int], name: str) -> bool:
    raw = cell(table, row_no, row, col, name)
    low = raw.lower()
    if low in TRUE_WORDS:
        return True
    if low in FALSE_WORDS:
        return False
    raise IngestError(table.name, f"row {row_no}: not a boolean: {raw!r}", name)


def compact(value: float) -> int | float:
    """Integral floats as ints (pixel coordinates, labels), others unchanged."""
    return int(value) if float(value).is_integer() else value


def loose_value(raw: str) -> bool | int | float | str | None:
    """A metadata cell as the most specific JSON value: empty → None, booleans, numbers, else text."""
    text = raw.strip()
    if not text:
        return None
    low = text.lower()
    if low in {"true", "false"}:
        return low == "true"
    try:
        value = float(text)
    except ValueError:
        return text
    if not math.isfinite(value):
        return text
    return compact(value)


def check_id(value: str, file: str, row_no: int, column: str) -> str:
    if not SAFE_ID.match(value):
        raise IngestError(file, f"row {row_no}: not a usable recording id: {value!r}", column)
    return value


class Checksum:
    """sha256 over the named parts of one recording (files and rows), in a stable order."""

    def __init__(self) -> None:
        self._parts: list[tuple[str, str]] = []

    def add_bytes(self, name: str, data: bytes) -> None:
        self._parts.append((name, hashlib.sha256(data).hexdigest()))

    def add_file(self, name: str, path: Path) -> None:
        self.add_bytes(name, path.read_bytes())

    def add_json(self, name: str, value: Any) -> None:
        self.add_bytes(name, json.dumps(value, sort_keys=True, separators=(",", ":")).encode())

    def hexdigest(self) -> str:
        digest = hashlib.sha256()
        for name, part in sorted(self._parts):
            digest.update(f"{name}\0{part}\n".encode())
        return digest.hexdigest()
