"""manage.py learning_loop: show what the learning loop would train, or start one turn of it now
(annotation/loop.py)."""

import json

from django.core.management.base import BaseCommand, CommandError

from core.errors import ApplicationError
from core.models import Project


class Command(BaseCommand):
    help = (
        "The learning loop of a project: train a new version of its model from the accepted findings, and "
        "when it beats its parent, score the open cases with it and re-order the review queue. Without "
        "--start it prints the plan (model, label map, parameters, strategy, how many accepted findings "
        "are new against the project's train_after_accepted). --start runs one turn now as a job on the "
        "gpu queue; later turns follow by themselves with the same model, label map and parameters once "
        "train_after_accepted new findings are accepted."
    )

    def add_arguments(self, parser):
        parser.add_argument("project", help="the project's slug")
        parser.add_argument("--model", help="the model's name (default: the one the loop trained last)")
        parser.add_argument(
            "--label-map", nargs="*", default=[], metavar="CODE=LABEL", help="finding code to model label"
        )
        parser.add_argument("--params", help='training parameters as JSON, e.g. {"steps": 300}')
        parser.add_argument("--strategy", help="active-learning strategy after a better version")
        parser.add_argument("--start", action="store_true", help="start a turn now")
        parser.add_argument("--json", action="store_true", help="print as JSON")

    def handle(self, *args, **opts):
        from annotation.loop import loop_plan, loop_start, loop_threshold

        project = Project.objects.filter(slug=opts["project"]).first()
        if project is None:
            raise CommandError(f"no project {opts['project']!r}")
        label_map = {}
        for pair in opts["label_map"]:
            code, sep, label = pair.partition("=")
            if not sep or not code or not label:
                raise CommandError(f"--label-map: {pair!r} is not CODE=LABEL")
            label_map[code] = label
        try:
            params = json.loads(opts["params"]) if opts["params"] else None
        except json.JSONDecodeError as exc:
            raise CommandError(f"--params: not JSON ({exc})") from exc
        if params is not None and not isinstance(params, dict):
            raise CommandError("--params: a JSON object")
        try:
            plan = loop_plan(
                project,
                model=opts["model"],
                label_map=label_map or None,
                params=params,
                strategy=opts["strategy"],
            )
            out = {"project": project.slug, "train_after_accepted": loop_threshold(project), **plan.as_dict()}
            if opts["start"]:
                run, job = loop_start(project=project, plan=plan)
                out.update(training_run=run.pk, job_id=job.pk)
        except ApplicationError as exc:
            raise CommandError(str(exc)) from exc
        if opts["json"]:
            self.stdout.write(json.dumps(out, sort_keys=True))
            return
        every = out["train_after_accepted"]
        self.stdout.write(
            f"{project.slug}: {out['model']} v{out['parent_version']} learns {out['findings']} accepted "
            f"findings ({out['new']} new; "
            + (
                f"a turn starts at {every} new"
                if every
                else "automatic turns are off: train_after_accepted 0"
            )
            + f"), label map {out['label_map']}, parameters {out['params'] or 'default'}, "
            f"then {out['strategy']} scores of the open cases"
        )
        if opts["start"]:
            self.stdout.write(f"Started job {out['job_id']} (training run {out['training_run']}).")
