"""Import of radiology reports (CSV tables, plain-text files, DICOM SR) and their linking to studies.

Linking (``link``), always within the project:

- ``"id"``: the report id equals a Study's ``external_id`` or a Scan's ``name`` (also with an image
  suffix such as ``.nii.gz`` taken off the id); with ``link_pattern`` also the id that the pattern's
  group extracts from a scan name (``r"CXR(\\d+)_"``: report ``7`` -> scan ``CXR7_IM-2263-1001``).
- ``"pattern"``: as ``"id"``, and for text and SR reports the report id is what the pattern extracts
  from the report's file name (when it matches).
- ``"accession"``: ``accession_hash(secret, accession)`` equals ``Study.accession_hash``; the accession is
  the SR header's AccessionNumber, or the CSV id column.
- ``"study-uid"``: ``uid_remap(secret, StudyInstanceUID)`` equals ``Study.study_uid`` (SR header, or the
  CSV id column).

Several matching studies: the first (lowest id) is taken and a warning says so. Identifiers never get
stored: an SR's id is kept as ``acc-<keyed hash>`` (or its remapped SOP Instance UID), a CSV id that is an
accession (link ``accession``) or a Study UID (link ``study-uid``) likewise; ``extra["link_keys"]`` holds
only keyed hashes and remapped UIDs, so ``reports_link`` can link later.
"""

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.db import DatabaseError, transaction

from core.models import Project
from studies.ingest.reports import (
    SECTIONS,
    ReportData,
    count_csv_rows,
    iter_report_csv,
    read_report_sr,
    read_report_text,
)
from studies.ingest.types import IngestError
from studies.models import Report, Study
from studies.services.report_links import (
    _compile,
    _Keys,
    _keys_of,
    _keys_of_stored,
    _pick,
    _Resolver,
    _scrub_report,
)

TEXT_SUFFIXES = {".txt", ".text", ".rpt", ".report", ".md", ""}
CHUNK = 250
_UNLINKED_SHOWN = 1000

Progress = Callable[[int, int], None]


@dataclass
class ReportImportSummary:
    """What an import did. ``unlinked``: stored ids of the reports left without a study (first 1000)."""

    stored: int = 0
    updated: int = 0
    skipped: int = 0  # same id, same text: nothing to do
    linked: int = 0  # reports linked to a study in this run (new, updated or earlier unlinked ones)
    unlinked: list[str] = field(default_factory=list)
    unlinked_count: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {
            "stored": self.stored,
            "updated": self.updated,
            "skipped": self.skipped,
            "linked": self.linked,
            "unlinked": self.unlinked_count,
            "errors": len(self.errors),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.counts(),
            "unlinked_ids": self.unlinked,
            "errors": self.errors,
            "warnings": self.warnings,
        }

    def _unlinked(self, external_id: str) -> None:
        self.unlinked_count += 1
        if len(self.unlinked) < _UNLINKED_SHOWN:
            self.unlinked.append(external_id)


def _sources(
    paths: Iterable[Path], csv_path: Path | None, csv_args: dict[str, Any]
) -> Iterator[ReportData | IngestError]:
    if csv_path is not None:
        yield from _csv_items(Path(csv_path), csv_args)
    for path in _expand(paths):
        if path.suffix.lower() in {".csv", ".tsv"}:
            yield from _csv_items(path, csv_args)
            continue
        try:
            if _is_dicom(path):
                yield read_report_sr(path)
            elif path.suffix.lower() in TEXT_SUFFIXES:
                yield read_report_text(path)
            else:
                yield IngestError(path, f"unsupported report file type {path.suffix!r} (csv, txt, DICOM SR)")
        except IngestError as exc:
            yield exc


def _csv_items(path: Path, csv_args: dict[str, Any]) -> Iterator[ReportData | IngestError]:
    if not path.is_file():
        yield IngestError(path, "no such file")
        return
    yield from iter_report_csv(path, **csv_args)


