"""manage.py job_exec: run one job's Celery task in this process (``task.apply``), as a worker would.

``core.job_child`` starts it for the jobs of the ``gpu`` queue when tasks run in-process (the embedded
default), so that they never run in the web process; it can also run a job by hand. The job row records
progress and outcome; this process adds its pid to the job's result (``result["pid"]``) once the job
ended. Exit status 0 when the task returned, 1 when it raised (the job row says why).
"""

import json
import logging
import os

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from config.celery import app
from core.models import Job

log = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Run a job's task (by its Celery name, e.g. ml.preannotate) in this process."

    def add_arguments(self, parser):
        parser.add_argument("--task", required=True, help="the task's Celery name")
        parser.add_argument("--job-id", type=int, required=True)
        parser.add_argument("--kwargs", default="{}", help="JSON object: more keyword arguments of the task")

    def handle(self, *args, **opts):
        app.loader.import_default_modules()  # every app's tasks module: the registry by name
        task = app.tasks.get(opts["task"])
        if task is None:
            raise CommandError(f"--task: no task {opts['task']!r}")
        try:
            kwargs = json.loads(opts["kwargs"])
        except json.JSONDecodeError as exc:
            raise CommandError(f"--kwargs: not JSON ({exc})") from exc
        if not isinstance(kwargs, dict) or "job_id" in kwargs:
            raise CommandError("--kwargs: a JSON object of keyword arguments other than job_id")
        job_id = opts["job_id"]
        if not Job.objects.filter(pk=job_id).exists():
            raise CommandError(f"--job-id: no job {job_id}")
        failed = False
        try:
            task.apply(kwargs={"job_id": job_id, **kwargs})
        except Exception:  # the job row already records the failure; the traceback: the log only
            log.exception("job %s failed in process %s", job_id, os.getpid())
            failed = True
        with transaction.atomic():
            job = Job.objects.select_for_update().get(pk=job_id)
            job.result = {**(job.result or {}), "pid": os.getpid()}
            job.save(update_fields=["result"])
        if failed:
            raise SystemExit(1)
