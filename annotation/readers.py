"""Several independent readers per finding (``Project.readers_per_finding`` = N > 1).

A finding of such a project gets N ``Reading``s when it is made (from a proposal or by hand) and its
``ReviewTask`` waits in stage ``read``, out of the annotate queue. Readers (annotators and managers) take
readings with :func:`reading_next` (``SKIP LOCKED``; never two readings of one finding for one reader; a
lease like a task's), save their own versions with :func:`reading_save` (the same geometry checks as
``annotation_save``; each save is an ``Annotation`` version of the finding authored by the reader, so the
history keeps everything, but a reader sees only the proposal and their own versions, and ``base_version``
names the reader's own current version, not the finding's) and :func:`reading_submit` ``accept`` (the
finding is there: their current version grounds it; accepting the proposal as it is counts) or
``reject``.

When the last reading is in, :func:`_consensus` computes the agreement (per finding: pairwise Dice and IoU
of the accepting readers' masks, boxes drawn as masks, points left out; each reader's mean against the
others; the share of reader pairs with the same decision) and the decision (the majority of the readers';
a tie accepts, so the radiologist sees a mask), and when the decision is accept a consensus mask of the
accepting readers' masks with ``Project.consensus_method`` (``majority``: a voxel marked by more than half,
half included; ``staple``: STAPLE posterior ≥ 0.5), saved as a new version (no author, comment "consensus
of N readers (method)"). ``Finding.agreement`` keeps it all, a ``consensus`` history event records it, and
the task goes to ``review`` with no annotator: any radiologist approves it, or returns it to the annotate
queue for one annotator to correct the consensus (then as with one reader).

:func:`project_agreement` sums it up over a project: per finding, per annotator (mean Dice against the
others, findings read) and Fleiss' kappa of the decisions (Cohen's kappa when N = 2: reading 1 against
reading 2).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import numpy as np
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from annotation import agreement as ag
from annotation.errors import Conflict, LeaseError, ReviewError
from annotation.events import event_add, lease_length, task_state
from annotation.geometry import geometry_check
from annotation.models import (
    Annotation,
    AnnotationKind,
    Finding,
    Reading,
    ReadingStatus,
    ReviewTask,
    Stage,
)
from annotation.versions import version_add, version_mask  # noqa: F401 - version_mask: re-exported
from core.models import Project
from core.storage import storage_all_or_nothing

CONSENSUS_METHODS = ("majority", "staple")


def _reading_state(reading: Reading) -> dict[str, Any]:
    return {
        "reading": reading.pk,
        "index": reading.index,
        "reader": reading.reader_id,
        "status": reading.status,
        "decision": reading.decision,
        "version": reading.annotation.version if reading.annotation_id else None,
    }


# --- opening readings (hooked into findings_from_proposals and finding_create) ---------------------------


def readings_open(task: ReviewTask, *, user=None, first_reader=None) -> list[Reading]:
    """With N = ``readers_per_finding`` > 1: N open readings of the task's finding, and the task waits in
    stage ``read`` (unheld). ``first_reader`` (who added a finding by hand) holds reading 1. With N = 1
    nothing changes. Call inside the transaction that made the task."""
    project = task.project
    n = int(project.readers_per_finding or 1)
    if n <= 1:
        return []
    now = timezone.now()
    readings = [
        Reading(
            project=project,
            finding_id=task.finding_id,
            index=i,
            reader=first_reader if i == 1 else None,
            lease_expires_at=now + lease_length() if i == 1 and first_reader is not None else None,
        )
        for i in range(1, n + 1)
    ]
    Reading.objects.bulk_create(readings)
    before = task_state(task)
    task.stage, task.assignee, task.lease_expires_at = Stage.READ, None, None
    task.save(update_fields=["stage", "assignee", "lease_expires_at", "updated_at"])
    event_add(task.finding, task, user, "readings_opened", before, {**task_state(task), "readers": n})
    return list(Reading.objects.filter(finding_id=task.finding_id).order_by("index"))


# --- what a reader sees -----------------------------------------------------------------------------


def start_version(finding: Finding) -> Annotation | None:
    """The version every reader starts from: the proposal's version 1 when the finding came with a region
    proposal, else none (version 0)."""
    return finding.annotations.filter(version=1, author__isnull=True, region_proposal__isnull=False).first()


def reading_current(reading: Reading) -> Annotation | None:
    """The reader's current version: their newest own save in this reading, else the start version."""
    if reading.annotation_id:
        return reading.annotation
    return start_version(reading.finding)


