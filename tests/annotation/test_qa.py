"""What the radiologists see of a submission (review and QA): the annotator's decision and comment and what
changed from the proposal (nothing is "kept" when there was no proposal); QA goes to another radiologist
than the reviewer when the project has one."""

import io

import numpy as np
import pytest
from django.urls import reverse
from PIL import Image

from annotation.models import Finding, ReviewTask, Stage
from annotation.services import annotation_save, finding_create, task_approve, task_next, task_submit
from core.models import Role
from tests.annotation.factories import radiograph_case

WIDTH, HEIGHT = 200, 160
PROPOSAL = (60, 50, 140, 120)  # the Cardiomegaly proposal's box: x0, y0, x1, y1


@pytest.fixture
def people(make_members, project):
    return make_members(project, ann=Role.ANNOTATOR, rad=Role.RADIOLOGIST, rad2=Role.RADIOLOGIST)


@pytest.fixture
def scan(project, tmp_path):
    return radiograph_case(project, tmp_path, size=(WIDTH, HEIGHT), proposal_box=PROPOSAL, gaze=False)


def _claim(project, user, code) -> ReviewTask:
    task = ReviewTask.objects.get(finding__code=code)
    from annotation.services import task_claim

    return task_claim(task_id=task.pk, user=user, stages=(Stage.ANNOTATE,))


def _png(mask_xy: np.ndarray) -> io.BytesIO:
    out = io.BytesIO()
    Image.fromarray((mask_xy.T * 255).astype(np.uint8)).convert("1").save(out, format="PNG")
    out.seek(0)
    out.name = "edit.png"
    return out


def test_review_shows_the_decision_comment_and_the_change_from_the_proposal(
    project, scan, people, api_client
):
    ann, rad = api_client(people["ann"]), api_client(people["rad"])
    task = _claim(project, people["ann"], "Cardiomegaly")
    finding = task.finding
    assert finding.current_version == 1 and finding.annotations.get().region_proposal_id  # the proposal
    # The annotator moves the proposal's right edge: 20 columns off, 10 columns on.
    edited = np.zeros((WIDTH, HEIGHT), bool)
    edited[60:130, 50:120] = True  # columns 130..139 removed
    edited[30:40, 50:120] = True  # columns 30..39 added
    saved = ann.post(
        reverse("task-annotations", args=[task.pk]),
        {"base_version": 1, "kind": "mask", "mask": _png(edited)},
        format="multipart",
    )
    assert saved.status_code == 201, saved.content
    ann.post(
        reverse("task-submit", args=[task.pk]),
        {"decision": "accept", "comment": "heart border"},
        format="json",
    )

    case = rad.get(reverse("next-task", args=[project.slug]), {"stage": "review"}).json()
    assert case["task"]["id"] == task.pk and case["task"]["annotated_by"] == "ann"
    submission = case["submission"]
    assert submission["annotator"] == "ann" and submission["decision"] == "accept"
    assert submission["comment"] == "heart border"
    change = submission["change"]
    proposal_voxels = (140 - 60) * (120 - 50)
    added, removed = 10 * 70, 10 * 70
    assert change["proposal"] == 1 and change["result"] == 2 and change["kept_proposal"] is False
    assert (change["voxels_added"], change["voxels_removed"]) == (added, removed)
    both = proposal_voxels - removed
    assert change["dice"] == pytest.approx(2 * both / (proposal_voxels + edited.sum()))


def test_a_kept_proposal_is_said_and_a_finding_without_one_keeps_nothing(project, scan, people):
    kept = _claim(project, people["ann"], "Cardiomegaly")
    task_submit(task_id=kept.pk, user=people["ann"], decision="accept")
    change = kept.finding.history.get(action="submitted").after["change"]
    assert change["kept_proposal"] is True and change["dice"] == 1.0 and change["voxels_added"] == 0

    drawn = finding_create(
        project=project, user=people["ann"], study=scan.study, scan=scan, text="A nodule.", code="Lung Lesion"
    )
    mask = np.zeros((WIDTH, HEIGHT), bool)
    mask[10:20, 10:20] = True
    annotation_save(task_id=drawn.pk, user=people["ann"], base_version=0, kind="mask", mask=mask)
    task_submit(task_id=drawn.pk, user=people["ann"], decision="accept", comment="missed by the labeler")
    change = Finding.objects.get(pk=drawn.finding_id).history.get(action="submitted").after["change"]
    assert change["proposal"] is None and change["kept_proposal"] is False and change["result"] == 1
    assert change["dice"] is None and change["result_voxels"] == 100


def test_qa_goes_to_another_radiologist_than_the_reviewer(project, scan, people, api_client):
    project.qa_sample_rate = 1.0  # every approved review goes to QA
    project.save()
    task = _claim(project, people["ann"], "Cardiomegaly")
    task_submit(task_id=task.pk, user=people["ann"], decision="accept", comment="as proposed")
    reviewed = task_next(project=project, user=people["rad"], stages=(Stage.REVIEW, Stage.QA))
    assert reviewed.pk == task.pk
    task_approve(task_id=task.pk, user=people["rad"])
    task.refresh_from_db()
    assert task.stage == Stage.QA and task.reviewed_by == people["rad"]

    rad, rad2 = api_client(people["rad"]), api_client(people["rad2"])
    assert rad.get(reverse("next-task", args=[project.slug]), {"stage": "review"}).status_code == 204
    refused = rad.post(reverse("task-claim", args=[task.pk]))
    assert refused.status_code == 400 and "another radiologist" in refused.json()["reviewer"]
    qa = rad2.get(reverse("next-task", args=[project.slug]), {"stage": "review"}).json()
    assert qa["task"]["id"] == task.pk and qa["task"]["stage"] == "qa" and qa["task"]["reviewed_by"] == "rad"
    assert qa["submission"]["comment"] == "as proposed" and qa["submission"]["change"]["kept_proposal"]
    assert rad2.post(reverse("task-approve", args=[task.pk]), {}, format="json").json()["stage"] == "accepted"


def test_with_one_radiologist_the_reviewer_does_the_qa(project, scan, people):
    project.qa_sample_rate = 1.0
    project.save()
    people["rad2"].memberships.all().delete()
    task = _claim(project, people["ann"], "Cardiomegaly")
    task_submit(task_id=task.pk, user=people["ann"], decision="accept")
    task_approve(
        task_id=task_next(project=project, user=people["rad"], stages=("review", "qa")).pk, user=people["rad"]
    )
    qa = task_next(project=project, user=people["rad"], stages=(Stage.REVIEW, Stage.QA))
    assert qa.pk == task.pk and qa.stage == Stage.QA
    task_approve(task_id=qa.pk, user=people["rad"])
    qa.refresh_from_db()
    assert qa.stage == Stage.ACCEPTED
