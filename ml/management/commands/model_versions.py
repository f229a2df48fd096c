"""manage.py model_versions: a project's model versions with their status and evaluation figures."""

import json

from django.core.management.base import BaseCommand, CommandError


def _figures(metrics: dict) -> str:
    g = metrics.get("grounding")
    if g:
        on = metrics.get("evaluated_on") or {}
        where = (
            f"{on.get('dataset')} v{on.get('version')} {on.get('split')}"
            if on.get("source") == "release"
            else on.get("source", "?")
        )
        inst = g.get("instance") or {}
        return (
            f"Dice {g['dice_mean']:.3f}, hit rate {g['hit_rate']:.2f}, instance F1 {inst.get('f1', 0):.2f} "
            f"({g['findings']} findings of {g['cases']} cases, {where})"
        )
    if "val_dice" in metrics:
        return f"validation Dice {metrics['val_dice']:.3f}"
    return ""


class Command(BaseCommand):
    help = (
        "List a project's model versions (name, version, task, status) with their evaluation: a grounding "
        "version's ReXGroundingCT metrics (mean Dice, hit rate, instance F1, and what they were measured "
        "on), "
        "a segmentation version's validation Dice."
    )

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True)
        parser.add_argument("--name", help="only the versions of this model")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, **opts):
        from core.models import Project
        from ml.models import ModelVersion

        project = Project.objects.filter(slug=opts["project"]).first()
        if project is None:
            raise CommandError(f"--project: no project {opts['project']!r}")
        versions = ModelVersion.objects.filter(project=project).order_by("name", "version")
        if opts["name"]:
            versions = versions.filter(name=opts["name"])
        rows = [
            {
                "id": v.pk,
                "name": v.name,
                "version": v.version,
                "task": v.task,
                "status": v.status,
                "parent": v.parent_id,
                "metrics": v.metrics,
            }  # fmt: skip
            for v in versions
        ]
        if opts["json"]:
            self.stdout.write(json.dumps(rows, default=str))
            return
        for r in rows:
            figures = _figures(r["metrics"])
            self.stdout.write(
                f"{r['name']} v{r['version']} (#{r['id']}, {r['task']}, {r['status']})"
                + (f": {figures}" if figures else "")
            )
