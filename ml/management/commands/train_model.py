"""manage.py train_model: train a new version of a model from labelled region proposals."""

import json

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "Train from a frozen snapshot of region proposals (--proposals ids), split by patient, starting from "
        "the newest ready version of --model; a new version is registered only if it beats that one on the "
        "validation cases. --resume RUN continues a run from its last checkpoint."
    )

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True)
        parser.add_argument("--model", help="model name (the parent is its newest ready version)")
        parser.add_argument("--proposals", help="comma-separated region proposal ids")
        parser.add_argument(
            "--params", help='JSON, e.g. {"steps": 500, "batch_size": 2, "learning_rate": 0.001}'
        )
        parser.add_argument("--resume", type=int, help="a training run id to continue")
        parser.add_argument("--device", help="cpu, cuda, cuda:1 (default: ML_DEVICE or the first GPU)")

    def handle(self, *args, **opts):
        from core.models import Project
        from ml.services import model_version_latest
        from ml.specs import ModelError
        from ml.training import TrainingError, training_run_create, training_run_execute

        project = Project.objects.filter(slug=opts["project"]).first()
        if project is None:
            raise CommandError(f"--project: no project {opts['project']!r}")
        try:
            if opts["resume"]:
                from ml.models import TrainingRun

                run = TrainingRun.objects.filter(project=project, pk=opts["resume"]).first()
                if run is None:
                    raise CommandError(f"--resume: no training run #{opts['resume']} in {project.slug}")
            else:
                if not opts["model"] or not opts["proposals"]:
                    raise CommandError("give --model and --proposals (or --resume RUN)")
                ids = [int(x) for x in opts["proposals"].split(",") if x.strip()]
                params = json.loads(opts["params"]) if opts["params"] else {}
                parent = model_version_latest(project=project, name=opts["model"])
                run = training_run_create(parent=parent, proposal_ids=ids, params=params)
                self.stdout.write(
                    f"Training run {run.pk}: {len(run.split['train'])} train / "
                    f"{len(run.split['val'])} validation scans"
                )
            run = training_run_execute(run=run, device=opts["device"])
        except (TrainingError, ModelError) as exc:
            raise CommandError(str(exc)) from exc
        except ValueError as exc:
            raise CommandError(f"--proposals/--params: {exc}") from exc
        m = run.metrics
        verdict = f"new version {run.result.name} v{run.result.version}" if run.result else "no new version"
        self.stdout.write(
            f"Run {run.pk}: validation Dice {m['val_dice']:.3f} (parent {m['parent_val_dice']:.3f}); "
            f"{verdict}"
        )
