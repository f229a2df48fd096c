"""Changes to projects and memberships."""

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction

from core.errors import ApplicationError, FieldError
from core.models import Membership, Project, Role


@transaction.atomic
def project_create(
    *, slug: str, name: str = "", keep_identity_map: bool = False, label_schema: str = "chexpert", owner=None
) -> Project:
    """Create a project; ``owner`` (if given) becomes its manager."""
    project = Project.objects.create(
        slug=slug, name=name or slug, keep_identity_map=keep_identity_map, label_schema=label_schema
    )
    if owner is not None:
        membership_set(project=project, user=owner, role=Role.MANAGER)
    return project


REVIEW_SETTINGS = (
    "qa_sample_rate",
    "readers_per_finding",
    "consensus_method",
    "findings_after_label_run",
    "train_after_accepted",
)


def project_review_settings(*, project: Project, **values) -> Project:
    """Set how a project's findings are reviewed: ``qa_sample_rate`` (0–1, the share of each annotator's
    work a second radiologist checks), ``readers_per_finding`` (1–10 blinded readings per new finding) and
    ``consensus_method`` (majority or staple); the learning loop's ``findings_after_label_run`` (a finished
    label run makes its findings and review tasks at once) and ``train_after_accepted`` (this many newly
    accepted findings start a training run; 0: never). Raises ``FieldError`` naming the field."""
    unknown = set(values) - set(REVIEW_SETTINGS)
    if unknown:
        raise FieldError(sorted(unknown)[0], f"not a review setting ({', '.join(REVIEW_SETTINGS)})")
    if "qa_sample_rate" in values and not 0.0 <= float(values["qa_sample_rate"]) <= 1.0:
        raise FieldError("qa_sample_rate", f"must be between 0 and 1, got {values['qa_sample_rate']}")
    if "readers_per_finding" in values and not 1 <= int(values["readers_per_finding"]) <= 10:
        raise FieldError("readers_per_finding", f"must be 1 to 10, got {values['readers_per_finding']}")
    if "consensus_method" in values and values["consensus_method"] not in ("majority", "staple"):
        raise FieldError("consensus_method", f"majority or staple, got {values['consensus_method']!r}")
    follow = values.get("findings_after_label_run", False)
    if not isinstance(follow, bool):
        raise FieldError("findings_after_label_run", f"true or false, got {follow!r}")
    if "train_after_accepted" in values:
        count = values["train_after_accepted"]
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= 100_000:
            raise FieldError("train_after_accepted", f"a count from 0 (off) to 100000, got {count!r}")
    for name, value in values.items():
        setattr(project, name, value)
    project.save(update_fields=list(values))
    return project


def membership_set(*, project: Project, user, role: str) -> Membership:
    if role not in Role.values:
        raise FieldError("role", f"{role!r} is not one of {', '.join(Role.values)}")
    membership, _ = Membership.objects.update_or_create(project=project, user=user, defaults={"role": role})
    return membership


def user_create(*, username: str, password: str, is_superuser: bool = False, is_staff: bool = False):
    """A user whose ``password`` passes ``AUTH_PASSWORD_VALIDATORS``; raises ``ApplicationError`` on the
    field ``password`` with the validators' reasons."""
    User = get_user_model()
    try:
        validate_password(password, user=User(username=username))
    except ValidationError as exc:
        raise ApplicationError(" ".join(exc.messages), field="password") from exc
    if is_superuser:
        return User.objects.create_superuser(username=username, password=password, email="")
    return User.objects.create_user(username=username, password=password, is_staff=is_staff)


def _keeps_a_manager(project: Project, user, role: str | None) -> None:
    """Raise ``FieldError`` when giving ``user`` the role ``role`` (None: removing them) would leave
    ``project`` without a manager (nobody could then add people or change roles but staff)."""
    if role == Role.MANAGER:
        return
    managers = Membership.objects.filter(project=project, role=Role.MANAGER)
    if managers.filter(user=user).exists() and not managers.exclude(user=user).exists():
        action = "removed" if role is None else f"made {role}"
        raise FieldError("user", f"{user} is the project's only manager and cannot be {action}")


def membership_change(*, project: Project, user, role: str) -> Membership:
    """``membership_set``, refused (``FieldError`` on ``user``) when it would demote the last manager."""
    if role in Role.values:
        _keeps_a_manager(project, user, role)
    return membership_set(project=project, user=user, role=role)


@transaction.atomic
def membership_remove(*, project: Project, user) -> None:
    """Remove ``user`` from ``project``; refused (``FieldError`` on ``user``) for its last manager or a
    user who is not a member. Their past work (versions, history) keeps their name."""
    membership = Membership.objects.select_for_update().filter(project=project, user=user).first()
    if membership is None:
        raise FieldError("user", f"{user} is not a member of {project}")
    _keeps_a_manager(project, user, None)
    membership.delete()
