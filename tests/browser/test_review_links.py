"""Links to one case of the review screen in a real browser (Chromium through Playwright) against a live
server (README "Links to a case"): an annotator's link opens and claims the task and the address keeps
naming the case as they move on and reload; a radiologist's link opens a review task; a bad id, another
project's id and a task someone else holds each get a message (the held one and an accepted finding open
read-only); a manager follows a task's link from the console's tasks page into the screen. Screenshots:
test-artifacts/review-deeplink-*.png."""

import re

import numpy as np
import pytest

from annotation.models import ReviewTask
from annotation.services import (
    annotation_save,
    task_claim,
    task_submit,
)
from core.models import Role
from tests.annotation.factories import review_case
from tests.browser import ui
from tests.browser.ui import ARTIFACTS, PASSWORD, TIMEOUT_MS, message, next_case, wait_message

browser = ui.browser  # the Chromium fixture


@pytest.fixture
def tasks(project, tmp_path):
    """A small CT with a nodule and an effusion, as two annotate tasks (nodule first)."""
    review_case(
        project,
        tmp_path,
        shape=(16, 64, 64),
        findings="There is a 14 mm nodule in the right upper lobe. Small left pleural effusion.",
    )
    found = list(ReviewTask.objects.filter(project=project).select_related("finding").order_by("id"))
    assert len(found) == 2
    return found


@pytest.fixture
def people(make_members, project):
    return make_members(
        project, ann=Role.ANNOTATOR, ann2=Role.ANNOTATOR, rad=Role.RADIOLOGIST, boss=Role.MANAGER
    )


def log_in(browser, live_server, username: str, path: str):
    """A fresh browser session that asks for ``path``: the login page, then ``path`` itself."""
    page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{live_server.url}{path}")
    assert "/review/login/" in page.url
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(".*" + re.escape(path.split("?")[0]) + ".*"))
    page.errors = errors
    return page


def settled(page) -> None:
    """The link is handled: a case is on the screen, or a message says why none is."""
    page.wait_for_selector("#review:not([data-busy]):is([data-state=ready], [data-message=error])")
    page.wait_for_timeout(300)  # a frame of the viewer


def address(page) -> str:
    return page.evaluate("() => location.pathname + location.search")


