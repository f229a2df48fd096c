"""Changes to projects and memberships."""

from django.contrib.auth import get_user_model
from django.db import transaction

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


def membership_set(*, project: Project, user, role: str) -> Membership:
    if role not in Role.values:
        raise ValueError(f"role: {role!r} is not one of {', '.join(Role.values)}")
    membership, _ = Membership.objects.update_or_create(project=project, user=user, defaults={"role": role})
    return membership


def user_create(*, username: str, password: str, is_superuser: bool = False):
    User = get_user_model()
    if is_superuser:
        return User.objects.create_superuser(username=username, password=password, email="")
    return User.objects.create_user(username=username, password=password)
