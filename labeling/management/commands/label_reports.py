"""manage.py label_reports: weak labels for stored reports, or for a CSV file without the database."""

import csv
import json
import sys
from dataclasses import asdict
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from core.errors import ApplicationError
from labeling.labelers import LABELERS, labeler_for
from labeling.types import CHEXPERT_OBSERVATIONS, SCHEMAS


class Command(BaseCommand):
    help = (
        "Propose the findings of reports. Stored reports: --project SLUG (a label run, resumable). "
        "A CSV file, no database: --csv IN.csv --id-column uid --text-columns findings,impression "
        "--out labels.csv (CheXpert-style: id, then the 14 observations as 1.0/0.0/-1.0/empty) and/or "
        "--jsonl OUT.jsonl (every proposal with its span). LLM endpoints are named in the server's "
        "settings (LLM_ENDPOINTS): --endpoint NAME picks one; a URL or key is never an option."
    )

    def add_arguments(self, parser):
        parser.add_argument("--labeler", choices=LABELERS, default="rules")
        parser.add_argument("--project", help="label the stored reports of this project")
        parser.add_argument("--report-ids", help="comma-separated report ids (default: all)")
        parser.add_argument("--csv", type=Path, help="label the reports of this CSV file instead")
        parser.add_argument("--id-column", help="CSV id column (default: by layout)")
        parser.add_argument("--text-columns", help="comma-separated CSV text columns (default: by layout)")
        parser.add_argument("--schema", choices=SCHEMAS, default="chexpert", help="label schema for --csv")
        parser.add_argument("--out", type=Path, help="CheXpert-style label CSV to write (--csv)")
        parser.add_argument("--jsonl", type=Path, help="proposals as JSON lines to write (--csv)")
        parser.add_argument("--endpoint", help="llm: a configured endpoint's name (default: default)")
        parser.add_argument("--model", help="llm: a model the endpoint offers (default: the endpoint's)")
        parser.add_argument(
            "--params",
            help="the run's params as JSON, as the API takes them (ensemble: "
            '{"members": [{"labeler": "rules"}, {"labeler": "llm", "endpoint": "local"}]})',
        )

    def handle(self, *args, **opts):
        if bool(opts["project"]) == bool(opts["csv"]):
            raise CommandError("give either --project SLUG or --csv IN.csv")
        opts["params"] = self._params(opts)
        if opts["csv"]:
            self._csv(opts)
        else:
            self._project(opts)

    def _params(self, opts) -> dict:
        """The run's params: --params, with --endpoint and --model (llm) on top; checked by the labeler
        like the API's (a URL or key is refused, naming the field)."""
        try:
            params = json.loads(opts["params"]) if opts["params"] else {}
        except json.JSONDecodeError as exc:
            raise CommandError(f"--params: not JSON: {exc}") from exc
        if not isinstance(params, dict):
            raise CommandError("--params: a JSON object")
        for option in ("endpoint", "model"):
            if opts[option]:
                if opts["labeler"] != "llm":
                    raise CommandError(f"--{option} is for --labeler llm (ensemble members: --params)")
                params[option] = opts[option]
        return params

    def _project(self, opts):
        from tqdm import tqdm

        from core.models import Project
        from labeling.services import label_run_execute, label_run_get_or_create

        project = Project.objects.filter(slug=opts["project"]).first()
        if project is None:
            raise CommandError(f"--project: no project {opts['project']!r}")
        ids = None
        if opts["report_ids"]:
            try:
                ids = [int(x) for x in opts["report_ids"].split(",") if x.strip()]
            except ValueError as exc:
                raise CommandError("--report-ids: comma-separated integers") from exc
        try:
            run = label_run_get_or_create(project=project, labeler=opts["labeler"], params=opts["params"])
        except (ValueError, ApplicationError) as exc:
            raise CommandError(str(exc)) from exc
        bar = tqdm(desc=f"run {run.pk}", unit="report", file=sys.stderr)

        def progress(done: int, total: int) -> None:
            bar.total, bar.n = total, done
            bar.refresh()

        try:
            run = label_run_execute(run=run, report_ids=ids, progress=progress)
        finally:
            bar.close()
        self.stdout.write(
            f"Run {run.pk} ({run.labeler}, {run.schema}): {run.done} of {run.total} reports labeled, "
            f"{run.failed} failed, {run.proposals} proposals"
        )

    def _csv(self, opts):
        from studies.ingest.reports import iter_report_csv
        from studies.ingest.types import IngestError

        if not opts["out"] and not opts["jsonl"]:
            raise CommandError("--csv needs --out and/or --jsonl")
        if opts["out"] and opts["schema"] != "chexpert":
            raise CommandError("--out writes CheXpert labels: use --schema chexpert, or --jsonl")
        if not opts["csv"].is_file():
            raise CommandError(f"--csv: no such file {opts['csv']}")
        from labeling.rules import chexpert_row

        try:
            labeler = labeler_for(opts["labeler"], opts["params"])
        except (ValueError, ApplicationError) as exc:
            raise CommandError(str(exc)) from exc
        columns = [c.strip() for c in opts["text_columns"].split(",")] if opts["text_columns"] else None
        out_fh = open(opts["out"], "w", newline="", encoding="utf-8") if opts["out"] else None  # noqa: SIM115
        jsonl_fh = open(opts["jsonl"], "w", encoding="utf-8") if opts["jsonl"] else None  # noqa: SIM115
        writer = None
        labeled = errors = 0
        try:
            for item in iter_report_csv(opts["csv"], id_column=opts["id_column"], text_columns=columns):
                if isinstance(item, IngestError):
                    errors += 1
                    self.stderr.write(str(item))  # file [row N]: reason
                    continue
                result = labeler.label(item.sections, schema=opts["schema"])
                if out_fh is not None:
                    if writer is None:
                        writer = csv.writer(out_fh)
                        writer.writerow([opts["id_column"] or "id", *CHEXPERT_OBSERVATIONS])
                    row = chexpert_row(result.proposals)
                    writer.writerow(
                        [
                            item.external_id,
                            *("" if row.get(o) is None else row[o] for o in CHEXPERT_OBSERVATIONS),
                        ]
                    )
                if jsonl_fh is not None:
                    record = {"id": item.external_id, "proposals": [asdict(p) for p in result.proposals]}
                    jsonl_fh.write(json.dumps(record) + "\n")
                labeled += 1
        finally:
            for fh in (out_fh, jsonl_fh):
                if fh is not None:
                    fh.close()
        self.stdout.write(f"{labeled} reports labeled, {errors} rows with errors")
        if errors and not labeled:
            sys.exit(1)
