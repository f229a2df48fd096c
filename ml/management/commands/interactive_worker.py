"""manage.py interactive_worker: the warm child that serves click jobs (``ml.interactive_worker``).

Reads a job id per line on stdin and runs its task (``ml.interactive``, ``task.apply`` as a worker would:
the job row records progress and outcome, with this process's pid in its result), answering
``INTERACTIVE-WORKER: done <id>`` on stdout. Says ``INTERACTIVE-WORKER: ready`` once Django and the task
registry are loaded. Exits when stdin closes or after ``--idle-seconds`` without a job.
"""

import logging
import os
import select
import sys

from django.core.management.base import BaseCommand

from config.celery import app
from ml.interactive_worker import PREFIX

log = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Serve click jobs (ml.interactive), one job id per stdin line (the web process starts it)."
    # Started for the first click: no system checks (they import every URLconf and view, seconds of a
    # start that the annotator waits for) and only the one task's module.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser):
        parser.add_argument("--idle-seconds", type=float, default=600.0)

    def handle(self, *args, **opts):
        import ml.interactive  # noqa: F401 (loaded before the first click, not during it)
        import ml.tasks  # noqa: F401 (registers ml.interactive)

        task = app.tasks["ml.interactive"]

        self._say("ready")
        fd, pending = sys.stdin.fileno(), b""
        while True:
            # own line buffer over the raw descriptor: a buffered reader could hold a second job id that
            # select() then never reports
            while b"\n" not in pending:
                readable, _, _ = select.select([fd], [], [], opts["idle_seconds"])
                if not readable:
                    log.info("interactive worker %s: idle, exiting", os.getpid())
                    return
                chunk = os.read(fd, 4096)
                if not chunk:
                    return
                pending += chunk
            line, pending = pending.split(b"\n", 1)
            try:
                job_id = int(line.strip())
            except ValueError:
                log.error("interactive worker: not a job id: %r", line[:80])
                continue
            try:
                task.apply(kwargs={"job_id": job_id})
            except Exception:  # the job row records the failure; the traceback: the log only
                log.exception("job %s failed in the interactive worker %s", job_id, os.getpid())
            self._say(f"done {job_id}")

    def _say(self, words: str) -> None:
        sys.stdout.write(f"{PREFIX} {words}\n")
        sys.stdout.flush()
