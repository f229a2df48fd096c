"""Celery adapters for core: the job reaper, every minute under beat and once when a worker starts."""

from celery import shared_task
from celery.signals import worker_ready

from core.jobs import jobs_reap


@shared_task(name="core.jobs_reap", ignore_result=True)
def jobs_reap_task() -> list[int]:
    """Fail jobs whose process died (lapsed lease) and remove their raw uploads."""
    return jobs_reap()


@worker_ready.connect
def _reap_at_worker_start(**_kwargs) -> None:
    # A worker that starts may be the one that died: its jobs' leases have lapsed, or will.
    jobs_reap()
