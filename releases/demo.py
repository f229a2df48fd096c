"""The demo's fully reviewed case: the synthetic CT's nodule grounded by a demo annotator and approved by
a demo radiologist, so a release can be frozen and exported right after ``make demo``."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from annotation.models import Finding, FindingStatus, Stage
from annotation.services import (
    annotation_save,
    findings_from_proposals,
    task_approve,
    task_claim,
    task_submit,
)
from core.models import Project
from studies.models import Scan

NODULE_MM3 = 4 / 3 * np.pi * 7.0**3  # the phantom's 14 mm nodule


def nodule_mask(scan: Scan) -> np.ndarray | None:
    """The phantom nodule on the stored scan: the component of tissue (> -500 HU) whose volume is nearest
    a 14 mm sphere's, if one is within a factor of 2 of it."""
    import nibabel as nib
    from django.core.files.storage import default_storage

    from core.storage import storage_local_copy

    if not scan.file or not default_storage.exists(scan.file.name):
        return None
    with storage_local_copy(scan.file.name) as path:
        volume = np.asarray(nib.load(str(path)).dataobj)
    labels, n = ndimage.label(volume > -500)
    if n == 0:
        return None
    voxel_mm3 = float(np.prod(scan.spacing))
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, n + 1)) * voxel_mm3
    best = int(np.argmin(np.abs(np.log(sizes / NODULE_MM3)))) + 1
    if not 0.5 < sizes[best - 1] / NODULE_MM3 < 2.0:
        return None
    return labels == best


def demo_review(*, project: Project, annotator, radiologist) -> Finding | None:
    """Findings from the demo report's proposals, and the nodule's accepted (idempotent)."""
    findings_from_proposals(project=project)
    finding = (
        Finding.objects.filter(project=project, code="2d", scan__ndim=3)
        .select_related("task", "scan")
        .first()
    )
    if finding is None or finding.status == FindingStatus.ACCEPTED:
        return finding
    mask = nodule_mask(finding.scan)
    if mask is None:
        return None
    task = finding.task
    if task.stage == Stage.ANNOTATE:
        task = task_claim(task_id=task.pk, user=annotator, stages=(Stage.ANNOTATE,))
        annotation_save(
            task_id=task.pk, user=annotator, base_version=finding.current_version, kind="mask", mask=mask,
            comment="demo: the nodule, thresholded",
        )  # fmt: skip
        task_submit(task_id=task.pk, user=annotator, decision="accept")
    task = task_claim(task_id=task.pk, user=radiologist, stages=(Stage.REVIEW, Stage.QA))
    task_approve(task_id=task.pk, user=radiologist, comment="demo: approved")
    if Finding.objects.get(pk=finding.pk).status != FindingStatus.ACCEPTED:  # sampled for QA: approve again
        task = task_claim(task_id=task.pk, user=radiologist, stages=(Stage.QA,))
        task_approve(task_id=task.pk, user=radiologist, comment="demo: QA approved")
    finding.refresh_from_db()
    return finding
