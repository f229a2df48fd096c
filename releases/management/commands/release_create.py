"""manage.py release_create: freeze the next version of a dataset (made on first use)."""

import json

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "Freeze the next release of a dataset: accepted, human-reviewed labels by default; the manifest "
        "lists every file with its sha256 and every label with its provenance. The dataset is made on first "
        "use from --project (repeat it for several)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dataset", required=True, help="dataset slug")
        parser.add_argument("--project", action="append", default=[], help="project slug (new datasets)")
        parser.add_argument("--name", default="", help="dataset title (new datasets)")
        parser.add_argument("--description", default="")
        parser.add_argument("--licence", default="")
        parser.add_argument("--citation", default="")
        parser.add_argument("--status", action="append", choices=("accepted", "rejected", "open"),
                            help="finding statuses (default accepted; repeat for several)")  # fmt: skip
        parser.add_argument("--source", choices=("human", "weak", "both"), default="human")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--ratios", default="0.8,0.1,0.1", help="train,val,test (default 0.8,0.1,0.1)")
        parser.add_argument(
            "--modality", action="append", default=[],
            help="scans of this modality only, e.g. CR (repeat for several; default all)",
        )  # fmt: skip
        parser.add_argument(
            "--anatomy", choices=("context", "findings", "none"), default="context",
            help="anatomy masks of generators and models (left_lung, ...): context labels kept apart "
            "from the finding classes (default), finding classes, or left out",
        )  # fmt: skip
        parser.add_argument("--notes", default="")
        parser.add_argument("--json", action="store_true", help="print the release as JSON")

    def handle(self, *args, **opts):
        from core.models import Project
        from releases.models import Dataset
        from releases.services import ReleaseError, dataset_create, release_create, release_diff

        try:
            ratios = dict(
                zip(("train", "val", "test"), (float(x) for x in opts["ratios"].split(",")), strict=True)
            )
        except ValueError as exc:
            raise CommandError("--ratios: three numbers train,val,test, e.g. 0.8,0.1,0.1") from exc
        dataset = Dataset.objects.filter(slug=opts["dataset"]).first()
        try:
            if dataset is None:
                if not opts["project"]:
                    raise CommandError(f"--project: dataset {opts['dataset']!r} is new: name its project(s)")
                projects = list(Project.objects.filter(slug__in=opts["project"]))
                missing = sorted(set(opts["project"]) - {p.slug for p in projects})
                if missing:
                    raise CommandError(f"--project: no project {missing[0]!r}")
                dataset = dataset_create(
                    slug=opts["dataset"], name=opts["name"], projects=projects,
                    description=opts["description"], licence=opts["licence"], citation=opts["citation"],
                )  # fmt: skip
            selection = {
                "statuses": opts["status"] or ["accepted"], "sources": opts["source"], "seed": opts["seed"],
                "ratios": ratios, "modalities": opts["modality"], "anatomy": opts["anatomy"],
            }  # fmt: skip
            release = release_create(dataset=dataset, selection=selection, notes=opts["notes"])
        except ReleaseError as exc:
            raise CommandError(
                f"--{exc.field}: {exc.reason}"
                if exc.field in ("sources", "ratios", "modalities", "anatomy")
                else str(exc)
            ) from exc
        diff = release_diff(release)
        out = {
            "dataset": dataset.slug,
            "version": release.version,
            "id": release.pk,
            "manifest": release.manifest.name,
            "manifest_sha256": release.manifest_sha256,
            "counts": release.counts,
            "diff": {
                k: {kk: len(vv) for kk, vv in v.items()} for k, v in diff.items() if isinstance(v, dict)
            },
        }
        if opts["json"]:
            self.stdout.write(json.dumps(out, indent=1))
            return
        c = release.counts
        self.stdout.write(
            f"{dataset.slug} v{release.version}: {c['cases']} cases of {c['patients']} patients, "
            f"{c['labels']} labels {c['labels_per_source']}; splits {c['cases_per_split']}; "
            f"manifest {release.manifest.name}"
        )
        if diff["from"] is not None:
            d = out["diff"]
            self.stdout.write(
                f"since v{diff['from']}: cases +{d['cases']['added']} -{d['cases']['removed']}, labels "
                f"+{d['labels']['added']} -{d['labels']['removed']} ~{d['labels']['changed']}"
            )
