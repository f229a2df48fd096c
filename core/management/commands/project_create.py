from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from core.models import Project, Role
from core.services import membership_set, project_create


class Command(BaseCommand):
    help = "Create a project (and optionally add members: --member USER:ROLE)."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--name", default="")
        parser.add_argument(
            "--keep-identity-map", action="store_true", help="keep original ids (managers only)"
        )
        parser.add_argument(
            "--label-schema", choices=["chexpert", "rexgroundingct", "petct"], default="chexpert"
        )
        parser.add_argument(
            "--member", action="append", default=[], help=f"USER:ROLE, ROLE in {', '.join(Role.values)}"
        )

    def handle(self, *args, **opts):
        if Project.objects.filter(slug=opts["slug"]).exists():
            raise CommandError(f"project {opts['slug']!r} exists already")
        project = project_create(
            slug=opts["slug"],
            name=opts["name"],
            keep_identity_map=opts["keep_identity_map"],
            label_schema=opts["label_schema"],
        )
        User = get_user_model()
        for item in opts["member"]:
            username, _, role = item.partition(":")
            user = User.objects.filter(username=username).first()
            if user is None:
                raise CommandError(f"--member: no user {username!r}")
            try:
                membership_set(project=project, user=user, role=role)
            except ValueError as exc:
                raise CommandError(f"--member {item}: {exc}") from exc
        self.stdout.write(f"created project {project.slug}")
