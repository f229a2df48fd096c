"""manage.py gaze_labels: heatmaps, sentences, anatomy records and region proposals of a project's
eye-gaze recordings (a gaze label run, resumable)."""

import json
import sys

from django.core.management.base import BaseCommand, CommandError

from labeling.gaze.heatmaps import METHODS


class Command(BaseCommand):
    help = (
        "Gaze labels of a project's recordings: whole-recording and per-sentence heatmaps, sentence "
        "alignment (lead seconds), per-anatomy dwell / time to first fixation / caption / intense focus, "
        "and box + mask proposals for findings stated in a sentence. Same settings again resume the run."
    )

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True)
        parser.add_argument("--method", choices=("auto", *METHODS), default="auto",
                            help="heatmap method (auto: the recording's own, reflacx or egd)")  # fmt: skip
        parser.add_argument("--sigma-px", type=float)
        parser.add_argument("--sigma-deg", type=float)
        parser.add_argument("--no-duration-weighting", action="store_true")
        parser.add_argument("--normalise", choices=("sum", "max", "none"))
        parser.add_argument("--lead", type=float, default=2.0, help="seconds of gaze before a sentence (2.0)")
        parser.add_argument("--percentile", type=float, default=20.0, help="intense-focus percentile (20)")
        parser.add_argument("--min-share", type=float, default=0.5,
                            help="gaze share that assigns a sentence naming no anatomy (0.5)")  # fmt: skip
        parser.add_argument("--regions", choices=("anatomy", "fgcxr"), default="anatomy",
                            help="region set: one per anatomy mask, or FG-CXR's seven regions")  # fmt: skip
        parser.add_argument("--recording-ids", help="comma-separated recording ids (default: all)")
        parser.add_argument("--workers", type=int, help="processes (default GAZE_WORKERS; 0 = one per core)")
        parser.add_argument("--json", action="store_true", help="print the summary as JSON")

    def handle(self, *args, **opts):
        from tqdm import tqdm

        from core.models import Project
        from labeling.gaze.service import gaze_run_execute, gaze_run_get_or_create
        from labeling.models import GazeLabelResult

        project = Project.objects.filter(slug=opts["project"]).first()
        if project is None:
            raise CommandError(f"--project: no project {opts['project']!r}")
        ids = None
        if opts["recording_ids"]:
            try:
                ids = [int(x) for x in opts["recording_ids"].split(",") if x.strip()]
            except ValueError as exc:
                raise CommandError("--recording-ids: comma-separated integers") from exc
        params = {
            "method": opts["method"], "lead_s": opts["lead"], "percentile": opts["percentile"],
            "min_share": opts["min_share"], "sigma_px": opts["sigma_px"], "sigma_deg": opts["sigma_deg"],
            "duration_weighting": not opts["no_duration_weighting"], "normalise": opts["normalise"],
            "regions": opts["regions"],
        }  # fmt: skip
        try:
            run = gaze_run_get_or_create(project=project, params=params)
        except ValueError as exc:
            raise CommandError(
                f"--{str(exc).split(':')[0].replace('_s', '').replace('_', '-')}: {exc}"
            ) from exc
        bar = tqdm(desc=f"gaze run {run.pk}", unit="recording", file=sys.stderr)

        def progress(done: int, total: int) -> None:
            bar.total, bar.n = total, done
            bar.refresh()

        try:
            run = gaze_run_execute(run=run, recording_ids=ids, progress=progress, workers=opts["workers"])
        finally:
            bar.close()
        bad = GazeLabelResult.objects.filter(run=run).exclude(status="done").select_related("recording")
        summary = {
            "run": run.pk, "params": run.params, "recordings": run.total, "done": run.done,
            "unusable": run.unusable, "failed": run.failed,
            "not_labelled": [
                {"recording_id": r.recording_id, "external_id": r.recording.external_id, "status": r.status,
                 "reason": r.error} for r in bad
            ],
        }  # fmt: skip
        if opts["json"]:
            self.stdout.write(json.dumps(summary, indent=2))
            return
        self.stdout.write(
            f"Gaze run {run.pk}: {run.done} of {run.total} recordings labelled, {run.unusable} unusable, "
            f"{run.failed} failed"
        )
        for item in summary["not_labelled"]:
            self.stdout.write(f"  {item['external_id']} ({item['status']}): {item['reason']}")