def _expand(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        path = Path(path)
        if path.is_dir():
            yield from (p for p in sorted(path.rglob("*")) if p.is_file() and not p.name.startswith("."))
        else:
            yield path


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as fh:
            return fh.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _total(paths: list[Path], csv_path: Path | None) -> int:
    total = count_csv_rows(csv_path) if csv_path else 0
    for path in _expand(paths):
        total += count_csv_rows(path) if path.suffix.lower() in {".csv", ".tsv"} else 1
    return total


def _chunks(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _where(data: ReportData) -> str:
    return data.source_name + (f" row {data.link_keys['row']}" if "row" in data.link_keys else "")


class _Importer:
    def __init__(self, project: Project, link: str, resolver: _Resolver, summary: ReportImportSummary):
        self.project, self.link, self.resolver, self.summary = project, link, resolver, summary
        self.secret = project.deid_secret
        self.seen: dict[str, str] = {}  # stored id -> where it came from in this import

    def chunk(self, items: list[ReportData | IngestError]) -> None:
        planned: list[tuple[ReportData, str, _Keys]] = []
        for item in items:
            if isinstance(item, IngestError):
                self.summary.errors.append(item.as_dict())
                continue
            stored_id, keys = _keys_of(item, self.secret, self.link)
            if stored_id in self.seen:
                reason = f"duplicate report id {item.external_id!r} (also {self.seen[stored_id]})"
                self.summary.errors.append(IngestError(_where(item), reason).as_dict())
                continue
            self.seen[stored_id] = _where(item)
            planned.append((item, stored_id, keys))
        if not planned:
            return
        existing = {
            r.external_id: r
            for r in Report.objects.filter(
                project=self.project, external_id__in=[p[1] for p in planned]
            ).only("id", "external_id", "checksum", "study_id")
        }
        choice = {
            stored_id: _pick(self.resolver.candidates(keys), stored_id, self.summary.warnings)
            for _, stored_id, keys in planned
        }
        wanted = {sid for sid in choice.values() if sid} | {
            r.study_id for r in existing.values() if r.study_id
        }
        studies = Study.objects.only("id", "identifier_hashes").in_bulk(wanted)
        with transaction.atomic():
            for data, stored_id, keys in planned:
                self.summary.warnings.extend(data.warnings)
                report = existing.get(stored_id)
                same = report is not None and report.checksum == data.checksum
                if same and (report.study_id or not choice[stored_id]):
                    self.summary.skipped += 1  # nothing to do: no savepoint needed
                    if not report.study_id:
                        self.summary._unlinked(stored_id)
                    continue
                try:
                    with transaction.atomic():
                        self._one(data, stored_id, keys, report, choice[stored_id], studies)
                except (DatabaseError, ValidationError, ValueError, TypeError) as exc:
                    self.summary.errors.append(IngestError(_where(data), f"not stored: {exc}").as_dict())

    def _one(
        self,
        data: ReportData,
        stored_id: str,
        keys: _Keys,
        report: Report | None,
        study_id: int | None,
        studies: dict[int, Study],
    ) -> None:
        if report is not None and report.checksum == data.checksum:
            self.summary.skipped += 1
            if report.study_id is None and study_id:
                full = Report.objects.get(pk=report.pk)
                _link_stored(full, studies[study_id], data.scrub_tokens, self.secret)
                self.summary.linked += 1
            elif report.study_id is None:
                self.summary._unlinked(stored_id)
            return
        study = studies.get(study_id) if study_id else None
        if study is None and report is not None and report.study_id:
            study = studies.get(report.study_id)  # keep the earlier link when nothing matches now
        link_keys = {
            "file": keys.file,
            "accession_hash": keys.accession_hash,
            "study_uid": keys.study_uid,
            "row": data.link_keys.get("row", ""),
        }
        link_keys = {k: v for k, v in link_keys.items() if v}
        values = {
            "study": study,
            "source": data.source,
            "source_name": data.source_name[:256],
            "raw_text": data.raw_text,
            **{name: data.sections.get(name, "") for name in SECTIONS},
            "extra": {
                **data.extra,
                "link_keys": link_keys,
                **({"warnings": data.warnings} if data.warnings else {}),
            },
            "checksum": data.checksum,
        }
        if report is None:
            report = Report(project=self.project, external_id=stored_id, **values)
        else:
            for name, value in values.items():
                setattr(report, name, value)
        report.extra = {k: v for k, v in report.extra.items() if k != "scrubbed"}
        _scrub_report(report, study, data.scrub_tokens, self.secret)
        report.full_clean(exclude=["project", "study"], validate_unique=False, validate_constraints=False)
        if report.pk is None:
            report.save()
            self.summary.stored += 1
        else:
            report.save(
                update_fields=["study", "source", "source_name", "raw_text", *SECTIONS, "extra", "checksum"]
            )
            self.summary.updated += 1
        if study is not None:
            self.summary.linked += 1 if study_id else 0
        else:
            self.summary._unlinked(stored_id)


def _link_stored(report: Report, study: Study, tokens: set[str], secret: str) -> None:
    report.study = study
    _scrub_report(report, study, tokens, secret)
    report.save(update_fields=["study", "raw_text", *SECTIONS, "source_name", "extra"])


def reports_import(
    *,
    project: Project,
    paths: list[Path] | None = None,
    csv_path: Path | None = None,
    id_column: str | None = None,
    text_columns: list[str] | None = None,
    layout: str | None = None,
    link: str = "id",
    link_pattern: str | None = None,
    progress: Progress | None = None,
) -> ReportImportSummary:
    """Import reports from a CSV (``csv_path``) and/or files (``paths``: text, DICOM SR, CSV; folders are
    walked), link them to the project's studies (see the module docstring) and store them scrubbed.

    Each report is stored whole or not at all (a savepoint per report); a bad row or file is an error in
    the summary and never stops the others. Same id and same text: skipped (and linked if it was not
    yet); same id, other text: updated. ``progress(done, total)`` is called after every chunk.
    Raises ``ValueError`` for an unknown link mode or a bad ``link_pattern``. No locks needed: the unique
    (project, external_id) constraint makes a concurrent import of the same report an error of that row.
    """
    pattern = _compile(link, link_pattern)
    summary = ReportImportSummary()
    importer = _Importer(project, link, _Resolver(project, link, pattern), summary)
    path_list = [Path(p) for p in paths or []]
    csv_args = {"id_column": id_column, "text_columns": text_columns, "layout": layout}
    total = _total(path_list, Path(csv_path) if csv_path else None) if progress else 0
    done = 0
    for chunk in _chunks(_sources(path_list, Path(csv_path) if csv_path else None, csv_args), CHUNK):
        importer.chunk(chunk)
        done += len(chunk)
        if progress:
            progress(done, max(total, done))
    if progress:
        progress(max(total, done), max(total, done))
    return summary


def reports_link(
    *, project: Project, link: str = "id", link_pattern: str | None = None, progress: Progress | None = None
) -> int:
    """Link the project's reports that have no study yet (e.g. imported before their scans); scrub each
    newly linked report with its study's identifier hashes. Returns how many were linked.

    Locks each chunk of reports (``select_for_update``) while linking it.
    """
    pattern = _compile(link, link_pattern)
    resolver = _Resolver(project, link, pattern)
    ids = list(Report.objects.filter(project=project, study__isnull=True).values_list("id", flat=True))
    linked = 0
    secret = project.deid_secret
    warnings: list[str] = []
    for start in range(0, len(ids), CHUNK):
        with transaction.atomic():
            chunk = ids[start : start + CHUNK]
            reports = list(Report.objects.select_for_update().filter(id__in=chunk, study=None))
            choice = {
                r.pk: _pick(resolver.candidates(_keys_of_stored(r, secret, link)), r.external_id, warnings)
                for r in reports
            }
            studies = Study.objects.only("id", "identifier_hashes").in_bulk({s for s in choice.values() if s})
            for report in reports:
                if choice.get(report.pk):
                    _link_stored(report, studies[choice[report.pk]], set(), secret)
                    linked += 1
        if progress:
            progress(min(start + CHUNK, len(ids)), len(ids))
    return linked
