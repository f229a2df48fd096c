"""manage.py findings_from_proposals: review tasks from a label run's findings, each starting from the region
proposal that fits it (annotation/proposals/)."""

import json

from django.core.management.base import BaseCommand, CommandError

from annotation.services import findings_made
from core.models import JobStatus, Project
from labeling.models import LabelRun


class Command(BaseCommand):
    help = (
        "Make a finding and a review task for every present finding proposal of a label run (default: "
        "the project's newest finished one) that has none yet. Each starts from the region proposal that "
        "fits it (by link, SUV seed, sentence, code or model label, organ, or a lesion overlapping the "
        "anatomy of the finding's place), and findings still waiting with no version get a start from "
        "proposals that arrived since. Prints what it made; --json prints it as JSON."
    )

    def add_arguments(self, parser):
        parser.add_argument("project", help="the project's slug")
        parser.add_argument("--run", type=int, help="the label run's id (default: the newest finished one)")
        parser.add_argument("--json", action="store_true", help="print the summary as JSON")

    def handle(self, *args, **opts):
        project = Project.objects.filter(slug=opts["project"]).first()
        if project is None:
            raise CommandError(f"no project {opts['project']!r}")
        run = None
        if opts["run"] is not None:
            run = LabelRun.objects.filter(project=project, pk=opts["run"]).first()
            if run is None:
                raise CommandError(f"--run: project {project.slug} has no label run {opts['run']}")
            if run.status != JobStatus.SUCCEEDED:
                raise CommandError(f"--run: label run {run.pk} has not finished ({run.status})")
        made = findings_made(project=project, run=run)
        if opts["json"]:
            self.stdout.write(json.dumps(made.as_dict(), sort_keys=True))
            return
        rules = ", ".join(f"{rule} {n}" for rule, n in sorted(made.rules.items())) or "none"
        self.stdout.write(
            f"{project.slug}: {made.created} findings with review tasks ({made.started} start from a "
            f"proposal); {made.attached} waiting findings got a start; starts by rule: {rules}; "
            f"{made.with_context} shown anatomy context"
        )
