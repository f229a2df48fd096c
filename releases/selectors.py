"""Reads of datasets, releases and exports: the visibility rule in one place.

A dataset (and its releases and exports) exists for a user who may read every project it draws from:
managers, researchers and radiologists of each (superusers: all). Annotators work on review tasks, not on
released data; anyone else gets 404.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import QuerySet

from core.errors import Forbidden, NotFound
from core.models import Membership, Project, Role
from releases.models import Dataset, DatasetRelease, ReleaseExport

READERS = (Role.MANAGER, Role.RESEARCHER, Role.RADIOLOGIST)
WRITERS = (Role.MANAGER, Role.RESEARCHER)


def _project_ids(user, roles: Iterable[str]) -> QuerySet:
    if not user.is_authenticated:
        return Project.objects.none().values("pk")
    if user.is_superuser:
        return Project.objects.values("pk")
    return Membership.objects.filter(user=user, role__in=list(roles)).values("project_id")


def datasets_for_user(user, roles: Iterable[str] = READERS) -> QuerySet[Dataset]:
    """Datasets all of whose projects the user holds one of ``roles`` in."""
    return Dataset.objects.exclude(projects__in=Project.objects.exclude(pk__in=_project_ids(user, roles)))


def dataset_get_for_user(user, slug: str, *, write: bool = False) -> Dataset:
    """The dataset ``slug`` (404 unless readable); with ``write``, 403 unless the user is a manager or
    researcher of every project of it."""
    dataset = datasets_for_user(user).filter(slug=slug).prefetch_related("projects").first()
    if dataset is None:
        raise NotFound("No such dataset.")
    if write and not datasets_for_user(user, WRITERS).filter(pk=dataset.pk).exists():
        raise Forbidden("Only managers and researchers of every project of the dataset may do this.")
    return dataset


def release_get_for_user(user, release_id: int) -> DatasetRelease:
    release = (
        DatasetRelease.objects.filter(pk=release_id, dataset__in=datasets_for_user(user))
        .select_related("dataset")
        .first()
    )
    if release is None:
        raise NotFound("No such release.")
    return release


def export_get_for_user(user, export_id: int) -> ReleaseExport:
    export = (
        ReleaseExport.objects.filter(pk=export_id, release__dataset__in=datasets_for_user(user))
        .select_related("release__dataset", "job")
        .first()
    )
    if export is None:
        raise NotFound("No such export.")
    return export
