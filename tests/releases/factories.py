"""A fully reviewed CT case: findings from the report, one grounded with a mask and accepted, one rejected."""

import numpy as np

from annotation.models import Finding, Stage
from annotation.services import annotation_save, task_approve, task_next, task_submit
from core.models import Role
from core.services import membership_set
from tests.annotation.factories import review_case

ANNOTATE, REVIEW = (Stage.ANNOTATE,), (Stage.REVIEW, Stage.QA)


def reviewed_case(project, folder, make_user, *, accept: int = 1, reject: int = 1, box: bool = False):
    """Returns the scan once ``accept`` findings are accepted (with a mask, or a box) and ``reject``
    rejected, each approved by a radiologist."""
    scan = review_case(
        project,
        folder,
        findings="There is a 14 mm nodule in the right upper lobe. Small left pleural effusion. "
        "Mild emphysema.",
    )
    ann, rad = make_user(f"ann-{project.slug}"), make_user(f"rad-{project.slug}")
    membership_set(project=project, user=ann, role=Role.ANNOTATOR)
    membership_set(project=project, user=rad, role=Role.RADIOLOGIST)
    for n in range(accept + reject):
        task = task_next(project=project, user=ann, stages=ANNOTATE)
        assert task is not None, "the case has fewer findings than asked for"
        if n < accept:
            if box:
                annotation_save(
                    task_id=task.pk, user=ann, base_version=task.finding.current_version, kind="box",
                    box=[4, 4, 1, 12 + n, 12, 3],
                )  # fmt: skip
            else:
                mask = np.zeros(tuple(scan.shape), bool)
                mask[4 + n : 12 + n, 6:14, 1:4] = True
                mask[30:34, 30:34, 5:7] = True  # a second entity
                annotation_save(
                    task_id=task.pk,
                    user=ann,
                    base_version=task.finding.current_version,
                    kind="mask",
                    mask=mask,
                )
            task_submit(task_id=task.pk, user=ann, decision="accept")
        else:
            task_submit(task_id=task.pk, user=ann, decision="reject")
        review = task_next(project=project, user=rad, stages=REVIEW)
        task_approve(task_id=review.pk, user=rad)
    assert Finding.objects.filter(project=project, status="accepted").count() == accept
    return scan
