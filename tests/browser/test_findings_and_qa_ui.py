"""One finding per entity and what QA sees, in a real browser (Chromium through Playwright) against a live
server: the nodule named in Findings and in Impression is one finding whose two spans are marked in the
report and whose list entry names its code in words, its place and size; the radiologist sees the
annotator's decision and comment and that there was no proposal to keep; QA goes to the other radiologist,
who sees who reviewed it. Screenshots: test-artifacts/ and /work/notes/annclean-*.png."""

from pathlib import Path

import numpy as np
import pytest

from annotation.models import Finding, Stage
from annotation.services import annotation_save, task_claim
from core.models import Role
from tests.annotation.factories import review_case
from tests.browser import ui
from tests.browser.ui import ARTIFACTS, next_case, open_review, wait_message

browser = ui.browser  # the Chromium fixture
NOTES = Path("/work/notes")
FINDINGS = "There is a 14 mm nodule in the right upper lobe. Small left pleural effusion."
IMPRESSION = "1. Right upper lobe nodule measuring 14 mm, suspicious. 2. Small left pleural effusion."


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    if NOTES.is_dir():
        page.screenshot(path=str(NOTES / f"annclean-{name}.png"), full_page=True)


@pytest.fixture
def people(make_members, project):
    return make_members(project, ann=Role.ANNOTATOR, rad=Role.RADIOLOGIST, rad2=Role.RADIOLOGIST)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_one_finding_per_nodule_and_qa_by_another_radiologist(
    browser, live_server, project, tmp_path, people
):
    scan = review_case(project, tmp_path, shape=(16, 64, 64), findings=FINDINGS, impression=IMPRESSION)
    project.qa_sample_rate = 1.0  # every approved review goes to QA
    project.save()
    nodule = Finding.objects.get(project=project, code="2d")
    assert Finding.objects.filter(project=project).count() == 2 and nodule.spans.count() == 2

    # Given the annotator holding the nodule's task, with a mask drawn (no proposal: drawn from scratch).
    task_claim(task_id=nodule.task.pk, user=people["ann"], stages=(Stage.ANNOTATE,))
    mask = np.zeros(tuple(scan.shape), bool)
    mask[20:30, 20:30, 5:9] = True
    annotation_save(task_id=nodule.task.pk, user=people["ann"], base_version=0, kind="mask", mask=mask)

    # When they open it: both mentions are marked in the report, and the list names the code in words.
    ann = open_review(browser, live_server, "ann", project.slug)
    next_case(ann)
    assert ann.get_attribute("#review", "data-finding") == str(nodule.pk)
    marks = ann.locator(f"#report mark[data-finding='{nodule.pk}']").all_inner_texts()
    assert marks == [
        "There is a 14 mm nodule in the right upper lobe.",
        "Right upper lobe nodule measuring 14 mm, suspicious.",
    ]
    entry = ann.inner_text(f"#findings li[data-finding='{nodule.pk}']")
    assert "nodule / mass (2d)" in entry and "right upper lobe" in entry and "14 mm" in entry
    assert "2 mentions" in entry and "2-D" not in entry
    effusion = ann.inner_text("#findings li:not(.current)")
    assert "pleural effusion / thickening (2e)" in effusion and "left" in effusion
    _shot(ann, "findings")
    ann.fill("#comment", "Nodule outlined on slices 5-8.")
    ann.click("button[data-action=accept]")
    wait_message(ann, "ok", "Submitted (accept)")

    # Then the radiologist sees the decision, the comment, and that there was no proposal to keep.
    rad = open_review(browser, live_server, "rad", project.slug)
    next_case(rad)
    assert rad.get_attribute("#review", "data-task") == str(nodule.task.pk)
    submission = rad.inner_text("#submission")
    assert "ann decided: accept" in submission and "Nodule outlined on slices 5-8." in submission
    assert "No proposal" in submission and "Kept the proposal" not in submission
    assert "proposal" not in rad.inner_text("#versions")  # v1 is the annotator's, not a proposal
    rad.keyboard.press("v")
    wait_message(rad, "info", "had no proposal")
    rad.click("button[data-action=approve]")
    wait_message(rad, "ok", "Approved")

    # And QA is not theirs: their queue is empty while the other radiologist gets it, saying who reviewed.
    rad.keyboard.press("n")
    rad.wait_for_selector("#review[data-state=empty]")
    rad2 = open_review(browser, live_server, "rad2", project.slug)
    next_case(rad2)
    assert rad2.get_attribute("#review", "data-task") == str(nodule.task.pk)
    qa = rad2.inner_text("#submission")
    assert "QA · reviewed by rad" in qa and "Nodule outlined on slices 5-8." in qa
    _shot(rad2, "qa")
    rad2.click("button[data-action=approve]")
    wait_message(rad2, "ok", "Approved")
    nodule.refresh_from_db()
    assert nodule.status == "accepted" and nodule.task.reviewed_by == people["rad"]
    assert ann.errors == [] and rad.errors == [] and rad2.errors == []