def reading_versions(reading: Reading):
    """The versions a reader may see: the start version and their own (never another reader's)."""
    start = start_version(reading.finding)
    mine = Q(author_id=reading.reader_id) if reading.reader_id else Q(pk__in=[])
    if start is not None:
        mine |= Q(pk=start.pk)
    return reading.finding.annotations.filter(mine).select_related("author").order_by("version")


# --- the readers' queue -----------------------------------------------------------------------------


def reading_next(*, project: Project, user) -> Reading | None:
    """The reading this person should do next: an open one they hold (its lease renewed), else the first
    free one (unheld or lease expired) of the highest-priority finding in stage ``read`` of which they hold
    no reading. Locked with ``SKIP LOCKED``: two readers asking at once never get the same reading."""
    try:
        return _reading_next(project, user)
    except IntegrityError:
        # The same person asking twice at once took two readings of one finding: the second request is
        # refused by the one-reading-per-reader constraint; asked again, it finds the one they now hold.
        return _reading_next(project, user)


def _reading_next(project: Project, user) -> Reading | None:
    now = timezone.now()
    with transaction.atomic():
        held = (
            Reading.objects.select_for_update(of=("self",))
            .filter(project=project, reader=user, status=ReadingStatus.OPEN, finding__task__stage=Stage.READ)
            .order_by("-finding__task__priority", "finding_id", "index")
            .first()
        )
        reading = held
        if reading is None:
            reading = (
                Reading.objects.select_for_update(skip_locked=True, of=("self",))
                .filter(project=project, status=ReadingStatus.OPEN, finding__task__stage=Stage.READ)
                .filter(Q(reader__isnull=True) | Q(lease_expires_at__lte=now))
                .exclude(finding__in=Reading.objects.filter(reader=user).values("finding_id"))
                .order_by("-finding__task__priority", "finding_id", "index")
                .first()
            )
        if reading is None:
            return None
        before = _reading_state(reading)
        if held is None:
            reading.reader, reading.annotation = user, None  # a reading taken over starts afresh
        reading.lease_expires_at = now + lease_length()
        reading.save(update_fields=["reader", "annotation", "lease_expires_at", "updated_at"])
        finding = Finding.objects.select_related("report", "scan").get(pk=reading.finding_id)
        reading.finding = finding
        if held is None:
            event_add(finding, None, user, "reading_claimed", before, _reading_state(reading))
    return reading


def _held(reading_id: int, user) -> Reading:
    reading = (
        Reading.objects.select_for_update(of=("self",))
        .select_related("finding__project", "annotation")
        .get(pk=reading_id)
    )
    if reading.status != ReadingStatus.OPEN:
        raise ReviewError("status", f"reading {reading.index} of this finding is already submitted")
    if reading.reader_id != user.pk:
        raise LeaseError("lease", "this reading is not held by you (take one with next-reading)")
    if reading.lease_expires_at is not None and reading.lease_expires_at <= timezone.now():
        raise LeaseError("lease", "your lease on this reading expired; take it again with next-reading")
    return reading


# --- saving a reader's version ------------------------------------------------------------------------


def reading_save(
    *,
    reading_id: int,
    user,
    base_version: int,
    kind: str,
    mask=None,
    mask_encoded: bytes | None = None,
    box=None,
    points=None,
    comment: str = "",
) -> Annotation:
    """A new version of the reading's finding, authored by its reader (who must hold it). ``base_version``
    names the reader's own current version (their newest save, else the proposal's version 1, else 0):
    another reader's saves never conflict with it, and a stale one is a ``Conflict`` showing only the
    reader's own version. ``mask_encoded`` as in ``annotation_save``."""
    with storage_all_or_nothing() as written, transaction.atomic():
        reading = _held(reading_id, user)
        # The finding row numbers the versions of all its readers: lock it (only it, not the scan join).
        finding = (
            Finding.objects.select_for_update(of=("self",)).select_related("scan").get(pk=reading.finding_id)
        )
        reading.finding = finding
        current = reading_current(reading)
        if base_version != (current.version if current else 0):
            raise Conflict(current, base_version)
        array, voxels = geometry_check(finding, kind, mask, box, points)
        annotation = version_add(
            finding, written, user=user, kind=kind, array=array, voxels=voxels, box=box, points=points,
            parent=current, comment=comment, mask_encoded=mask_encoded,
        )  # fmt: skip
        number = annotation.version
        reading.annotation = annotation
        reading.save(update_fields=["annotation", "updated_at"])
        event_add(
            finding,
            None,
            user,
            "reading_saved",
            {"reading": reading.pk, "version": current.version if current else 0},
            {"reading": reading.pk, "version": number, "kind": kind, "voxels": voxels},
            comment,
        )
    return annotation


