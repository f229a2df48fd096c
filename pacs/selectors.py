"""Reads of PACS sources, imports and store-backs: managers of the project only (everyone else: 404, the
project's other roles included: a source's URL and its studies are the hospital's, not the dataset's)."""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import Http404

from core.models import Project, Role
from core.selectors import project_get_for_user
from pacs.models import PacsImport, PacsSource, PacsStoreBack

MANAGERS = [Role.MANAGER]


def project_for_pacs_manager(user, slug: str) -> Project:
    return project_get_for_user(user, slug, roles=MANAGERS)


def sources_for_manager(user, slug: str) -> tuple[Project, QuerySet[PacsSource]]:
    project = project_for_pacs_manager(user, slug)
    return project, PacsSource.objects.filter(project=project).order_by("name")


def source_get_for_manager(user, slug: str, pk: int) -> PacsSource:
    project, qs = sources_for_manager(user, slug)
    source = qs.filter(pk=pk).first()
    if source is None:
        raise Http404("No such PACS source.")
    source.project = project
    return source


def source_get_by_name(project: Project, name: str) -> PacsSource:
    """For the management command (an operator, no user): the project's source ``name``."""
    source = PacsSource.objects.filter(project=project, name=name).first()
    if source is None:
        names = ", ".join(PacsSource.objects.filter(project=project).values_list("name", flat=True))
        raise Http404(f"No PACS source {name!r} in project {project.slug} (sources: {names or 'none'}).")
    return source


def imports_for_manager(user, slug: str) -> QuerySet[PacsImport]:
    project = project_for_pacs_manager(user, slug)
    return PacsImport.objects.filter(project=project).select_related("job", "source")


def import_get_for_manager(user, slug: str, pk: int) -> PacsImport:
    found = imports_for_manager(user, slug).filter(pk=pk).first()
    if found is None:
        raise Http404("No such PACS import.")
    return found


def store_backs_for_manager(user, slug: str) -> QuerySet[PacsStoreBack]:
    project = project_for_pacs_manager(user, slug)
    return PacsStoreBack.objects.filter(project=project).select_related("source")
