"""A finding's versions: adding the next one (its mask stored through the codec, ``studies/masks.py``),
reading one back as a mask on the scan's grid ``(X, Y[, Z])``, what changed between two of them, and a
finding's current grounding (its newest mask and its newest box: a box never replaces a mask)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.db.models import Exists, F, OuterRef, Q, Window
from django.db.models.functions import RowNumber

from annotation.models import Annotation, AnnotationKind, Finding
from core.storage import project_key, storage_save_bytes
from studies.masks import mask_encode, mask_read


def version_key(finding: Finding, number: int, suffix: str) -> str:
    return project_key(finding.project, "annotations", f"finding-{finding.pk}", f"v{number}{suffix}")


def version_add(
    finding: Finding,
    written: list[str],
    *,
    user,
    kind: str,
    array: np.ndarray | None,
    voxels: int,
    box=None,
    points=None,
    parent: Annotation | None = None,
    comment: str = "",
    mask_encoded: bytes | None = None,
) -> Annotation:
    """The finding's next version (the caller holds the finding's row lock and has checked the geometry):
    its mask file stored (its key appended to ``written``), the row, ``current_version`` moved on.
    ``array``: the mask ``(X, Y[, Z])``; ``mask_encoded``: its bytes when they already are the stored form
    (a gzipped uint8 NIfTI of 0/1 on the scan's affine), kept as they are."""
    number = finding.current_version + 1
    key = ""
    if array is not None:
        if mask_encoded is not None and array.ndim == 3:
            data, suffix = mask_encoded, ".nii.gz"
        else:
            data, suffix = mask_encode(array, np.asarray(finding.scan.affine, dtype=np.float64))
        key = storage_save_bytes(version_key(finding, number, suffix), data)
        written.append(key)
    annotation = Annotation.objects.create(
        finding=finding,
        version=number,
        kind=kind,
        mask=key,
        box=list(box) if box is not None else None,
        points=[list(p) for p in points] if points is not None else None,
        voxels=voxels,
        author=user,
        parent=parent,
        comment=comment,
    )
    finding.current_version = number
    finding.save(update_fields=["current_version", "updated_at"])
    return annotation


def version_mask(annotation: Annotation, shape: tuple[int, ...]) -> np.ndarray | None:
    """A version as a boolean mask on the scan's grid ``(X, Y[, Z])``: its mask file, or its box filled
    (min rounded down, max up, max exclusive); None for points or a mask on another grid."""
    if annotation.kind == AnnotationKind.MASK and annotation.mask:
        array = mask_read(annotation.mask.name)
        return array if array.shape == shape else None
    if annotation.box and len(annotation.box) == 2 * len(shape):
        d = len(shape)
        out = np.zeros(shape, bool)
        out[
            tuple(
                slice(max(0, math.floor(annotation.box[i])), min(shape[i], math.ceil(annotation.box[d + i])))
                for i in range(d)
            )
        ] = True
        return out
    return None


def proposal_version(finding: Finding) -> Annotation | None:
    """The version the finding started from: the one made from a region proposal (no author)."""
    return (
        finding.annotations.filter(author__isnull=True, region_proposal__isnull=False)
        .order_by("version")
        .first()
    )


def version_change(finding: Finding, result: Annotation | None) -> dict[str, Any]:
    """What the annotator changed from the proposal: ``proposal`` (its version, or None when the finding
    had none), ``result`` (the version submitted), ``kept_proposal`` (true only when there was a proposal
    and the result is that very version), and when both are masks or boxes on the scan's grid ``dice``,
    ``voxels_added`` and ``voxels_removed`` (voxels of the result not in the proposal, and the reverse)."""
    proposal = proposal_version(finding)
    out: dict[str, Any] = {
        "proposal": proposal.version if proposal else None,
        "proposal_voxels": proposal.voxels if proposal else None,
        "result": result.version if result else None,
        "result_voxels": result.voxels if result else None,
        "kept_proposal": bool(proposal and result and proposal.pk == result.pk),
        "dice": None,
        "voxels_added": None,
        "voxels_removed": None,
    }
    if proposal is None or result is None or finding.scan_id is None:
        return out
    if proposal.pk == result.pk:
        out.update(dice=1.0, voxels_added=0, voxels_removed=0)
        return out
    shape = tuple(int(n) for n in finding.scan.shape[: finding.scan.ndim])
    before, after = version_mask(proposal, shape), version_mask(result, shape)
    if before is None or after is None:
        return out
    both = int(np.count_nonzero(before & after))
    total = int(np.count_nonzero(before)) + int(np.count_nonzero(after))
    out.update(
        dice=2.0 * both / total if total else 1.0,
        voxels_added=int(np.count_nonzero(after & ~before)),
        voxels_removed=int(np.count_nonzero(before & ~after)),
    )
    return out


# --- a finding's current grounding ------------------------------------------------------------------------

# A mask with its file, a box with its corners (points ground nothing).
GEOMETRY = (Q(kind=AnnotationKind.MASK) & ~Q(mask="")) | (Q(kind=AnnotationKind.BOX) & Q(box__isnull=False))


def _reading_phase() -> Q:
    """Versions a reader saved in their reading (several readers, ``annotation.readers``): authored by one
    of the finding's readers and no later than the newest version a reading holds. They are the readings',
    not the finding's (the consensus made of them is; a reader's box never sits beside it)."""
    from annotation.models import Reading

    of_finding = Reading.objects.filter(finding_id=OuterRef("finding_id"))
    return Exists(of_finding.filter(reader_id=OuterRef("author_id"))) & Exists(
        of_finding.filter(annotation__version__gte=OuterRef("version"))
    )


def _grounds() -> Q:
    """The versions that may ground a finding: a mask or a box, not a reader's own in their reading."""
    return GEOMETRY & ~_reading_phase()


@dataclass(frozen=True)
class Grounding:
    """A finding's current grounding: its newest mask version and its newest box version, each up to its
    ``current_version``. Boxes and masks are separate annotations of a finding: saving a box after a mask
    keeps the mask (and the reverse); a restore saves the old version again as the newest one, so it is
    the newest of its kind. A mask erased to nothing and saved is no mask: the finding has no mask (an
    older one does not come back), only its box if it has one. With several readers, the versions readers
    saved in their readings do not count: the consensus made of them does."""

    mask: Annotation | None = None
    box: Annotation | None = None

    @property
    def kind(self) -> str:
        """``mask`` when the finding has a mask, else ``box`` when it has a box, else ``none``."""
        return "mask" if self.mask is not None else "box" if self.box is not None else "none"

    @property
    def primary(self) -> Annotation | None:
        """The version ``kind`` names (the mask, else the box)."""
        return self.mask if self.mask is not None else self.box

    def versions(self) -> dict[str, int | None]:
        """``{"mask": n | None, "box": n | None}``: the version numbers of both."""
        return {
            "mask": self.mask.version if self.mask is not None else None,
            "box": self.box.version if self.box is not None else None,
        }


def groundings(findings: Iterable[Finding | int], *, related: tuple[str, ...] = ()) -> dict[int, Grounding]:
    """Finding id -> its current grounding (``Grounding``), for many findings in one query (the newest
    mask and box versions up to each one's current version, picked by the database); findings without a
    mask or box version map to an empty ``Grounding``. ``related``: ``select_related`` of the versions
    (e.g. ``("author",)``)."""
    ids = sorted({f if isinstance(f, int) else f.pk for f in findings})
    out = {pk: Grounding() for pk in ids}
    if not ids:
        return out
    newest = (
        Annotation.objects.filter(_grounds(), finding_id__in=ids, version__lte=F("finding__current_version"))
        .annotate(
            rank=Window(RowNumber(), partition_by=[F("finding_id"), F("kind")], order_by=F("version").desc())
        )
        .filter(rank=1)
    )
    if related:
        newest = newest.select_related(*related)
    found: dict[int, dict[str, Annotation]] = {}
    for a in newest:
        found.setdefault(a.finding_id, {})[a.kind] = a
    for pk, kinds in found.items():
        mask = kinds.get(AnnotationKind.MASK)
        if mask is not None and mask.voxels == 0:
            mask = None  # erased: no mask (an empty mask file is not a positive finding's grounding)
        out[pk] = Grounding(mask=mask, box=kinds.get(AnnotationKind.BOX))
    return out


def in_grounding() -> Q:
    """A filter of ``Annotation`` rows: the versions that are their finding's current grounding (its newest
    mask or newest box up to its current version; an erased mask is none), the queryset form of
    ``groundings``."""
    later = Annotation.objects.filter(
        _grounds(),
        finding_id=OuterRef("finding_id"),
        kind=OuterRef("kind"),
        version__gt=OuterRef("version"),
        version__lte=OuterRef("finding__current_version"),
    )
    erased = Q(kind=AnnotationKind.MASK, voxels=0)  # newest, but no mask: an older one does not come back
    return _grounds() & Q(version__lte=F("finding__current_version")) & ~Exists(later) & ~erased


def grounding(finding: Finding) -> Grounding:
    """One finding's current grounding (``groundings`` of one)."""
    return groundings([finding.pk])[finding.pk]
