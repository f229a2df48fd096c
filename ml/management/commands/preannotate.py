"""manage.py preannotate: proposals for one scan from a generator or a registered model."""

import json

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "Pre-annotate a scan: --generator lungs|pet-suv|gaze|model:<name>. Prints the proposals made, with "
        "their label and volume in ml (--json for machines)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--scan", type=int, required=True)
        parser.add_argument("--generator", required=True)
        parser.add_argument(
            "--params", help='JSON parameters of the generator (e.g. {"suvmax": 8.1, "slice": 40})'
        )
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, **opts):
        from ml.preannotate import PreannotateError, preannotate, proposal_summary
        from ml.specs import ModelError
        from studies.models import Scan

        scan = Scan.objects.filter(pk=opts["scan"]).first()
        if scan is None:
            raise CommandError(f"--scan: no scan #{opts['scan']}")
        try:
            params = json.loads(opts["params"]) if opts["params"] else {}
        except json.JSONDecodeError as exc:
            raise CommandError(f"--params: not JSON ({exc})") from exc
        try:
            outcome = preannotate(scan=scan, generator=opts["generator"], params=params)
        except (PreannotateError, ModelError) as exc:
            raise CommandError(str(exc)) from exc
        summary = {"scan": scan.pk, "generator": opts["generator"],
                   "proposals": [proposal_summary(p) for p in outcome.proposals],
                   "warnings": outcome.warnings, "seconds": outcome.seconds}  # fmt: skip
        if opts["json"]:
            self.stdout.write(json.dumps(summary, indent=2))
            return
        self.stdout.write(f"Scan {scan.pk}: {len(outcome.proposals)} proposals from {opts['generator']}")
        for p in summary["proposals"]:
            size = f"{p['volume_ml']:.1f} ml" if p["volume_ml"] is not None else f"{p['pixels']} px"
            self.stdout.write(f"  #{p['id']} {p['label'] or p['code']}: {size}")
        for warning in outcome.warnings:
            self.stdout.write(f"  warning: {warning}")
