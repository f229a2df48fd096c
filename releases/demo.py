"""The demo's fully reviewed case: the real CT's mass grounded by a demo annotator and approved by a demo
radiologist, so a release can be frozen and exported right after ``make demo``; and the radiograph's work
for both demo accounts (``demo_radiograph``): its masses for the radiologist's review, its largest mass
for the annotator to draw."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from annotation.models import Finding, ReviewTask, Stage
from annotation.proposals import read_mask
from annotation.services import (
    annotation_save,
    finding_create,
    findings_from_proposals,
    task_approve,
    task_claim,
    task_submit,
)
from core.models import Project
from labeling.models import RegionProposal
from studies.demo import RADIOGRAPH_LARGEST_MASS, REAL_CT_MASS_CLICK_LPS
from studies.models import Scan


def mass_mask(
    hu: np.ndarray,
    lung: np.ndarray,
    spacing: tuple[float, float, float],
    click: tuple[int, int, int],
    *,
    outline_mm: float = 30.0,
    solid_hu: float = -500.0,
    open_mm: float = 3.0,
) -> np.ndarray | None:
    """The solid lesion at ``click`` inside a lung: what the demo annotator draws.

    ``hu`` and ``lung`` (the lungs generator's mask of that lung, which leaves out a lesion on its border)
    have axes ``(X, Y, Z)`` (Z the slice axis), ``spacing`` is mm per axis, ``click`` a voxel index. Per
    slice, the lung's outline is closed with a disk of ``outline_mm`` radius (the lung's bay around the
    lesion filled, the mediastinum and chest wall left outside) and shrunk by 2 mm (its pleural rim); in
    it, voxels above ``solid_hu`` opened with a disk of ``open_mm`` radius (vessels cut off); the
    6-connected component holding the click, holes filled. ``None`` when the click is not in one."""
    plane = (float(spacing[0]), float(spacing[1]))
    xs, ys = np.flatnonzero(lung.any(axis=(1, 2))), np.flatnonzero(lung.any(axis=(0, 2)))
    if not len(xs):
        return None
    box = (slice(xs[0], xs[-1] + 1), slice(ys[0], ys[-1] + 1))  # a closed outline stays in the lung's box
    sub_lung, sub_hu = lung[box], hu[box]
    outline = np.zeros(sub_lung.shape, dtype=bool)
    pad = int(np.ceil(outline_mm / min(plane))) + 2
    for k in np.flatnonzero(sub_lung.any(axis=(0, 1))):
        # closing, then the rim taken off, as distances (a disk this big makes binary_closing take minutes)
        padded = np.pad(sub_lung[:, :, k], pad)
        grown = ndimage.distance_transform_edt(~padded, sampling=plane) <= outline_mm
        closed = ndimage.distance_transform_edt(grown, sampling=plane) > outline_mm + 2.0
        outline[:, :, k] = closed[pad:-pad, pad:-pad]
    solid_box = outline & (sub_hu > solid_hu)
    for k in np.flatnonzero(solid_box.any(axis=(0, 1))):  # in-plane opening with a disk of open_mm
        padded = np.pad(solid_box[:, :, k], 1)
        core = ndimage.distance_transform_edt(padded, sampling=plane) > open_mm
        solid_box[:, :, k] = (ndimage.distance_transform_edt(~core, sampling=plane) <= open_mm)[1:-1, 1:-1]
    solid = np.zeros(lung.shape, dtype=bool)
    solid[box] = solid_box
    if not solid[click]:
        return None
    labels, _ = ndimage.label(solid)
    return ndimage.binary_fill_holes(labels == labels[click])


def real_ct_mass(scan: Scan) -> np.ndarray | None:
    """``mass_mask`` of the stored real CT at the demo annotator's click (``REAL_CT_MASS_CLICK_LPS``, mapped
    through the scan's affine) in the lungs generator's right lung; ``None`` without that proposal."""
    import nibabel as nib
    from django.core.files.storage import default_storage

    from core.storage import storage_local_copy

    proposal = (
        RegionProposal.objects.filter(scan=scan, source="lungs", label="right_lung").order_by("-id").first()
    )
    if proposal is None or not scan.file or not default_storage.exists(scan.file.name):
        return None
    with storage_local_copy(scan.file.name) as path:
        hu = np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
    x, y, z = REAL_CT_MASS_CLICK_LPS
    ijk = np.linalg.inv(np.asarray(scan.affine, dtype=np.float64)) @ np.array([-x, -y, z, 1.0])  # LPS -> RAS
    click = tuple(int(round(v)) for v in ijk[:3])
    if any(not 0 <= c < n for c, n in zip(click, hu.shape, strict=True)):
        return None
    return mass_mask(hu, read_mask(proposal.mask.name), tuple(float(s) for s in scan.spacing), click)


def demo_review(*, project: Project, annotator, radiologist) -> Finding | None:
    """Findings from the demo reports' proposals, and the real CT's mass findings (``2d`` on a CT) grounded
    by ``annotator`` (``real_ct_mass``): the first (the mass, named in Findings and Impression: one
    finding with two spans) approved by ``radiologist``; any others submitted and left in the
    radiologists' review queue. Tasks a
    person took meanwhile are left alone; running it again changes nothing. Returns the first."""
    findings_from_proposals(project=project)
    findings = list(
        Finding.objects.filter(project=project, code="2d", scan__ndim=3, scan__modality="CT")
        .select_related("task", "scan")
        .order_by("id")
    )
    masks: dict[int, np.ndarray | None] = {}
    for number, finding in enumerate(findings):
        task = finding.task
        if task.stage == Stage.ANNOTATE and task.assignee_id in (None, annotator.pk):
            if finding.scan_id not in masks:
                masks[finding.scan_id] = real_ct_mass(finding.scan)
            mask = masks[finding.scan_id]
            if mask is None:
                continue
            task = task_claim(task_id=task.pk, user=annotator, stages=(Stage.ANNOTATE,))
            annotation_save(
                task_id=task.pk, user=annotator, base_version=finding.current_version, kind="mask", mask=mask,
                comment="demo: the mass, from a click inside the right lung's outline",
            )  # fmt: skip
            task = task_submit(task_id=task.pk, user=annotator, decision="accept")
        if number > 0:
            continue  # left for a radiologist
        for _ in range(2):  # review, then QA when the task was sampled for it
            task.refresh_from_db()
            if task.stage not in (Stage.REVIEW, Stage.QA) or task.assignee_id not in (None, radiologist.pk):
                break
            task = task_claim(task_id=task.pk, user=radiologist, stages=(Stage.REVIEW, Stage.QA))
            task_approve(task_id=task.pk, user=radiologist, comment="demo: approved")
    if not findings:
        return None
    findings[0].refresh_from_db()
    return findings[0]


def demo_radiograph(*, project: Project, annotator) -> tuple[ReviewTask | None, ReviewTask | None]:
    """Work on the demo radiograph for each demo account, once the CT's mass is accepted (the radiologist
    has no CT task left then): its masses finding (version 1 started from the reader's gaze) submitted by
    ``annotator`` as it started, waiting in the radiologists' review; and the largest mass, which the
    report names on its own (``RADIOGRAPH_LARGEST_MASS``), a finding of its own for ``annotator`` to
    draw (held by them, as a finding they added). Tasks a person took meanwhile are left alone; running it
    again changes nothing. Returns (the review task, the annotate task), None where there is none."""
    masses = (
        Finding.objects.filter(project=project, scan__ndim=2, scan__name="RG1_UNCR", code="2d")
        .exclude(source="manual")
        .select_related("task", "report", "scan")
        .order_by("id")
        .first()
    )
    if masses is None or masses.report is None:
        return None, None
    task = masses.task
    if task.stage == Stage.ANNOTATE and task.assignee_id in (None, annotator.pk) and masses.current_version:
        task = task_claim(task_id=task.pk, user=annotator, stages=(Stage.ANNOTATE,))
        task = task_submit(
            task_id=task.pk, user=annotator, decision="accept", comment="demo: the start from the gaze, kept"
        )
    start = masses.report.findings.find(RADIOGRAPH_LARGEST_MASS)
    largest = (
        Finding.objects.filter(project=project, scan=masses.scan, source="manual", start=start)
        .select_related("task")
        .first()
    )
    if largest is None and start >= 0:
        created = finding_create(
            project=project,
            user=annotator,
            study=masses.study,
            scan=masses.scan,
            text=RADIOGRAPH_LARGEST_MASS,
            code="2d",
            section="findings",
            start=start,
            end=start + len(RADIOGRAPH_LARGEST_MASS),
        )
        largest = created.finding
    review = task if task.stage in (Stage.REVIEW, Stage.QA) else None
    draw = largest.task if largest is not None and largest.task.stage == Stage.ANNOTATE else None
    return review, draw
