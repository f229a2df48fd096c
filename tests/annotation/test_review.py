"""Review services: findings from proposals (with the proposal's mask as version 1), the queue (never
the same task to two people), leases, versioned saves with conflicts, every stage transition, QA
sampling, and the history of it all."""

import datetime as dt

import numpy as np
import pytest
from django.utils import timezone

from annotation.models import Annotation, Finding, HistoryEvent, ReviewTask
from annotation.services import (
    Conflict,
    LeaseError,
    ReviewError,
    annotation_save,
    findings_from_proposals,
    task_approve,
    task_next,
    task_return,
    task_submit,
)
from core.models import Role
from ml.preannotate import preannotate
from tests.annotation.factories import review_case

ANNOTATE, REVIEWING = ("annotate",), ("review", "qa")


@pytest.fixture
def case(project, tmp_path):
    """A CT with a report of two present findings, labelled, as annotate tasks."""
    scan = review_case(
        project,
        tmp_path,
        findings="There is a 14 mm nodule in the right upper lobe. Small left pleural effusion.",
    )
    assert Finding.objects.count() >= 2
    return scan


@pytest.fixture
def people(make_members, project):
    return make_members(
        project, ann=Role.ANNOTATOR, ann2=Role.ANNOTATOR, rad=Role.RADIOLOGIST, rad2=Role.RADIOLOGIST
    )


def test_findings_from_proposals_once_with_tasks_and_history(project, case):
    n = Finding.objects.count()
    assert findings_from_proposals(project=project) == 0 and Finding.objects.count() == n
    for finding in Finding.objects.all():
        assert finding.scan_id == case.pk and finding.text.endswith(".") and finding.task.stage == "annotate"
        assert HistoryEvent.objects.filter(finding=finding, action="created").count() == 1
        assert finding.report.findings[finding.start : finding.end] == finding.text


def test_proposal_mask_becomes_version_one(project, tmp_path, case):
    Finding.objects.all().delete()
    outcome = preannotate(scan=case, generator="lungs")
    for p in outcome.proposals:  # label the lung masks with a finding code of the report
        p.code = "2e"
        p.save()
    findings_from_proposals(project=project)
    effusion = Finding.objects.get(code="2e")
    v1 = effusion.annotations.get()
    assert effusion.current_version == 1 and v1.region_proposal_id in {p.pk for p in outcome.proposals}
    assert v1.mask.name != v1.region_proposal.mask.name  # a copy: re-running the generator cannot remove it


def test_queue_never_gives_one_task_to_two_people_and_leases_expire(project, case, people):
    a = task_next(project=project, user=people["ann"], stages=ANNOTATE)
    b = task_next(project=project, user=people["ann2"], stages=ANNOTATE)
    assert a and b and a.pk != b.pk
    assert task_next(project=project, user=people["ann"], stages=ANNOTATE).pk == a.pk  # resumes its own
    ReviewTask.objects.filter(pk=a.pk).update(lease_expires_at=timezone.now() - dt.timedelta(seconds=1))
    with pytest.raises(LeaseError, match="^lease: your lease on this task expired"):
        task_submit(task_id=a.pk, user=people["ann"], decision="reject")
    with pytest.raises(LeaseError, match="^lease: this task is not held by you"):
        task_submit(task_id=a.pk, user=people["ann2"], decision="reject")
    assert (
        task_next(project=project, user=people["ann"], stages=ANNOTATE).pk == a.pk
    )  # free again, first in line
    assert HistoryEvent.objects.filter(task=a, action="claimed").count() == 2