# --- submitting, and the consensus after the last reading --------------------------------------------


def reading_submit(*, reading_id: int, user, decision: str, comment: str = "") -> Reading:
    """Reader: ``accept`` (their current version grounds the finding; an empty one cannot be accepted) or
    ``reject`` (the finding is not there). The last reading of a finding makes its consensus and sends its
    task to review."""
    if decision not in ("accept", "reject"):
        raise ReviewError("decision", "must be accept or reject")
    with storage_all_or_nothing() as written, transaction.atomic():
        finding_id = Reading.objects.filter(pk=reading_id).values_list("finding_id", flat=True).first()
        if finding_id is None:
            raise Reading.DoesNotExist(f"no reading {reading_id}")
        # The task row first: the submits of one finding take turns, so exactly one sees the last reading.
        task = (
            ReviewTask.objects.select_for_update(of=("self",))
            .select_related("project")
            .get(finding_id=finding_id)
        )
        reading = _held(reading_id, user)
        current = reading_current(reading)
        if decision == "accept" and (current is None or current.voxels == 0):
            raise ReviewError(
                "decision", "an empty annotation cannot be accepted: draw the finding, or reject it"
            )
        before = _reading_state(reading)
        reading.status, reading.decision, reading.annotation = ReadingStatus.SUBMITTED, decision, current
        reading.submitted_at, reading.lease_expires_at = timezone.now(), None
        reading.save()
        event_add(reading.finding, None, user, "reading_submitted", before, _reading_state(reading), comment)
        readings = list(
            Reading.objects.filter(finding_id=finding_id)
            .select_related("reader", "annotation")
            .order_by("index")
        )
        if task.stage == Stage.READ and all(r.status == ReadingStatus.SUBMITTED for r in readings):
            _consensus(task, readings, written)
    return reading


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(sum(values) / len(values)) if values else None


def _consensus(task: ReviewTask, readings: list[Reading], written: list[str]) -> None:
    project = task.project
    method = project.consensus_method if project.consensus_method in CONSENSUS_METHODS else "majority"
    finding = (
        Finding.objects.select_for_update(of=("self",))
        .select_related("scan", "project")
        .get(pk=task.finding_id)
    )
    n = len(readings)
    votes = Counter(r.decision for r in readings)
    decision = "accept" if votes["accept"] >= votes["reject"] else "reject"
    pair_share = sum(c * (c - 1) for c in votes.values()) / (n * (n - 1)) if n > 1 else 1.0

    shape = tuple(int(s) for s in finding.scan.shape[: finding.scan.ndim]) if finding.scan_id else ()
    masks: dict[int, np.ndarray] = {}
    for r in readings:
        if r.decision == "accept" and r.annotation_id and shape:
            array = version_mask(r.annotation, shape)
            if array is not None:
                masks[r.pk] = array
    per_dice: dict[int, float] = {}
    per_iou: dict[int, float] = {}
    pairs: list[dict[str, Any]] = []
    if len(masks) >= 2:
        dice_pairs, iou_pairs = ag.pairwise(masks, "dice"), ag.pairwise(masks, "iou")
        by_pk = {r.pk: r for r in readings}
        for (a, b), value in dice_pairs.items():
            pairs.append(
                {
                    "readings": [a, b],
                    "readers": [by_pk[a].reader.username, by_pk[b].reader.username],
                    "dice": value,
                    "iou": iou_pairs[(a, b)],
                }
            )
        per_dice, per_iou = ag.per_reader(masks, "dice"), ag.per_reader(masks, "iou")

    consensus: Annotation | None = None
    staple_params: dict[str, list[float]] | None = None
    if decision == "accept" and masks:
        stack = list(masks.values())
        if len(stack) == 1:
            merged = stack[0]
        elif method == "staple":
            probability, staple_params = ag.staple(stack)
            merged = probability >= 0.5
        else:
            merged = ag.majority_vote(stack)
        hits = np.nonzero(merged)
        box = [int(h.min()) for h in hits] + [int(h.max()) + 1 for h in hits] if hits[0].size else None
        consensus = version_add(
            finding, written, user=None, kind=AnnotationKind.MASK, array=merged,
            voxels=int(np.count_nonzero(merged)), box=box, comment=f"consensus of {n} readers ({method})",
        )  # fmt: skip

    staple_by_reading = {}
    if staple_params is not None:
        for j, pk in enumerate(masks):
            staple_by_reading[pk] = {
                "sensitivity": staple_params["sensitivity"][j],
                "specificity": staple_params["specificity"][j],
            }
    finding.agreement = {
        "method": method,
        "readers": [
            {
                "reading": r.pk,
                "index": r.index,
                "user": r.reader_id,
                "username": r.reader.username if r.reader_id else None,
                "decision": r.decision,
                "version": r.annotation.version if r.annotation_id else None,
                "voxels": r.annotation.voxels if r.annotation_id else 0,
                "in_consensus": r.pk in masks,
                "dice": per_dice.get(r.pk),
                "iou": per_iou.get(r.pk),
                **({"staple": staple_by_reading[r.pk]} if r.pk in staple_by_reading else {}),
            }
            for r in readings
        ],
        "pairs": pairs,
        "mean_dice": _mean(p["dice"] for p in pairs),
        "mean_iou": _mean(p["iou"] for p in pairs),
        "decisions": {"accept": votes["accept"], "reject": votes["reject"]},
        "decision_agreement": pair_share,
        "decision": decision,
        "tie": votes["accept"] == votes["reject"],
        "consensus_version": consensus.version if consensus else None,
        "consensus_voxels": consensus.voxels if consensus else None,
    }
    finding.save(update_fields=["agreement", "current_version", "updated_at"])
    before = task_state(task)
    task.stage, task.decision, task.annotated_by, task.returned_comment = Stage.REVIEW, decision, None, ""
    task.assignee, task.lease_expires_at = None, None
    task.save()
    event_add(
        finding,
        task,
        None,
        "consensus",
        before,
        {**task_state(task), "agreement": finding.agreement},
        f"consensus of {n} readers ({method})",
    )


