"""Dataset releases: datasets, freezing a selection into an immutable manifest (``releases/freeze.py``),
exporting it (``releases/exporting.py``) and diffs between versions.

``release_create`` freezes; ``release_cases`` reads a frozen release back as ``CaseRecord``s, checking
every file's sha256 against the manifest; ``release_export_to`` writes them in one format through a sink;
``export_start`` does it as a job; ``release_diff`` compares two versions.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from core.models import Project
from releases.errors import ReleaseError
from releases.exporting import (
    export_check,
    export_formats,
    export_job,
    export_start,
    format_get,
    release_cases,
    release_export_to,
    release_manifest,
)
from releases.freeze import SOURCES, STATUSES, Selection, freeze_job, release_create, release_start
from releases.models import Dataset, DatasetRelease, ReleaseCase, ReleaseLabel, ReleaseStatus

__all__ = [
    "SOURCES", "STATUSES", "ReleaseError", "Selection", "dataset_create", "export_check", "export_formats",
    "export_job", "export_start", "format_get", "freeze_job", "release_cases", "release_create",
    "release_diff", "release_export_to", "release_manifest", "release_start",
]  # fmt: skip


def dataset_create(
    *, slug: str, name: str, projects: list[Project], user=None, description="", licence="", citation=""
) -> Dataset:
    if not projects:
        raise ReleaseError("projects", "name at least one project")
    if Dataset.objects.filter(slug=slug).exists():
        raise ReleaseError("slug", f"a dataset {slug!r} exists already")
    with transaction.atomic():
        dataset = Dataset.objects.create(
            slug=slug, name=name or slug, description=description, licence=licence, citation=citation,
            created_by=user,
        )  # fmt: skip
        dataset.projects.set(projects)
    return dataset


def _used_classes(release: DatasetRelease) -> set[str]:
    """The classes some mask label of ``release`` is counted under."""
    from releases.labels import class_name

    rows = ReleaseLabel.objects.filter(release=release, kind="mask").values("category", "code")
    return {class_name(row) for row in rows.distinct()}


def release_diff(new: DatasetRelease, old: DatasetRelease | None = None) -> dict[str, Any]:
    """Cases and labels added, removed and changed from ``old`` (default: the previous version)."""
    if old is None:
        old = (
            DatasetRelease.objects.filter(
                dataset=new.dataset, version__lt=new.version, status=ReleaseStatus.FROZEN
            )
            .order_by("-version")
            .first()
        )
    if old is not None and old.dataset_id != new.dataset_id:
        raise ReleaseError("against", f"{old} is a release of another dataset")

    def cases(r):
        return dict(ReleaseCase.objects.filter(release=r).values_list("case_id", "split")) if r else {}

    def labels(r):
        if r is None:
            return {}
        rows = ReleaseLabel.objects.filter(release=r).values_list("case__case_id", "label_id", "digest")
        return {(c, lab): d for c, lab, d in rows}

    a, b = cases(old), cases(new)
    la, lb = labels(old), labels(new)
    ca, cb = (old.classes if old else {}) or {}, new.classes or {}
    return {
        "from": old.version if old else None,
        "to": new.version,
        "classes": {
            # the class table is only extended: a class keeps its value in every later version
            "added": {k: v for k, v in cb.items() if k not in ca},
            "renumbered": {k: [ca[k], cb[k]] for k in ca.keys() & cb.keys() if ca[k] != cb[k]},
            "unused": sorted(set(cb.values()) - _used_classes(new)),
        },
        "cases": {
            "added": sorted(set(b) - set(a)),
            "removed": sorted(set(a) - set(b)),
            "split_changed": sorted(c for c in set(a) & set(b) if a[c] != b[c]),
        },
        "labels": {
            "added": sorted(f"{c}/{lab}" for c, lab in set(lb) - set(la)),
            "removed": sorted(f"{c}/{lab}" for c, lab in set(la) - set(lb)),
            "changed": sorted(f"{c}/{lab}" for c, lab in set(la) & set(lb) if la[(c, lab)] != lb[(c, lab)]),
        },
    }
