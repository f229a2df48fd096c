"""Reads with access checks. A project the caller is not a member of does not exist for them (404)."""

from collections.abc import Iterable

from django.db.models import QuerySet
from django.http import Http404

from core.errors import Forbidden
from core.models import Job, Membership, Project, Role


def projects_for_user(user) -> QuerySet[Project]:
    if not user.is_authenticated:
        return Project.objects.none()
    if user.is_superuser:
        return Project.objects.all()
    return Project.objects.filter(memberships__user=user).distinct()


def project_ids_for_slug(user, slug: str) -> list[int]:
    """The id of the caller's project ``slug`` as a list (empty when it is not theirs): a list filter's
    ``?project=`` without a join."""
    return list(projects_for_user(user).filter(slug=slug).values_list("id", flat=True))


def project_get_for_user(user, slug: str, *, roles: Iterable[str] | None = None) -> Project:
    """The project ``slug`` if ``user`` is a member (with one of ``roles`` when given); else 404.

    A member whose role is not enough also gets 404 for role-restricted reads, so that nothing about
    the object leaks; superusers see everything.
    """
    project = projects_for_user(user).filter(slug=slug).first()
    if project is None:
        raise Http404("No such project.")
    if roles is not None and not user_has_role(user, project, roles):
        raise Http404("No such project.")
    return project


def user_has_role(user, project: Project, roles: Iterable[str]) -> bool:
    if user.is_superuser:
        return True
    return Membership.objects.filter(project=project, user=user, role__in=list(roles)).exists()


def role_require(user, project: Project, roles: Iterable[str], who: str) -> None:
    """Raise ``Forbidden`` (403) unless ``user`` has one of ``roles`` in ``project`` (``who``: those roles
    in words, for the message). Call it after the project was read through a selector (so that outsiders
    already got 404)."""
    if not user_has_role(user, project, roles):
        raise Forbidden(f"Only {who} of this project may do this.")


def user_role(user, project: Project) -> str | None:
    if user.is_superuser:
        return Role.MANAGER
    membership = Membership.objects.filter(project=project, user=user).first()
    return membership.role if membership else None


def jobs_for_user(user) -> QuerySet[Job]:
    return Job.objects.filter(project__in=projects_for_user(user)).select_related("project")


def job_get_for_user(user, job_id: int) -> Job:
    job = jobs_for_user(user).filter(pk=job_id).first()
    if job is None:
        raise Http404("No such job.")
    return job
