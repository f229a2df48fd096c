"""One ingest call: scans, then reports, then gaze recordings, then links between them."""

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.models import Project
from studies.services.scans import IngestSummary, scans_ingest

Progress = Callable[[int, int, str], None]


@dataclass
class ReportOptions:
    csv: Path | None = None
    paths: list[Path] = field(default_factory=list)  # plain-text or DICOM SR files
    id_column: str | None = None
    text_columns: list[str] | None = None
    link: str = "id"
    link_pattern: str | None = None


@dataclass
class GazeOptions:
    path: Path
    format: str  # reflacx | egd


def ingest_run(
    *,
    project: Project,
    paths: Iterable[str | os.PathLike] = (),
    reports: ReportOptions | None = None,
    gaze: GazeOptions | None = None,
    modality: str = "",
    study_pattern: str | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """Ingest scans, reports and gaze recordings into ``project``; returns the JSON-able summary:
    ``{"scans": {"stored", "duplicates", "errors"}, "reports": {...}, "gaze": {...}}``. Archives are
    extracted under ``workdir`` (a job's scratch folder) when given, else under the system's temp."""
    out: dict[str, Any] = {}
    paths = list(paths)
    if paths:
        summary: IngestSummary = scans_ingest(
            project=project,
            paths=paths,
            modality=modality,
            study_pattern=study_pattern,
            progress=progress,
            workers=workers,
            workdir=workdir,
        )
        out["scans"] = summary.as_dict()
    if reports is not None and (reports.csv or reports.paths):
        from studies.services.reports import reports_import

        result = reports_import(
            project=project,
            paths=reports.paths or None,
            csv_path=reports.csv,
            id_column=reports.id_column,
            text_columns=reports.text_columns,
            link=reports.link,
            link_pattern=reports.link_pattern,
            progress=_stage(progress, "reports"),
        )
        out["reports"] = result.as_dict()
    if gaze is not None:
        from studies.services.gaze import gaze_import

        result = gaze_import(
            project=project, path=gaze.path, fmt=gaze.format, progress=_stage(progress, "gaze")
        )
        out["gaze"] = result.as_dict()
    return out


def ingest_counts(summary: dict[str, Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for part, value in summary.items():
        for key, items in value.items():
            if isinstance(items, list):
                counts[f"{part}_{key}"] = len(items)
    return counts


def ingest_errors(summary: dict[str, Any]) -> list[dict[str, Any]]:
    return [dict(err, part=part) for part, value in summary.items() for err in value.get("errors", [])]


def _stage(progress: Progress | None, name: str):
    if progress is None:
        return None
    return lambda done, total: progress(done, total, name)
