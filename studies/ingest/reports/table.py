"""Report tables: IU X-ray and CT-RATE layouts, or any CSV with named id and text columns."""

import codecs
import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studies.ingest.reports.common import SECTIONS, ReportData, clean, join, report_sections
from studies.ingest.types import IngestError

_CSV_FIELD_LIMIT = 16 * 1024 * 1024
# Column names taken as the report id when none is named and no layout fits (compared lower case,
# letters and digits only).
_ID_NAMES = ("uid", "id", "reportid", "volumename", "studyid", "accession", "accessionnumber")


@dataclass(frozen=True)
class CsvLayout:
    id_column: str
    text_columns: tuple[str, ...]


LAYOUTS: dict[str, CsvLayout] = {
    "iu": CsvLayout("uid", ("indication", "comparison", "findings", "impression")),
    "ct-rate": CsvLayout(
        "VolumeName", ("ClinicalInformation_EN", "Technique_EN", "Findings_EN", "Impressions_EN")
    ),
}


def column_section(name: str) -> str | None:
    """The section a text column feeds, by its name (``Findings_EN`` -> findings); None: ``extra``."""
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    rules = (
        (("finding",), "findings"),
        (("impression", "conclusion"), "impression"),
        (("indication", "clinicalinformation", "clinicalhistory", "history", "reasonforexam"), "indication"),
        (("comparison",), "comparison"),
    )
    for prefixes, section in rules:
        if key.startswith(prefixes):
            return section
    return None


def column_heading(name: str) -> str:
    """``ClinicalInformation_EN`` -> ``CLINICAL INFORMATION``; ``findings`` -> ``FINDINGS``."""
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name).replace("_", " ").replace("-", " ").split()
    if len(words) > 1 and words[-1].lower() == "en":
        words = words[:-1]
    return " ".join(words).upper() or name


def _delimiter(path: Path) -> str:
    return "\t" if path.suffix.lower() == ".tsv" else ","


def _lines(fh: io.BufferedReader) -> Iterator[bytes]:
    """Lines ending in LF, CRLF or a lone CR (old Mac exports)."""
    for raw in fh:
        if b"\r" in raw[:-2] or raw.endswith(b"\r"):
            yield from raw.splitlines(keepends=True)
        else:
            yield raw


def _decoded_lines(path: Path, fallback_lines: set[int]) -> Iterator[str]:
    """The file's lines as text: UTF-8 (BOM dropped) or UTF-16 with a BOM; a line that is not UTF-8 is
    decoded as cp1252, else latin-1, and its number added to ``fallback_lines``."""
    with open(path, "rb") as fh:
        head = fh.read(4)
        fh.seek(0)
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            yield from io.TextIOWrapper(fh, encoding="utf-16", errors="replace", newline="")
            return
        for number, raw in enumerate(_lines(fh), 1):
            if number == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:
                fallback_lines.add(number)
                try:
                    yield raw.decode("cp1252")
                except UnicodeDecodeError:
                    yield raw.decode("latin-1")


@dataclass(frozen=True)
class _TextColumn:
    index: int
    name: str
    section: str | None  # None: kept in ``extra`` under ``name``
    heading: str  # in ``raw_text``


def _find_column(header: list[str], name: str) -> int | None:
    if name in header:
        return header.index(name)
    wanted = "".join(name.lower().split())
    for i, col in enumerate(header):
        if "".join(col.lower().split()) == wanted:
            return i
    return None


def _detect_layout(header: list[str]) -> str | None:
    """The layout whose id and text columns the header has, all of them."""
    for name, layout in LAYOUTS.items():
        if all(_find_column(header, c) is not None for c in (layout.id_column, *layout.text_columns)):
            return name
    return None


def _guess_id_column(header: list[str]) -> str | None:
    for col in header:
        if re.sub(r"[^a-z0-9]", "", col.lower()) in _ID_NAMES:
            return col
    return None


def _plan_columns(
    path: Path, header: list[str], id_column: str | None, text_columns: list[str] | None, layout: str | None
) -> tuple[int, list[_TextColumn]] | IngestError:
    """Index of the id column and ``(index, name)`` of the text columns, or the error that stops it."""
    if layout is not None and layout not in LAYOUTS:
        return IngestError(path, f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}", "layout")
    if text_columns is None and layout is None:
        layout = _detect_layout(header)
    if text_columns is not None:
        wanted_text = list(text_columns)
    elif layout is not None:
        wanted_text = list(LAYOUTS[layout].text_columns)
    else:
        wanted_text = [c for c in header if column_section(c) and c != id_column]  # by their names
        if not wanted_text:
            return IngestError(
                path, "cannot tell which columns hold the report text; name them (text columns)", "header"
            )
    id_name = id_column or (LAYOUTS[layout].id_column if layout else _guess_id_column(header))
    if not id_name:
        return IngestError(path, "name the column that holds the report id", "header")
    missing = [name for name in [id_name, *wanted_text] if _find_column(header, name) is None]
    if missing:
        return IngestError(
            path,
            f"missing column(s) {', '.join(missing)}; the header has {', '.join(header)}",
            ", ".join(missing),
        )
    id_index = _find_column(header, id_name)
    assert id_index is not None
    indexes = dict.fromkeys(i for i in (_find_column(header, n) for n in wanted_text) if i is not None)
    return id_index, [
        _TextColumn(i, header[i], column_section(header[i]), column_heading(header[i]))
        for i in indexes
        if i != id_index
    ]


