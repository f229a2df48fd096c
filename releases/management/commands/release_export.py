"""manage.py release_export: write a frozen release in one format into a folder."""

import json
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "Write a release in a format researchers load (rexgroundingct, monai, dicom-seg, fgcxr, iai, "
        "chexpert, radfact) into --out, with the dataset card (README.md) and the manifest. Every file is "
        "checked against the sha256 it was frozen with."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dataset", required=True)
        parser.add_argument("--release-version", type=int, help="the version (default: the newest)")
        parser.add_argument("--format", required=True)
        parser.add_argument(
            "--out", required=True, type=Path, help="folder (made; must be empty if it exists)"
        )
        parser.add_argument("--json", action="store_true", help="print the summary as JSON")

    def handle(self, *args, **opts):
        from tqdm import tqdm

        from releases.models import DatasetRelease, ReleaseStatus
        from releases.records import DirSink
        from releases.services import ReleaseError, release_export_to

        releases = DatasetRelease.objects.filter(dataset__slug=opts["dataset"], status=ReleaseStatus.FROZEN)
        if opts["release_version"] is not None:
            releases = releases.filter(version=opts["release_version"])
        release = releases.order_by("-version").first()
        if release is None:
            what = (
                f"version {opts['release_version']}"
                if opts["release_version"] is not None
                else "a frozen release"
            )
            raise CommandError(f"--dataset: {opts['dataset']!r} has no {what} (make one with release_create)")
        out: Path = opts["out"]
        if out.exists() and any(out.iterdir()):
            raise CommandError(f"--out: {out} is not empty")
        bar = tqdm(total=release.counts.get("cases", 0), unit="case", disable=opts["json"], file=sys.stderr)
        done = [0]

        def progress(fraction: float) -> None:
            n = round(fraction * bar.total)
            bar.update(n - done[0])
            done[0] = n

        sink = DirSink(out)
        try:
            summary = release_export_to(release, opts["format"], sink, progress=progress)
        except ReleaseError as exc:
            raise CommandError(f"--{exc.field}: {exc.reason}" if exc.field == "format" else str(exc)) from exc
        finally:
            sink.close()
            bar.close()
        report = {
            "dataset": opts["dataset"], "version": release.version, "format": summary.format,
            "out": str(out), "cases": summary.cases, "labels": summary.labels, "files": len(sink.files),
            "skipped": summary.skipped,
        }  # fmt: skip
        if opts["json"]:
            self.stdout.write(json.dumps(report, indent=1))
            return
        self.stdout.write(
            f"{opts['dataset']} v{release.version} as {summary.format}: {summary.cases} cases, "
            f"{summary.labels} labels, {len(sink.files)} files in {out}"
        )
        for line in summary.skipped[:20]:
            self.stdout.write(f"  skipped {line}")
        if len(summary.skipped) > 20:
            self.stdout.write(f"  ... and {len(summary.skipped) - 20} more skipped")
