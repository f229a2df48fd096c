"""manage.py pacs_store_back [--project SLUG]: send the accepted masks that are due as DICOM SEG."""

from django.core.management.base import BaseCommand, CommandError

from core.models import Project
from pacs.storeback import store_back_sweep


class Command(BaseCommand):
    help = (
        "Send accepted findings' masks to the sources with store-back on (DICOM SEG, STOW-RS) and try "
        "failed sends again; prints each send's outcome (the beat does this every 5 minutes)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--project", help="project slug (default: every project)")

    def handle(self, *args, **opts):
        project = None
        if opts.get("project"):
            project = Project.objects.filter(slug=opts["project"]).first()
            if project is None:
                raise CommandError(f"no project {opts['project']!r}")
        sent = store_back_sweep(project=project)
        for record in sent:
            self.stdout.write(
                f"finding {record.finding_id} v{record.version} -> {record.source.name}: {record.status}"
                + (f" ({record.message})" if record.message else "")
            )
        self.stdout.write(f"{sum(r.status == 'stored' for r in sent)} of {len(sent)} stored")
