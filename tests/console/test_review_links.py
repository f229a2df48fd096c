"""The console links each case into the review screen (README "Links to a case"): the tasks page every
review task (``?task=<id>``), the queue page its open tasks, the overview the accepted findings
(``?finding=<id>``, which the screen opens read-only). The links name only the project's own cases."""

import numpy as np
import pytest
from django.urls import reverse

from annotation.models import ReviewTask
from annotation.services import (
    annotation_save,
    findings_from_proposals,
    task_approve,
    task_claim,
    task_submit,
)
from labeling.services import label_run_execute, label_run_get_or_create
from studies.models import Report
from tests.annotation.factories import review_case

pytestmark = pytest.mark.django_db


@pytest.fixture
def tasks(ct_case, project):
    Report.objects.filter(project=project).update(
        findings="There is a 14 mm nodule in the right upper lobe. Small left pleural effusion."
    )
    label_run_execute(run=label_run_get_or_create(project=project, labeler="rules"))
    assert findings_from_proposals(project=project) == 2
    return list(ReviewTask.objects.filter(project=project).select_related("finding").order_by("id"))


def test_the_tasks_and_queue_pages_link_every_task_to_its_case(people, browser_for, project, tasks):
    client = browser_for(people["manager"])
    for name in ("console-tasks", "console-queue"):
        html = client.get(reverse(name, args=[project.slug])).content.decode()
        for task in tasks:
            assert f'<a href="/review/{project.slug}/?task={task.pk}">Task {task.pk}</a>' in html, name


def test_the_overview_links_accepted_findings_to_their_read_only_view(
    people, browser_for, project, other_project, tasks, ct_case, tmp_path, make_user
):
    from core.models import Role
    from core.services import membership_set

    rad = make_user("rad")
    membership_set(project=project, user=rad, role=Role.RADIOLOGIST)
    first = tasks[0]
    task_claim(task_id=first.pk, user=people["annotator"], stages=("annotate",))
    mask = np.zeros(tuple(ct_case.shape), bool)
    mask[10:20, 10:20, 2:5] = True  # (X, Y, Z)
    annotation_save(task_id=first.pk, user=people["annotator"], base_version=0, kind="mask", mask=mask)
    task_submit(task_id=first.pk, user=people["annotator"], decision="accept")
    task_claim(task_id=first.pk, user=rad, stages=("review", "qa"))
    task_approve(task_id=first.pk, user=rad)
    # another project's accepted work is not listed
    review_case(other_project, tmp_path / "other", findings="Small left pleural effusion.")

    overview = reverse("console-project", args=[project.slug])
    html = browser_for(people["manager"]).get(overview).content.decode()
    link = f'<a href="/review/{project.slug}/?finding={first.finding_id}">Finding {first.finding_id}</a>'
    assert link in html
    assert f"?finding={tasks[1].finding_id}" not in html  # still open
    assert html.count("?finding=") == 1
