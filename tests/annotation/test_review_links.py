"""Links to one case of the review screen (README "Links to a case"): ``/review/<slug>/?task=<id>`` or
``?finding=<id>``. The page resolves the id through the annotation selectors and hands the screen the task
to open (``data-link-task``) or a message (``data-link-error``); bad, unknown, invisible and other projects'
ids all get the same message, so a link tells nothing about cases the caller cannot see. The screen opens a
case of another stage read-only: the task's case is readable by every reviewer, its claim is not."""

import re

import numpy as np
import pytest
from django.test import Client

from annotation.models import Finding, ReviewTask
from annotation.services import annotation_save, task_approve, task_claim, task_submit
from core.models import Role
from core.services import membership_set
from tests.annotation.factories import review_case

pytestmark = pytest.mark.django_db

LINK = re.compile(r'data-link-(task|reading|error)="([^"]*)"')


@pytest.fixture
def people(make_members, project, other_project):
    out = make_members(
        project, ann=Role.ANNOTATOR, ann2=Role.ANNOTATOR, rad=Role.RADIOLOGIST, res=Role.RESEARCHER
    )
    membership_set(project=other_project, user=out["ann"], role=Role.ANNOTATOR)
    return out


@pytest.fixture
def tasks(project, tmp_path):
    """Two annotate tasks of one CT: a nodule and an effusion."""
    scan = review_case(
        project,
        tmp_path,
        findings="There is a 14 mm nodule in the right upper lobe. Small left pleural effusion.",
    )
    found = list(ReviewTask.objects.filter(project=project).select_related("finding").order_by("id"))
    assert len(found) == 2
    found[0].scan = scan
    return found


def link_of(user, path: str) -> dict[str, str]:
    client = Client()
    client.force_login(user)
    page = client.get(path)
    assert page.status_code == 200, page.status_code
    html = page.content.decode()
    assert "Traceback" not in html
    return dict(LINK.findall(html))


def accept(task, annotator, radiologist, scan) -> None:
    """The annotator grounds the finding and accepts it; the radiologist approves it (no QA sampling)."""
    task_claim(task_id=task.pk, user=annotator, stages=("annotate",))
    mask = np.zeros(tuple(scan.shape), bool)
    mask[5:9, 5:9, 1:3] = True
    annotation_save(task_id=task.pk, user=annotator, base_version=0, kind="mask", mask=mask)
    task_submit(task_id=task.pk, user=annotator, decision="accept")
    task_claim(task_id=task.pk, user=radiologist, stages=("review", "qa"))
    task_approve(task_id=task.pk, user=radiologist)


def test_a_task_link_and_a_finding_link_name_the_task_to_open(project, people, tasks):
    first, second = tasks
    assert link_of(people["ann"], f"/review/{project.slug}/?task={first.pk}") == {"task": str(first.pk)}
    # ?finding= opens that finding's task; the radiologist gets it too (the screen opens it read-only)
    assert link_of(people["rad"], f"/review/{project.slug}/?finding={second.finding_id}") == {
        "task": str(second.pk)
    }
    # without a link the screen starts as before: nothing to open
    assert link_of(people["ann"], f"/review/{project.slug}/") == {}


@pytest.mark.parametrize("raw", ["abc", "-3", "0", "1.5", "99999999999", "", "٣", "%22%3E%3Cb%3E"])
def test_a_bad_id_gets_a_message_naming_the_parameter(project, people, tasks, raw):
    link = link_of(people["ann"], f"/review/{project.slug}/?task={raw}")
    assert set(link) == {"error"} and "is not a task number: no case opened." in link["error"], link
    link = link_of(people["ann"], f"/review/{project.slug}/?finding={raw}")
    assert set(link) == {"error"} and "is not a finding number" in link["error"], link


