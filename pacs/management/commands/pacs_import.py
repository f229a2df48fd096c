"""manage.py pacs_import --project SLUG --source NAME [--accession A] [--patient-id P] [--study-date D]
[--modality CT] [--description TEXT] [--study-uid UID ...] [--json]"""

import json
import sys

from django.core.management.base import BaseCommand, CommandError
from django.http import Http404

from core.errors import ApplicationError
from core.jobs import job_run
from core.models import Job, Project
from pacs.selectors import source_get_by_name
from pacs.services import import_create, search_filters, studies_search
from pacs.tasks import pacs_import_body


class Command(BaseCommand):
    help = (
        "Find studies on a project's DICOMweb source (QIDO-RS) and import them here, in this process, as a "
        "job with progress: retrieved with WADO-RS, de-identified and stored like uploaded files. Running it "
        "again completes an interrupted import without duplicates."
    )

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True, help="project slug")
        parser.add_argument("--source", required=True, help="the source's name (registered by a manager)")
        parser.add_argument("--accession", default="")
        parser.add_argument("--patient-id", default="")
        parser.add_argument("--study-date", default="", help="YYYYMMDD or YYYYMMDD-YYYYMMDD")
        parser.add_argument("--description", default="", help="text the study description contains")
        parser.add_argument(
            "--modality", default="", help="studies with this modality, and only its series are imported"
        )
        parser.add_argument("--study-uid", nargs="*", default=[], help="import these studies (no search)")
        parser.add_argument("--json", action="store_true", help="print the job's summary as JSON")

    def handle(self, *args, **opts):
        project = Project.objects.filter(slug=opts["project"]).first()
        if project is None:
            raise CommandError(f"no project {opts['project']!r}")
        try:
            source = source_get_by_name(project, opts["source"])
            uids = list(opts["study_uid"])
            if not uids:
                filters = search_filters(
                    {
                        "accession": opts["accession"],
                        "patient_id": opts["patient_id"],
                        "study_date": opts["study_date"],
                        "description": opts["description"],
                        "modality": opts["modality"],
                    }
                )
                if not filters:
                    raise CommandError("say which studies: --accession, --patient-id, ... or --study-uid")
                uids = [s["study_uid"] for s in studies_search(source=source, filters=filters)]
                if not uids:
                    raise CommandError("no study on the source matches")
            self.stderr.write(
                f"importing {len(uids)} stud{'y' if len(uids) == 1 else 'ies'} from {source.name}"
            )
            pacs_import = import_create(
                source=source, study_uids=uids, modality=opts["modality"], dispatch=False
            )
        except (ApplicationError, Http404) as exc:
            raise CommandError(str(exc)) from exc
        try:
            job_run(job_id=pacs_import.job_id, body=pacs_import_body)
        except Exception:  # noqa: BLE001 - the job row says why; printed below
            pass
        job = Job.objects.get(pk=pacs_import.job_id)
        if opts["json"]:
            fields = ("status", "message", "counts", "errors", "result")
            self.stdout.write(json.dumps({"job": job.pk, **{f: getattr(job, f) for f in fields}}))
        else:
            self.stdout.write(f"job {job.pk} {job.status}: {job.message}")
            for key, value in sorted(job.counts.items()):
                self.stdout.write(f"  {key}: {value}")
            for err in job.errors:
                self.stdout.write(f"  error: {err['file']}: {err['reason']}")
        if job.status != "succeeded" or job.errors:
            sys.exit(1)
