"""manage.py evaluate_grounding: a grounding version's ReXGroundingCT metrics on a release's validation split,
stored on the version."""

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "Evaluate a grounding model version (default: the newest ready one of --model) on the validation "
        "split "
        "of a frozen release (--release ID, default the newest holding the project's scans) with the "
        "ReXGroundingCT metrics, and store them on the version (model_versions and the API list them)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True)
        parser.add_argument("--model", required=True)
        parser.add_argument(
            "--model-version", type=int, help="the version number (default: the newest ready)"
        )
        parser.add_argument("--release", type=int)
        parser.add_argument("--device", help="cpu, cuda, cuda:1 (default: ML_DEVICE or the first GPU)")

    def handle(self, *args, **opts):
        from core.errors import FieldError
        from core.models import Project
        from ml.grounding_training import model_version_evaluate
        from ml.management.commands.model_versions import _figures
        from ml.models import ModelVersion
        from ml.services import model_version_latest
        from ml.specs import ModelError

        project = Project.objects.filter(slug=opts["project"]).first()
        if project is None:
            raise CommandError(f"--project: no project {opts['project']!r}")
        try:
            if opts["model_version"]:
                version = ModelVersion.objects.filter(
                    project=project, name=opts["model"], version=opts["model_version"]
                ).first()
                if version is None:
                    number = opts["model_version"]
                    raise CommandError(f"--model-version: {opts['model']} has no version {number}")
            else:
                version = model_version_latest(project=project, name=opts["model"])
            metrics = model_version_evaluate(
                version=version, release_id=opts["release"], device=opts["device"]
            )
        except (FieldError, ModelError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"{version.name} v{version.version}: {_figures(metrics)}")