def test_unknown_and_other_projects_ids_get_the_same_message(project, other_project, people, tasks, tmp_path):
    # A task of another project the annotator is a member of: not a case of this screen
    theirs = review_case(other_project, tmp_path / "other", findings="Small left pleural effusion.")
    other = ReviewTask.objects.get(finding__scan=theirs)
    missing = max(ReviewTask.objects.values_list("pk", flat=True)) + 100
    said = {
        link_of(people["ann"], f"/review/{project.slug}/?task={n}")["error"].replace(str(n), "N")
        for n in (other.pk, missing)
    }
    assert said == {"No task N in this project that you can open: no case opened."}
    finding = Finding.objects.get(scan=theirs)
    gone = max(Finding.objects.values_list("pk", flat=True)) + 100
    said = {
        link_of(people["ann"], f"/review/{project.slug}/?finding={n}")["error"].replace(str(n), "N")
        for n in (finding.pk, gone)
    }
    assert said == {"No finding N in this project that you can open: no case opened."}
    # Researchers have no review screen at all
    client = Client()
    client.force_login(people["res"])
    assert client.get(f"/review/{project.slug}/?task={tasks[0].pk}").status_code == 404


def test_someone_elses_task_opens_read_only_with_the_reason(project, people, tasks, api_client):
    first, _ = tasks
    task_claim(task_id=first.pk, user=people["ann2"], stages=("annotate",))
    # The page names the task; the screen's claim is refused with the reason, and the case is readable.
    assert link_of(people["ann"], f"/review/{project.slug}/?task={first.pk}") == {"task": str(first.pk)}
    ann = api_client(people["ann"])
    refused = ann.post(f"/api/tasks/{first.pk}/claim/")
    assert refused.status_code == 409 and "another reviewer holds this task" in refused.json()["detail"]
    case = ann.get(f"/api/tasks/{first.pk}/")
    assert case.status_code == 200 and case.json()["task"]["assignee"] == "ann2"


def test_an_accepted_finding_opens_read_only_for_an_annotator(project, people, tasks, api_client):
    first, _ = tasks
    accept(first, people["ann2"], people["rad"], first.scan)
    first.refresh_from_db()
    assert first.stage == "accepted"
    link = link_of(people["ann"], f"/review/{project.slug}/?finding={first.finding_id}")
    assert link == {"task": str(first.pk)}
    ann = api_client(people["ann"])
    # what the screen does: the case is read (the accepted result), no claim is tried (its stage is not
    # the annotator's); a claim would be refused with a message naming the stage
    case = ann.get(f"/api/tasks/{first.pk}/")
    assert case.status_code == 200
    body = case.json()
    assert body["finding"]["status"] == "accepted" and body["task"]["stage"] == "accepted"
    assert body["versions"][-1]["version"] == body["finding"]["current_version"] == 1
    refused = ann.post(f"/api/tasks/{first.pk}/claim/")
    assert refused.status_code == 400 and refused.json()["field"] == "stage"


def test_the_login_page_keeps_the_link(project, people, tasks):
    path = f"/review/{project.slug}/?task={tasks[0].pk}"
    response = Client().get(path)
    assert response.status_code == 302
    client = Client()
    login = client.post(response["Location"], {"username": "ann", "password": "pw-" + "x" * 12}, follow=False)
    assert login.status_code == 302 and login["Location"] == path


def test_a_finding_with_its_readers_opens_the_readers_own_reading_only(project, tmp_path, people):
    from annotation.readers import reading_next

    project.readers_per_finding = 2
    project.save()
    review_case(project, tmp_path, findings="There is a 14 mm nodule in the right upper lobe.")
    task = ReviewTask.objects.get(project=project)
    assert task.stage == "read"
    reading = reading_next(project=project, user=people["ann"])
    assert reading is not None and reading.finding_id == task.finding_id
    assert link_of(people["ann"], f"/review/{project.slug}/?task={task.pk}") == {
        "task": str(task.pk),
        "reading": str(reading.pk),
    }
    # Another reviewer: told it is being read (blinded), nothing opened
    link = link_of(people["ann2"], f"/review/{project.slug}/?finding={task.finding_id}")
    assert set(link) == {"error"} and "is being read" in link["error"]