def _row_report(
    path: Path,
    cells: list[str],
    header: list[str],
    ids: tuple[int, str],
    text: list[_TextColumn],
    row: int,
) -> ReportData | None:
    id_index, ext_id = ids

    def cell(i: int) -> str:
        return clean(cells[i]) if i < len(cells) else ""

    text_indexes = {col.index for col in text}
    mapped = any(col.section for col in text)
    sections = {name: "" for name in SECTIONS}
    extra: dict[str, Any] = {}
    paragraphs: list[str] = []
    for col in text:
        value = cell(col.index)
        if not value:
            continue
        paragraphs.append(f"{col.heading}: {value}" if mapped or len(text) > 1 else value)
        if col.section:
            sections[col.section] = join(sections[col.section], value)
        elif mapped:
            extra[col.name] = value
    if not paragraphs:
        return None
    raw_text = "\n\n".join(paragraphs)
    if not mapped:  # free-text columns (``report``, ``text`` ...): split by the headings inside them
        parsed = report_sections(raw_text)
        sections = {name: parsed[name] for name in SECTIONS}
        extra.update(parsed["extra"])
    for i, name in enumerate(header):
        if i != id_index and i not in text_indexes and name and cell(i) and name not in extra:
            extra[name] = cell(i)
    return ReportData(
        external_id=ext_id,
        source="csv",
        source_name=path.name,
        raw_text=raw_text,
        sections=sections,
        extra=extra,
        link_keys={"file": path.name, "row": str(row)},
    )


def iter_report_csv(
    path: str | Path,
    *,
    id_column: str | None = None,
    text_columns: list[str] | None = None,
    layout: str | None = None,
) -> Iterator[ReportData | IngestError]:
    """Stream a report CSV, one ``ReportData`` or ``IngestError`` per data row.

    A header without the id or text columns yields one error and nothing else. Rows are numbered as a
    spreadsheet shows them (the header is row 1). A row with an empty id, a repeated id or no text is an
    error of that row only. Lines that are not UTF-8 are read as cp1252/latin-1 and the rows they belong
    to carry a warning.
    """
    path = Path(path)
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
    fallback: set[int] = set()
    try:
        lines = _decoded_lines(path, fallback)
        reader = csv.reader(lines, delimiter=_delimiter(path), skipinitialspace=True)
        header: list[str] | None = None
        for header_row in reader:
            if any(c.strip() for c in header_row):
                header = [c.strip().lstrip("\ufeff").strip() for c in header_row]
                break
    except (OSError, csv.Error) as exc:
        yield IngestError(path, f"cannot read the CSV: {exc}")
        return
    if header is None:
        yield IngestError(path, "the file is empty (no header row)")
        return
    plan = _plan_columns(path, header, id_column, text_columns, layout)
    if isinstance(plan, IngestError):
        yield plan
        return
    id_index, text = plan
    id_name = header[id_index]
    seen: dict[str, int] = {}
    row, last_line = 1, reader.line_num
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            row, last_line = row + 1, reader.line_num
            yield IngestError(path, f"malformed CSV near line {reader.line_num}: {exc}", f"row {row}")
            continue
        except OSError as exc:
            yield IngestError(path, f"cannot read the CSV: {exc}", f"row {row + 1}")
            return
        first_line, last_line = last_line + 1, reader.line_num
        row += 1
        if not any(c.strip() for c in cells):
            continue
        ext_id = clean(cells[id_index]) if id_index < len(cells) else ""
        if not ext_id:
            yield IngestError(path, f"empty id in column {id_name}", f"row {row}")
            continue
        if len(ext_id) > 256:
            yield IngestError(path, f"id in column {id_name} is longer than 256 characters", f"row {row}")
            continue
        if ext_id in seen:
            yield IngestError(path, f"duplicate id {ext_id!r} (first in row {seen[ext_id]})", f"row {row}")
            continue
        report = _row_report(path, cells, header, (id_index, ext_id), text, row)
        if report is None:
            names = ", ".join(col.name for col in text)
            yield IngestError(path, f"no report text in column(s) {names}", f"row {row}")
            continue
        seen[ext_id] = row
        bad = sorted(n for n in fallback if first_line <= n <= last_line)
        if bad:
            report.warnings.append(
                f"{path.name} row {row}: not UTF-8 (line {', '.join(map(str, bad))}); read as cp1252/latin-1"
            )
        yield report


def read_report_csv(
    path: str | Path,
    *,
    id_column: str | None = None,
    text_columns: list[str] | None = None,
    layout: str | None = None,
) -> tuple[list[ReportData], list[IngestError]]:
    """Read a whole report CSV (see ``iter_report_csv``); ``layout`` is ``iu`` or ``ct-rate`` and is
    detected from the header when neither it nor ``text_columns`` is given. Text columns map to sections
    by name (``column_section``); the other columns go to ``extra`` under their own names."""
    reports: list[ReportData] = []
    errors: list[IngestError] = []
    for item in iter_report_csv(path, id_column=id_column, text_columns=text_columns, layout=layout):
        (errors if isinstance(item, IngestError) else reports).append(item)
    return reports, errors


def count_csv_rows(path: str | Path) -> int:
    """Data rows of a CSV (quoted multi-line fields counted once), for progress reporting."""
    try:
        reader = csv.reader(_decoded_lines(Path(path), set()), delimiter=_delimiter(Path(path)))
        return max(0, sum(1 for _ in reader) - 1)
    except (OSError, csv.Error):
        return 0
