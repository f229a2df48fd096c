from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from core.errors import FieldError
from core.models import Project, Role
from core.services import membership_set, project_create, project_review_settings


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
        parser.add_argument("--qa-rate", type=float, help="share of each annotator's work sent to QA (0.1)")
        parser.add_argument("--readers", type=int, help="independent readings per finding (1)")
        parser.add_argument(
            "--consensus", choices=["majority", "staple"], help="how readings merge (majority)"
        )
        parser.add_argument(
            "--findings-after-label-run",
            action="store_true",
            default=None,
            help="a finished label run makes its findings and review tasks at once",
        )
        parser.add_argument(
            "--train-after-accepted",
            type=int,
            help="this many newly accepted findings start a training run (0: never, the default)",
        )

    def handle(self, *args, **opts):
        if Project.objects.filter(slug=opts["slug"]).exists():
            raise CommandError(f"project {opts['slug']!r} exists already")
        flags = {
            "qa_sample_rate": "qa_rate",
            "readers_per_finding": "readers",
            "consensus_method": "consensus",
            "findings_after_label_run": "findings_after_label_run",
            "train_after_accepted": "train_after_accepted",
        }
        settings = {name: opts[key] for name, key in flags.items() if opts[key] is not None}
        User = get_user_model()
        with transaction.atomic():  # a bad option leaves no project behind
            project = project_create(
                slug=opts["slug"],
                name=opts["name"],
                keep_identity_map=opts["keep_identity_map"],
                label_schema=opts["label_schema"],
            )
            try:
                project_review_settings(project=project, **settings)
            except FieldError as exc:
                flag = flags.get(exc.field, exc.field).replace("_", "-")
                raise CommandError(f"--{flag}: {exc.message}") from exc
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
