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
        "Create the demo project and a demo admin (its password is printed), then ingest demo data: "
        "the real chest radiograph RG1_UNCR.dcm, pydicom's CT and MR files, a synthetic chest CT with a "
        "nodule, its report, and a REFLACX-format gaze recording of the radiograph with anatomy masks of "
        "its lungs and heart; then proposes the report's findings with the offline rules labeler and makes "
        "the gaze labels (the platform's definitions and FG-CXR's preset). Safe to run again."
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
        ct_dir = data / "synthetic-ct"
        if not ct_dir.exists():
            volume, _ = demo.synthetic_chest_ct()
            demo.write_ct_series(ct_dir, volume, (5.0, 1.8, 1.8))
        report_csv = demo.write_demo_report_csv(data / "reports.csv")
        gaze_dir = data / "gaze-reflacx"
        if not gaze_dir.exists():
            demo.write_demo_gaze(gaze_dir)
        self.stdout.write("Ingesting demo data ...")
        summary = ingest_run(
            project=project,
            paths=[*demo.packaged_scans(), ct_dir],
            reports=ReportOptions(csv=report_csv, id_column="accession", link="accession"),
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
        from releases.demo import demo_review

        reviewers = {}
        for name, role in (("annotator", Role.ANNOTATOR), ("radiologist", Role.RADIOLOGIST)):
            person = User.objects.filter(username=f"demo-{name}").first() or User(username=f"demo-{name}")
            person.set_password(password)
            person.save()
            membership_set(project=project, user=person, role=role)
            reviewers[name] = person
        nodule = demo_review(project=project, **reviewers)
        state = "is accepted" if nodule and nodule.status == "accepted" else "is open"
        self.stdout.write(
            f"Review: the nodule finding {state}"
            f" (demo-annotator grounded it, demo-radiologist approved it); make a release with\n"
            f"  manage.py release_create --dataset demo --project {project.slug}\n"
            f"  manage.py release_export --dataset demo --format rexgroundingct --out var/demo-release\n"
            f"and one of the radiograph's gaze labels (FG-CXR, I-AI) with\n"
            f"  manage.py release_create --dataset demo-gaze --project {project.slug} --source weak "
            f"--modality CR\n"
            f"  manage.py release_export --dataset demo-gaze --format fgcxr --out var/demo-fgcxr\n"
            f"  manage.py release_export --dataset demo-gaze --format iai --out var/demo-iai"
        )
        for part, value in summary.items():
            for err in value.get("errors", []):
                where = err.get("file", "") + (f" [{err['field']}]" if err.get("field") else "")
                self.stderr.write(f"  error [{part}] {where}: {err.get('reason')}")
        self.stdout.write(
            self.style.SUCCESS(
                f"\nDemo ready. Log in at http://127.0.0.1:8000/admin/ as {opts['username']!r} "
                f"with password {password!r}\nAPI: http://127.0.0.1:8000/api/docs/\n"
                f"Review screen: http://127.0.0.1:8000/review/{project.slug}/ (users demo-annotator and "
                f"demo-radiologist, same password)"
            )
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
