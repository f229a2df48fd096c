"""manage.py ingest PATH... --project SLUG [--reports CSV ...] [--gaze DIR --gaze-format reflacx|egd]"""

import json
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from core.models import Project
from studies.services.ingest import GazeOptions, ReportOptions, ingest_run


class Command(BaseCommand):
    help = (
        "Ingest scans (DICOM, NIfTI, PNG/JPEG; files, folders, zip archives), report CSVs and gaze "
        "recordings into a project, de-identified on the way in. Prints a summary; --json prints it as JSON."
    )

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="*", help="files, folders (recursive) or zip archives of scans")
        parser.add_argument("--project", required=True, help="project slug")
        parser.add_argument(
            "--modality", default="", help="modality of NIfTI/PNG/JPEG files (default OT / CR)"
        )
        parser.add_argument(
            "--study-pattern", help="regex; its first group in a non-DICOM file name names the study"
        )
        parser.add_argument("--reports", type=Path, help="report CSV")
        parser.add_argument(
            "--report-files", type=Path, nargs="*", default=[], help="plain-text or DICOM SR reports"
        )
        parser.add_argument("--report-id-column", help="CSV column holding the report id")
        parser.add_argument(
            "--report-text-columns", help="comma-separated CSV text columns (default: by layout)"
        )
        parser.add_argument(
            "--report-link", default="id", choices=["id", "pattern", "accession", "study-uid"]
        )
        parser.add_argument(
            "--report-link-pattern", help="regex with one group: the report id in a scan name"
        )
        parser.add_argument("--gaze", type=Path, help="folder of gaze recordings")
        parser.add_argument("--gaze-format", choices=["reflacx", "egd"], default="reflacx")
        parser.add_argument(
            "--workers", type=int, default=None, help="processes reading series (default: cores)"
        )
        parser.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")

    def handle(self, *args, **opts):
        project = Project.objects.filter(slug=opts["project"]).first()
        if project is None:
            raise CommandError(
                f"--project: no project {opts['project']!r}; create it with "
                f"`python manage.py project_create {opts['project']}`"
            )
        if not opts["paths"] and not opts["reports"] and not opts["report_files"] and not opts["gaze"]:
            raise CommandError("nothing to ingest: give scan PATHs, --reports, --report-files or --gaze")
        if opts["report_link"] == "pattern" and not opts["report_link_pattern"]:
            raise CommandError("--report-link pattern needs --report-link-pattern")
        reports = None
        if opts["reports"] or opts["report_files"]:
            columns = opts["report_text_columns"]
            reports = ReportOptions(
                csv=opts["reports"],
                paths=list(opts["report_files"]),
                id_column=opts["report_id_column"],
                text_columns=[c.strip() for c in columns.split(",") if c.strip()] if columns else None,
                link=opts["report_link"],
                link_pattern=opts["report_link_pattern"],
            )
        gaze = GazeOptions(path=opts["gaze"], format=opts["gaze_format"]) if opts["gaze"] else None
        bar = _ProgressBar(enabled=sys.stderr.isatty() or not opts["json"])
        try:
            summary = ingest_run(
                project=project,
                paths=opts["paths"],
                reports=reports,
                gaze=gaze,
                modality=opts["modality"],
                study_pattern=opts["study_pattern"],
                progress=bar.update,
                workers=opts["workers"],
            )
        finally:
            bar.close()
        if opts["json"]:
            self.stdout.write(json.dumps(summary, indent=2, default=str))
        else:
            self.stdout.write(_text_summary(summary))
        if any(part.get("errors") for part in summary.values()) and not any(
            part.get("stored") for part in summary.values()
        ):
            sys.exit(1)


class _ProgressBar:
    """A tqdm bar on stderr per stage (scans, reports, gaze)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None
        self.stage = None

    def update(self, done: int, total: int, message: str) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        stage = message if message in {"reports", "gaze"} else "scans"
        if self.bar is None or self.stage != stage:
            self.close()
            self.bar = tqdm(total=total, desc=stage, unit="unit", file=sys.stderr, leave=True)
            self.stage = stage
        self.bar.total = total
        self.bar.n = done
        if stage == "scans" and message:
            self.bar.set_postfix_str(message[-40:], refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _text_summary(summary: dict) -> str:
    lines = []
    scans = summary.get("scans")
    if scans is not None:
        lines.append(
            f"Scans: {len(scans['stored'])} stored, {len(scans['duplicates'])} already stored, "
            f"{len(scans['errors'])} errors"
        )
        for s in scans["stored"]:
            shape = "x".join(str(n) for n in s["shape"])
            spacing = ", ".join(f"{v:.4g}" for v in s["spacing"])
            lines.append(f"  #{s['id']} {s['modality']:<3} {shape:<14} spacing {spacing} mm  {s['file']}")
            for warning in s["warnings"]:
                lines.append(f"      warning: {warning}")
    for part in ("reports", "gaze"):
        if part in summary:
            counts = ", ".join(f"{len(v)} {k}" for k, v in summary[part].items() if isinstance(v, list))
            lines.append(f"{part.capitalize()}: {counts}")
    errors = [(part, e) for part, v in summary.items() for e in v.get("errors", [])]
    if errors:
        lines.append("Errors:")
        for part, e in errors:
            where = e.get("file", "") + (f" [{e['field']}]" if e.get("field") else "")
            lines.append(f"  [{part}] {where}: {e.get('reason', '')}")
    return "\n".join(lines)