def submit_for_review(task, annotator, scan_shape) -> None:
    task_claim(task_id=task.pk, user=annotator, stages=("annotate",))
    mask = np.zeros(tuple(scan_shape), bool)
    mask[20:30, 20:30, 6:9] = True  # (X, Y, Z)
    annotation_save(task_id=task.pk, user=annotator, base_version=0, kind="mask", mask=mask)
    task_submit(task_id=task.pk, user=annotator, decision="accept")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_links_open_their_case_for_annotators_and_radiologists(browser, live_server, project, tasks, people):
    ARTIFACTS.mkdir(exist_ok=True)
    nodule, effusion = tasks
    review = f"/review/{project.slug}/"

    # Given a link to the effusion (not the queue's first case): after the login the annotator holds it.
    ann = log_in(browser, live_server, "ann", f"{review}?task={effusion.pk}")
    settled(ann)
    assert ann.get_attribute("#review", "data-task") == str(effusion.pk)
    assert ann.get_attribute("#review", "data-readonly") is None
    wait_message(ann, "ok", f"Opened task {effusion.pk}")
    assert address(ann) == f"{review}?task={effusion.pk}"
    effusion.refresh_from_db()
    assert effusion.assignee.username == "ann"
    ann.screenshot(path=str(ARTIFACTS / "review-deeplink-annotator.png"))

    # When they move on (next case), the address names the case on the screen; a reload opens it again.
    ann.click(f"#findings li[data-finding='{nodule.finding_id}']")
    ann.wait_for_selector(f"#review[data-task='{nodule.pk}'][data-state=ready]:not([data-busy])")
    assert address(ann) == f"{review}?task={nodule.pk}"
    ann.reload()
    settled(ann)
    assert ann.get_attribute("#review", "data-task") == str(nodule.pk)
    assert ann.get_attribute("#review", "data-readonly") is None

    # A radiologist's link to a task in review (the annotator's effusion, drawn and accepted meanwhile):
    # claimed, Approve works.
    submit_for_review(effusion, people["ann"], tasks[0].finding.scan.shape)
    rad = log_in(browser, live_server, "rad", f"{review}?finding={effusion.finding_id}")
    settled(rad)
    assert rad.get_attribute("#review", "data-task") == str(effusion.pk)
    assert rad.get_attribute("#review", "data-readonly") is None
    assert address(rad) == f"{review}?task={effusion.pk}"  # the screen names cases by their task
    rad.screenshot(path=str(ARTIFACTS / "review-deeplink-radiologist.png"))
    rad.keyboard.press("a")
    wait_message(rad, "ok", "Approved")
    effusion.refresh_from_db()
    assert effusion.stage == "accepted"

    # The annotator's link to that accepted finding opens its result read-only (no claim, no 400).
    ann.goto(f"{live_server.url}{review}?finding={effusion.finding_id}")
    settled(ann)
    assert ann.get_attribute("#review", "data-task") == str(effusion.pk)
    assert ann.get_attribute("#review", "data-readonly") == "1"
    wait_message(ann, "info", f"Finding {effusion.finding_id} is accepted (task {effusion.pk} is closed)")
    assert "read-only" in message(ann)
    ann.screenshot(path=str(ARTIFACTS / "review-deeplink-accepted.png"))
    ann.keyboard.press("p")  # no drawing on a read-only case
    wait_message(ann, "error", "opened read-only")
    assert ann.get_attribute("#review", "data-mode") in (None, "view")
    assert ann.errors == [] and rad.errors == []


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_bad_ids_and_someone_elses_task_get_messages(
    browser, live_server, project, other_project, tasks, people, tmp_path
):
    ARTIFACTS.mkdir(exist_ok=True)
    nodule, effusion = tasks
    review = f"/review/{project.slug}/"
    task_claim(task_id=effusion.pk, user=people["ann2"], stages=("annotate",))

    # A bad id: a message naming the parameter, no case, the address no longer names one.
    ann = log_in(browser, live_server, "ann", f"{review}?task=12abc")
    settled(ann)
    wait_message(ann, "error", "The link's task “12abc” is not a task number: no case opened.")
    assert ann.get_attribute("#review", "data-task") is None
    assert address(ann) == review
    ann.screenshot(path=str(ARTIFACTS / "review-deeplink-bad-id.png"))
    # n still takes the queue's next case
    next_case(ann)
    assert ann.get_attribute("#review", "data-task") == str(nodule.pk)

    # Another project's task reads as one that does not exist.
    theirs = review_case(other_project, tmp_path / "other", findings="Small left pleural effusion.")
    other = ReviewTask.objects.get(finding__scan=theirs)
    ann.goto(f"{live_server.url}{review}?task={other.pk}")
    settled(ann)
    wait_message(ann, "error", f"No task {other.pk} in this project that you can open")

    # A task someone else holds: opened read-only, saying who holds it.
    ann.goto(f"{live_server.url}{review}?task={effusion.pk}")
    settled(ann)
    assert ann.get_attribute("#review", "data-task") == str(effusion.pk)
    assert ann.get_attribute("#review", "data-readonly") == "1"
    wait_message(ann, "info", f"Task {effusion.pk} cannot be yours now: another reviewer holds this task")
    assert "ann2 holds it. Opened read-only." in message(ann)
    assert (
        "read-only" in ann.inner_text("#case-title")
        or ann.evaluate(
            "() => getComputedStyle(document.querySelector('#case-title'), '::after').content"
        ).find("read-only")
        >= 0
    )
    ann.screenshot(path=str(ARTIFACTS / "review-deeplink-held.png"))
    effusion.refresh_from_db()
    assert effusion.assignee.username == "ann2"  # untouched
    assert ann.errors == []


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_manager_follows_a_task_link_from_the_console(browser, live_server, project, tasks, people):
    ARTIFACTS.mkdir(exist_ok=True)
    nodule, effusion = tasks
    boss = log_in(browser, live_server, "boss", f"/console/{project.slug}/tasks/")
    boss.wait_for_selector(f"tr[data-task='{effusion.pk}'] a")
    boss.screenshot(path=str(ARTIFACTS / "review-deeplink-console-tasks.png"), full_page=True)
    boss.click(f"tr[data-task='{effusion.pk}'] a")
    boss.wait_for_url(f"**/review/{project.slug}/?task={effusion.pk}")
    settled(boss)
    assert boss.get_attribute("#review", "data-task") == str(effusion.pk)
    assert boss.get_attribute("#review", "data-readonly") is None
    wait_message(boss, "ok", f"Opened task {effusion.pk}")
    boss.screenshot(path=str(ARTIFACTS / "review-deeplink-from-console.png"))
    # Back returns to the console page the link was on.
    boss.go_back()
    boss.wait_for_url(f"**/console/{project.slug}/tasks/")
    assert boss.errors == []