def test_versioned_saves_and_conflicts(project, case, people):
    task = task_next(project=project, user=people["ann"], stages=ANNOTATE)
    shape = tuple(case.shape)
    mask = np.zeros(shape, bool)
    mask[10:20, 10:20, 2:5] = True
    finding = task.finding
    base = finding.current_version
    v = annotation_save(task_id=task.pk, user=people["ann"], base_version=base, kind="mask", mask=mask)
    assert v.version == base + 1 and v.voxels == mask.sum() and v.author == people["ann"]
    with pytest.raises(Conflict) as stale:
        annotation_save(task_id=task.pk, user=people["ann"], base_version=base, kind="mask", mask=mask)
    assert stale.value.status == 409 and stale.value.current.pk == v.pk and stale.value.yours == base
    with pytest.raises(ReviewError, match="^mask: shape"):
        annotation_save(
            task_id=task.pk, user=people["ann"], base_version=v.version, kind="mask", mask=mask[:-1]
        )
    with pytest.raises(ReviewError, match="^box: axis 0"):
        annotation_save(
            task_id=task.pk,
            user=people["ann"],
            base_version=v.version,
            kind="box",
            box=[0, 0, 0, shape[0] + 5, 10, 3],
        )
    with pytest.raises(LeaseError):
        annotation_save(
            task_id=task.pk, user=people["ann2"], base_version=v.version, kind="points", points=[[1, 1, 1]]
        )
    box = annotation_save(
        task_id=task.pk, user=people["ann"], base_version=v.version, kind="box", box=[1, 1, 1, 5, 5, 3]
    )
    assert box.parent_id == v.pk and Finding.objects.get(pk=finding.pk).current_version == v.version + 1
    assert HistoryEvent.objects.filter(finding=finding, action="annotation_saved").count() == 2


def test_full_review_path_with_return_comment(project, case, people):
    task = task_next(project=project, user=people["ann"], stages=ANNOTATE)
    finding = task.finding
    empty = np.zeros(tuple(case.shape), bool)
    annotation_save(
        task_id=task.pk, user=people["ann"], base_version=finding.current_version, kind="mask", mask=empty
    )
    with pytest.raises(ReviewError, match="^decision: an empty annotation cannot be accepted"):
        task_submit(task_id=task.pk, user=people["ann"], decision="accept")
    mask = empty.copy()
    mask[5:9, 5:9, 1:3] = True
    finding.refresh_from_db()
    annotation_save(
        task_id=task.pk, user=people["ann"], base_version=finding.current_version, kind="mask", mask=mask
    )
    task_submit(task_id=task.pk, user=people["ann"], decision="accept")
    assert task_next(project=project, user=people["ann"], stages=REVIEWING) is None  # not one's own
    review = task_next(project=project, user=people["rad"], stages=REVIEWING)
    assert review.pk == task.pk
    with pytest.raises(ReviewError, match="^comment"):
        task_return(task_id=task.pk, user=people["rad"], comment=" ")
    task_return(task_id=task.pk, user=people["rad"], comment="Include the whole nodule")
    again = task_next(project=project, user=people["ann"], stages=ANNOTATE)
    assert again.pk == task.pk and again.returned_comment == "Include the whole nodule"
    task_submit(task_id=task.pk, user=people["ann"], decision="accept")
    review = task_next(project=project, user=people["rad"], stages=REVIEWING)
    done = task_approve(task_id=review.pk, user=people["rad"])
    assert done.stage == "accepted" and Finding.objects.get(pk=finding.pk).status == "accepted"
    actions = list(HistoryEvent.objects.filter(finding=finding).values_list("action", flat=True))
    assert actions[:1] == ["created"] and actions.count("submitted") == 2 and actions[-1] == "approved"
    returned = HistoryEvent.objects.get(finding=finding, action="returned")
    assert (
        returned.user == people["rad"]
        and returned.before["stage"] == "review"
        and returned.after["stage"] == "annotate"
    )
    assert Annotation.objects.filter(finding=finding).count() >= 2


def test_qa_sample_and_rejection(project, case, people):
    project.qa_sample_rate = 1.0
    project.save()
    task = task_next(project=project, user=people["ann"], stages=ANNOTATE)
    task_submit(task_id=task.pk, user=people["ann"], decision="reject")
    review = task_next(project=project, user=people["rad"], stages=REVIEWING)
    assert task_approve(task_id=review.pk, user=people["rad"]).stage == "qa"
    qa = task_next(project=project, user=people["rad2"], stages=REVIEWING)
    assert qa.pk == task.pk
    closed = task_approve(task_id=qa.pk, user=people["rad2"])
    assert closed.stage == "rejected" and Finding.objects.get(pk=task.finding_id).status == "rejected"
    with pytest.raises(ReviewError, match="^stage"):
        task_approve(task_id=qa.pk, user=people["rad2"])
