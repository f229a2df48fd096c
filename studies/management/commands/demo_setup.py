"""manage.py demo_setup: a demo project with real packaged scans and generated data, and a demo admin."""

import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from core.models import Project, Role
from core.services import membership_set, project_create
from studies import demo
from studies.services.ingest import GazeOptions, ReportOptions, ingest_run


class Command(BaseCommand):
    help = (
        "Create the demo project and a demo admin (its password is printed), then ingest demo data: the "
        "real chest CT series that ships with the project (TCIA Lung-PET-CT-Dx Lung_Dx-A0002, CC BY 4.0, "
        "studies/demo_data), the real chest radiograph RG1_UNCR.dcm, pydicom's CT and MR files, reports of "
        "the CT and the radiograph, and a REFLACX-format gaze recording of the radiograph with anatomy "
        "masks of its lungs and heart; then proposes the reports' findings with the offline rules labeler, "
        "makes the gaze labels (the platform's definitions and FG-CXR's preset), proposes the CT's lungs "
        "with the lungs generator, and has demo users ground and approve the CT's mass; leaves the "
        "radiograph's masses for demo-radiologist's review and its largest mass for demo-annotator to draw, "
        "and prints a link to each. Safe to run again."
    )

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")
        parser.add_argument("--slug", default="demo")
        parser.add_argument("--data-dir", type=Path, default=Path(settings.BASE_DIR) / "var" / "demo-data")

    def handle(self, *args, **opts):
        User = get_user_model()
        password = secrets.token_urlsafe(12)
        user = User.objects.filter(username=opts["username"]).first()
        if user is None:
            user = User.objects.create_superuser(username=opts["username"], email="", password=password)
        else:
            user.set_password(password)
            user.save(update_fields=["password"])
        project = Project.objects.filter(slug=opts["slug"]).first() or project_create(
            slug=opts["slug"],
            name="Demo: chest CT and radiograph",
            keep_identity_map=True,
            label_schema="rexgroundingct",
        )
        membership_set(project=project, user=user, role=Role.MANAGER)

        data = opts["data_dir"]
        report_csv = demo.write_demo_report_csv(data / "reports.csv")
        gaze_dir = data / "gaze-reflacx"
        if not gaze_dir.exists():
            demo.write_demo_gaze(gaze_dir)
        self.stdout.write("Ingesting demo data ...")
        summary = ingest_run(
            project=project,
            paths=[demo.REAL_CT_ZIP, *demo.packaged_scans()],
            reports=ReportOptions(csv=report_csv, id_column="study_uid", link="study-uid"),
            gaze=GazeOptions(path=gaze_dir, format="reflacx"),
        )
        scans = summary["scans"]
        self.stdout.write(
            f"Scans: {len(scans['stored'])} stored, {len(scans['duplicates'])} already there, "
            f"{len(scans['errors'])} errors"
        )
        for part in ("reports", "gaze"):
            counts = ", ".join(
                f"{len(v)} {k}" for k, v in summary.get(part, {}).items() if isinstance(v, list)
            )
            self.stdout.write(f"{part.capitalize()}: {counts}")
        from labeling.services import label_run_execute, label_run_get_or_create

        run = label_run_execute(run=label_run_get_or_create(project=project, labeler="rules", user=user))
        self.stdout.write(
            f"Labels: rules run {run.pk}, {run.proposals} finding proposals from {run.done} reports"
        )
        self._demo_anatomy(project)
        from labeling.gaze.service import gaze_run_execute, gaze_run_get_or_create
        from labeling.models import GazeAnatomyRecord

        # the platform's definitions, then FG-CXR's (its seven regions): the newest run is what releases take
        for params, what in ((None, "platform definitions"), ({"preset": "fgcxr"}, "preset fgcxr")):
            gaze_run = gaze_run_execute(
                run=gaze_run_get_or_create(project=project, params=params, user=user), workers=1
            )
            records = GazeAnatomyRecord.objects.filter(run=gaze_run).count()
            self.stdout.write(
                f"Gaze labels: run {gaze_run.pk} ({what}), {gaze_run.done} of {gaze_run.total} recordings "
                f"labelled ({gaze_run.unusable} unusable), {records} region records"
            )
        self._demo_lungs(project, user)
        from releases.demo import demo_radiograph, demo_review

        reviewers = {}
        for name, role in (("annotator", Role.ANNOTATOR), ("radiologist", Role.RADIOLOGIST)):
            person = User.objects.filter(username=f"demo-{name}").first() or User(username=f"demo-{name}")
            person.set_password(password)
            person.save()
            membership_set(project=project, user=person, role=role)
            reviewers[name] = person
        mass = demo_review(project=project, **reviewers)
        to_review, to_draw = demo_radiograph(project=project, annotator=reviewers["annotator"])
        state = "is accepted" if mass and mass.status == "accepted" else "is open"
        self.stdout.write(
            f"Review: the CT's mass finding {state} (named in Findings and Impression: one finding; "
            f"demo-annotator grounded it, demo-radiologist approved it); the radiograph's masses "
            f"{'wait for demo-radiologist' if to_review else 'are not in review'}, its largest mass "
            f"{'waits for demo-annotator to draw it' if to_draw else 'is not waiting'}.\n"
            f"Release the CT (every 3D format) with\n"
            + "".join(
                f"  manage.py {command}\n"
                for command in demo.release_commands(project.slug, "demo", "CT", demo.FORMATS_3D)
            )
            + "and the radiograph with its report's and gaze labels (every 2D format) with\n"
            + "".join(
                f"  manage.py {command}\n"
                for command in demo.release_commands(project.slug, "demo-gaze", "CR", demo.FORMATS_2D)
            ).rstrip("\n")
        )
        for part, value in summary.items():
            for err in value.get("errors", []):
                where = err.get("file", "") + (f" [{err['field']}]" if err.get("field") else "")
                self.stderr.write(f"  error [{part}] {where}: {err.get('reason')}")
        site = "http://127.0.0.1:8000"
        review = f"{site}/review/{project.slug}/"
        finds = {
            "demo-annotator": (
                f"the radiograph's largest mass to draw, with the reader's gaze (key g; the Gaze panel: "
                f"each sentence's and each anatomy's heatmap): "
                f"{review}?task={to_draw.pk}"
                if to_draw
                else f"the annotate queue: {review}"
            ),
            "demo-radiologist": (
                f"the radiograph's masses to review: {review}?task={to_review.pk}"
                if to_review
                else f"the review queue: {review}"
            )
            + (f"; the CT's approved mass, read-only: {review}?finding={mass.pk}" if mass else ""),
        }
        self.stdout.write(
            self.style.SUCCESS(
                f"\nDemo ready. Log in at {site}/admin/ as {opts['username']!r} with password "
                f"{password!r}\nAPI: {site}/api/docs/\n"
                f"Console (the project as its manager, {opts['username']!r}): {site}/console/{project.slug}/ "
                f"(every review task linked: {site}/console/{project.slug}/tasks/)\n"
                f"Review screen (same password; each link opens its case):\n"
                + "".join(f"  {who}: {what}\n" for who, what in finds.items())
                + "The real CT's mass is grounded and approved, ready for the release commands above."
            )
        )

    def _demo_lungs(self, project, user) -> None:
        """The lungs generator's left and right lung of the CT series (``ml.preannotate``; the real CT, not
        pydicom's one-slice CT_small), unless there."""
        from labeling.models import RegionProposal
        from ml.preannotate import preannotate
        from studies.models import Scan

        for scan in Scan.objects.filter(project=project, modality="CT", ndim=3).order_by("id"):
            if scan.shape[2] < 2:
                continue
            if not RegionProposal.objects.filter(scan=scan, source="lungs").exists():
                outcome = preannotate(scan=scan, generator="lungs", user=user)
                for warning in outcome.warnings:
                    self.stderr.write(f"  lungs of scan {scan.pk}: {warning}")
            proposals = RegionProposal.objects.filter(scan=scan, source="lungs").order_by("label")
            self.stdout.write(
                f"Lungs: scan {scan.pk}: " + ", ".join(f"{p.label} {p.volume_ml:.0f} ml" for p in proposals)
            )

    def _demo_anatomy(self, project) -> None:
        """Anatomy masks of the demo radiograph for its gaze recording (``studies.demo.DEMO_ANATOMY``), so
        that its gaze labels have regions (FG-CXR's seven among them); masks already there are kept."""
        from studies.models import GazeRecording
        from studies.services.gaze import anatomy_mask_set

        recordings = GazeRecording.objects.filter(project=project, scan__name="RG1_UNCR")
        for rec in recordings:
            have = set(rec.anatomy_masks.values_list("name", flat=True))
            pngs = demo.demo_anatomy_pngs(rec.image_width, rec.image_height)
            for name, data in pngs.items():
                if name not in have:
                    anatomy_mask_set(recording=rec, name=name, data=data, filename=f"demo-{name}.png")
        if recordings:
            self.stdout.write(f"Anatomy: {', '.join(demo.DEMO_ANATOMY)} of RG1_UNCR for its gaze recording")
