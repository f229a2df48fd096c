"""manage.py interactive_worker: the warm child that serves click jobs (``ml.interactive_worker``).

Reads a job id per line on stdin and runs its task (``ml.interactive``, ``task.apply`` as a worker would:
the job row records progress and outcome, this process's pid added to its result), answering
``INTERACTIVE-WORKER: done <id>`` on stdout. Says ``INTERACTIVE-WORKER: ready`` once Django and the task
registry are loaded. Exits when stdin closes or after ``--idle-seconds`` without a job.
"""

import logging
import os
import select
import sys

from django.core.management.base import BaseCommand
from django.db import connection, transaction

from config.celery import app
from core.models import Job
from ml.interactive_worker import PREFIX

log = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Serve click jobs (ml.interactive), one job id per stdin line (the web process starts it)."

    def add_arguments(self, parser):
        parser.add_argument("--idle-seconds", type=float, default=600.0)

    def handle(self, *args, **opts):
        app.loader.import_default_modules()
        task = app.tasks["ml.interactive"]
        import ml.interactive  # noqa: F401 (loaded before the first click, not during it)

        self._say("ready")
        while True:
            readable, _, _ = select.select([sys.stdin], [], [], opts["idle_seconds"])
            if not readable:
                log.info("interactive worker %s: idle, exiting", os.getpid())
                return
            line = sys.stdin.readline()
            if not line:
                return
            try:
                job_id = int(line.strip())
            except ValueError:
                log.error("interactive worker: not a job id: %r", line[:80])
                continue
            try:
                task.apply(kwargs={"job_id": job_id})
            except Exception:  # the job row records the failure; the traceback: the log only
                log.exception("job %s failed in the interactive worker %s", job_id, os.getpid())
            try:
                with transaction.atomic():
                    job = Job.objects.select_for_update().get(pk=job_id)
                    job.result = {**(job.result or {}), "pid": os.getpid()}
                    job.save(update_fields=["result"])
            except Exception:
                log.exception("job %s: the worker's pid could not be recorded", job_id)
                connection.close()
            self._say(f"done {job_id}")

    def _say(self, words: str) -> None:
        sys.stdout.write(f"{PREFIX} {words}\n")
        sys.stdout.flush()
