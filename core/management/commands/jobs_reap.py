from django.core.management.base import BaseCommand

from core.jobs import REAPED, jobs_reap


class Command(BaseCommand):
    help = (
        "Fail the running jobs whose lease lapsed (their process died) and remove their raw uploads, "
        "and the raw uploads that ended jobs left behind."
    )

    def handle(self, *args, **opts):
        reaped = jobs_reap()
        for pk in reaped:
            self.stdout.write(f"job {pk}: {REAPED}")
        self.stdout.write(f"{len(reaped)} job(s) reaped")
