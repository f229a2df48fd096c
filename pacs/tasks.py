"""Celery adapters: an import job and the store-back sweep. They take ids, load rows, call services."""

from __future__ import annotations

from celery import shared_task

from core.jobs import JobTask, job_progress, job_run
from core.models import Job
from core.uploads import job_scratch_dir
from pacs.importing import import_run
from pacs.models import PacsImport


def pacs_import_body(job: Job) -> tuple[dict, dict, list[dict]]:
    """Run the job's import; the outcome per study goes to the import row (managers only), counts and
    errors (remapped UIDs only) to the job row."""
    pacs_import = PacsImport.objects.select_related("source", "project").get(job=job)

    def progress(fraction: float, message: str, counts: dict[str, int]) -> None:
        job_progress(job_id=job.pk, progress=fraction, message=message, counts=counts)

    tally = import_run(
        pacs_import=pacs_import, scratch=job_scratch_dir(job.pk, create=True), progress=progress
    )
    pacs_import.outcome = tally.outcome
    pacs_import.save(update_fields=["outcome"])
    result = {
        **tally.counts(),
        "retrieve_seconds": round(tally.retrieve_seconds, 3),
        "ingest_seconds": round(tally.ingest_seconds, 3),
    }
    return result, tally.counts(), tally.errors


@shared_task(name="pacs.import", base=JobTask)
def pacs_import_task(*, job_id: int) -> None:
    job_run(job_id=job_id, body=pacs_import_body)


@shared_task(name="pacs.store_back_sweep")
def store_back_sweep_task() -> None:
    """Send the accepted masks not sent yet (and retry failed sends) of every source with store-back on."""
    from pacs.storeback import store_back_sweep

    store_back_sweep()