# --- agreement over a project -----------------------------------------------------------------------


def project_agreement(project: Project, *, finding_ids: set[int] | None = None) -> dict[str, Any]:
    """Per finding (those with a consensus; only ``finding_ids`` when given, the sums still over all),
    per annotator (findings read, accepted, mean Dice and IoU against the others) and for the project
    (Fleiss' kappa of the decisions over findings with ``readers_per_finding`` readers; Cohen's kappa,
    reading 1 against reading 2, when that is 2; mean Dice and IoU; readings still open)."""
    n = int(project.readers_per_finding or 1)
    rows = []
    annotators: dict[int | None, dict[str, Any]] = defaultdict(
        lambda: {"username": None, "findings": 0, "accepted": 0, "dice": [], "iou": []}
    )
    same_n: list[list[dict[str, Any]]] = []
    findings = (
        Finding.objects.filter(project=project, agreement__has_key="readers")
        .select_related("task")
        .order_by("id")
    )
    for f in findings:
        a = f.agreement
        readers = sorted(a["readers"], key=lambda r: r["index"])
        for r in readers:
            who = annotators[r["user"]]
            who["username"] = r["username"]
            who["findings"] += 1
            who["accepted"] += r["decision"] == "accept"
            if r.get("dice") is not None:
                who["dice"].append(r["dice"])
                who["iou"].append(r["iou"])
        if len(readers) == n:
            same_n.append(readers)
        if finding_ids is None or f.pk in finding_ids:
            rows.append(
                {
                    "finding": f.pk,
                    "code": f.code,
                    "text": f.text,
                    "status": f.status,
                    "stage": getattr(getattr(f, "task", None), "stage", None),
                    **a,
                    "readers": readers,
                }
            )
    decisions = [[r["decision"] for r in readers] for readers in same_n]
    fleiss = ag.fleiss_kappa(decisions) if decisions and n >= 2 else None
    cohen = (
        ag.cohen_kappa([d[0] for d in decisions], [d[1] for d in decisions]) if decisions and n == 2 else None
    )
    per_annotator = [
        {
            "user": pk,
            "username": v["username"],
            "findings": v["findings"],
            "accepted": v["accepted"],
            "mean_dice": _mean(v["dice"]),
            "mean_iou": _mean(v["iou"]),
            "compared": len(v["dice"]),
        }
        for pk, v in sorted(annotators.items(), key=lambda kv: str(kv[1]["username"]))
    ]
    every = [f.agreement for f in findings]
    return {
        "project": {
            "readers_per_finding": n,
            "consensus_method": project.consensus_method,
            "findings": len(every),
            "kappa_findings": len(decisions),
            "fleiss_kappa": fleiss,
            "cohen_kappa": cohen,
            "mean_dice": _mean(a.get("mean_dice") for a in every),
            "mean_iou": _mean(a.get("mean_iou") for a in every),
            "open_readings": Reading.objects.filter(project=project, status=ReadingStatus.OPEN).count(),
        },
        "annotators": per_annotator,
        "findings": rows,
    }
