"""manage.py register_model: add a model file as a new version and validate it (forward pass)."""

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from core.job_child import job_child_wait
from ml.models import ModelFormat, ModelTask


class Command(BaseCommand):
    help = (
        "Register a model: a MONAI bundle (folder or zip with configs/inference.json and models/model.pt or "
        "models/model.ts; its metadata.json gives the labels and its pipeline how to run it), a "
        'TorchScript file, or a state dict with --network \'{"name": "UNet", "args": {...}}\'. The file is '
        "loaded and run on a dummy input of --input-spec; a broken or mismatched file is rejected."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path)
        parser.add_argument("--project", required=True)
        parser.add_argument("--name", required=True)
        parser.add_argument("--format", choices=ModelFormat.values, required=True)
        parser.add_argument("--task", choices=ModelTask.values, default=ModelTask.SEGMENTATION)
        parser.add_argument(
            "--input-spec",
            help='JSON: {"ndim": 3, "channels": 1, "roi_size": [96,96,96], "spacing": [1.5,1.5,2], '
            '"window": [-1000, 400], "modality": ["CT"]}. Required but for a MONAI bundle with '
            "configs/metadata.json and its pipeline, where it is read from them (given, it must agree)",
        )
        parser.add_argument(
            "--labels",
            help="comma-separated output channel names. A MONAI bundle's come from configs/metadata.json "
            "(outputs.pred.channel_def); given, they must be the same",
        )
        parser.add_argument("--network", help="JSON MONAI network spec (state dicts)")
        parser.add_argument(
            "--text-encoder",
            type=Path,
            help="a grounding model's own sentence-transformers encoder (zip or folder)",
        )
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, **opts):
        from core.models import Project
        from ml.services import model_version_register
        from ml.specs import ModelError

        project = Project.objects.filter(slug=opts["project"]).first()
        if project is None:
            raise CommandError(f"--project: no project {opts['project']!r}")
        specs = {}
        for option in ("input_spec", "network"):
            if opts[option]:
                try:
                    specs[option] = json.loads(opts[option])
                except json.JSONDecodeError as exc:
                    raise CommandError(f"--{option.replace('_', '-')}: not JSON ({exc})") from exc
        try:
            version = model_version_register(
                project=project,
                path=opts["path"],
                fmt=opts["format"],
                name=opts["name"],
                task=opts["task"],
                input_spec=specs.get("input_spec"),
                label_names=[s.strip() for s in opts["labels"].split(",")] if opts["labels"] else None,
                network=specs.get("network"),
                text_encoder=opts["text_encoder"],
            )
        except ModelError as exc:
            raise CommandError(str(exc)) from exc
        version.refresh_from_db()
        job_child_wait(version.job_id)  # in-process jobs: the validation's child process (core.job_child)
        version.refresh_from_db()
        out = {
            "id": version.pk,
            "name": version.name,
            "version": version.version,
            "status": version.status,
            "error": version.error,
        }
        if opts["json"]:
            self.stdout.write(json.dumps(out))
        elif version.status == "rejected":
            raise CommandError(f"{version.name} v{version.version} rejected: {version.error}")
        else:
            self.stdout.write(f"{version.name} v{version.version} (#{version.pk}): {version.status}")
