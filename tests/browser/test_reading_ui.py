"""The review screen with several readers per finding (README "Several readers per finding"), in a real
browser against a live server: two annotators each take a blinded reading of the same finding, paint and
accept (their own versions, never another's on screen), the last reading makes the consensus and sends the
task to review, and the radiologist sees the readers' agreement beside the versions. A consensus the
radiologist returns comes back to an annotator as a task once no reading waits for them. Screenshots go to
test-artifacts/."""

import numpy as np
import pytest

from annotation.models import Finding, Reading
from core.models import Role
from core.services import membership_set
from tests.annotation.factories import review_case
from tests.browser import ui

ARTIFACTS = ui.ARTIFACTS
REPORT = "There is a 14 mm nodule in the right upper lobe. Small left pleural effusion."
HIDDEN = "your own reading: other readers' work is hidden"

browser = ui.browser  # the Chromium fixture of the review screen's tests


@pytest.fixture
def two_readers(project, tmp_path):
    """Two readers per finding (majority vote); a small CT (16 × 64 × 64) with two present findings."""
    project.readers_per_finding, project.consensus_method = 2, "majority"
    project.save()
    review_case(project, tmp_path, shape=(16, 64, 64), findings=REPORT)
    findings = list(Finding.objects.filter(project=project).order_by("id"))
    assert len(findings) >= 2
    for f in findings:
        assert f.task.stage == "read" and f.readings.count() == 2
    return findings


@pytest.fixture
def readers(make_user, project):
    out = {}
    for name, role in (("ann1", Role.ANNOTATOR), ("ann2", Role.ANNOTATOR), ("rad", Role.RADIOLOGIST)):
        out[name] = make_user(name)
        membership_set(project=project, user=out[name], role=role)
    return out


def paint_stroke(page, start: float, rise: float) -> None:
    """Paint a stroke on the axial tile (the left one), from ``start`` of the viewer's width."""
    page.keyboard.press("p")
    assert page.get_attribute("#review", "data-mode") == "paint"
    box = page.locator("#viewer").bounding_box()
    x0, y = box["x"] + box["width"] * start, box["y"] + box["height"] * 0.5
    page.mouse.move(x0, y)
    page.mouse.down()
    for step in range(1, 16):
        page.mouse.move(x0 + step * 4, y + step * rise)
    page.mouse.up()
    page.keyboard.press("Escape")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_two_readers_read_blinded_and_the_radiologist_sees_their_agreement(
    browser, live_server, project, two_readers, readers
):
    ARTIFACTS.mkdir(exist_ok=True)
    other = two_readers[1]

    # Given the first reader: Next case takes a reading, and the page says whose work is shown.
    ann1 = ui.open_review(browser, live_server, "ann1", project.slug)
    assert "take your next reading" in ui.message(ann1)
    ui.next_case(ann1)
    first = Reading.objects.get(reader=readers["ann1"])
    finding = first.finding
    assert ann1.get_attribute("#review", "data-reading") == str(first.pk)
    assert ann1.get_attribute("#review", "data-finding") == str(finding.pk)
    assert ann1.is_visible("#reading") and not ann1.is_visible("#returned")
    assert f"Reading {first.index} of 2 — {HIDDEN}" in ann1.inner_text("#reading")
    assert ann1.inner_text("#case-title").startswith(f"Reading {first.index} of 2 · finding {finding.pk}")
    assert ann1.inner_text("#versions") == "" and not ann1.is_visible("#agreement")

    # When they paint and save: the version is theirs, saved through the reading.
    paint_stroke(ann1, 0.12, 2)
    ann1.keyboard.press("s")
    ui.wait_message(ann1, "ok", "Saved version")
    first.refresh_from_db()
    mine = first.annotation
    assert mine is not None and mine.author.username == "ann1" and mine.kind == "mask" and mine.voxels > 0
    assert f"v{mine.version} mask by ann1" in ann1.inner_text("#versions li.current")
    ann1.screenshot(path=str(ARTIFACTS / "reading-reader-painted.png"))

    # The other finding is with its readers: listed as being read, a click claims nothing.
    item = f"#findings li[data-finding='{other.pk}']"
    assert "being read" in ann1.inner_text(item) and "being-read" in ann1.get_attribute(item, "class")
    ann1.click(item)
    ui.wait_message(ann1, "info", "is being read")
    assert ann1.get_attribute("#review", "data-finding") == str(finding.pk)
    other.task.refresh_from_db()
    assert other.task.stage == "read" and other.task.assignee is None
    assert not other.readings.filter(reader__isnull=False).exists()

    # Accepting submits the reading; the finding waits for its other reader.
    ann1.keyboard.press("a")
    ui.wait_message(ann1, "ok", "Submitted (accept)")
    assert "waits for its other readers" in ui.message(ann1)
    first.refresh_from_db()
    finding.task.refresh_from_db()
    assert first.status == "submitted" and first.decision == "accept" and first.annotation_id == mine.pk
    assert finding.task.stage == "read"

    # The second reader gets the other reading of the same finding, without the first reader's mask.
    ann2 = ui.open_review(browser, live_server, "ann2", project.slug)
    ui.next_case(ann2)
    second = Reading.objects.get(reader=readers["ann2"])
    assert second.finding_id == finding.pk and second.index != first.index
    assert ann2.get_attribute("#review", "data-reading") == str(second.pk)
    assert f"Reading {second.index} of 2 — {HIDDEN}" in ann2.inner_text("#reading")
    assert "ann1" not in ann2.inner_text("#versions") and ui.voxels(ann2) == 0
    paint_stroke(ann2, 0.14, 1)
    ann2.keyboard.press("s")
    ui.wait_message(ann2, "ok", "Saved version")
    ann2.screenshot(path=str(ARTIFACTS / "reading-second-reader.png"))
    ann2.keyboard.press("a")
    ui.wait_message(ann2, "ok", "Submitted (accept)")
    assert "last reading" in ui.message(ann2)

    # Then each reading has its own version by its reader, and the consensus is in review.
    finding.refresh_from_db()
    finding.task.refresh_from_db()
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.annotation.author.username == "ann1" and second.annotation.author.username == "ann2"
    assert first.annotation_id != second.annotation_id and second.annotation.voxels > 0
    consensus = finding.annotations.get(version=finding.current_version)
    assert consensus.author is None and consensus.comment == "consensus of 2 readers (majority)"
    assert consensus.version > max(first.annotation.version, second.annotation.version)
    assert finding.task.stage == "review" and finding.task.decision == "accept"
    agreement = finding.agreement
    assert agreement["consensus_version"] == consensus.version
    assert {r["username"] for r in agreement["readers"]} == {"ann1", "ann2"}

    # When the radiologist opens the review case, the agreement panel sits beside the versions.
    rad = ui.open_review(browser, live_server, "rad", project.slug)
    ui.next_case(rad)
    assert rad.get_attribute("#review", "data-finding") == str(finding.pk)
    assert rad.get_attribute("#review", "data-reading") is None and not rad.is_visible("#reading")
    assert rad.is_visible("#agreement")
    panel = rad.inner_text("#agreement")
    assert "Readers' agreement" in panel and "2 readers" in panel and "decision accept" in panel
    assert f"mean Dice {agreement['mean_dice']:.2f}" in panel
    assert f"mean IoU {agreement['mean_iou']:.2f}" in panel
    assert f"Consensus: v{consensus.version} (majority, {consensus.voxels} voxels)" in panel
    for r in agreement["readers"]:
        row = rad.inner_text(f"#agreement tr[data-reader='{r['username']}']")
        assert r["decision"] in row and f"v{r['version']}" in row and f"{r['dice']:.2f}" in row, row
    current_version = rad.inner_text("#versions li.current")
    assert "consensus of 2 readers" in current_version and f"v{consensus.version} mask" in current_version
    versions = rad.inner_text("#versions")
    assert "reader 1's reading" in versions and "reader 2's reading" in versions
    assert "Showing the consensus" in rad.inner_text("#showing")
    assert ui.voxels(rad) == consensus.voxels
    assert "being read" in rad.inner_text(f"#findings li[data-finding='{other.pk}']")
    rad.screenshot(path=str(ARTIFACTS / "reading-radiologist-agreement-page.png"), full_page=True)
    rad.locator("#agreement").screenshot(path=str(ARTIFACTS / "reading-radiologist-agreement.png"))
    assert ann1.errors == [] and ann2.errors == [] and rad.errors == []


def _read_everything(project, people) -> None:
    """Each reader takes every reading left for them, saves a small box mask and accepts."""
    from annotation.readers import reading_current, reading_next, reading_save, reading_submit

    for offset, user in enumerate(people):
        while (reading := reading_next(project=project, user=user)) is not None:
            shape = tuple(reading.finding.scan.shape)
            mask = np.zeros(shape, bool)
            mask[20 + offset : 30 + offset, 20:30, 6:9] = True
            current = reading_current(reading)
            reading_save(
                reading_id=reading.pk,
                user=user,
                base_version=current.version if current else 0,
                kind="mask",
                mask=mask,
            )
            reading_submit(reading_id=reading.pk, user=user, decision="accept")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_returned_consensus_comes_back_as_a_task_and_added_findings_are_read(
    browser, live_server, project, two_readers, readers
):
    from annotation.services import task_next, task_return

    finding = two_readers[0]
    _read_everything(project, [readers["ann1"], readers["ann2"]])
    task = task_next(project=project, user=readers["rad"], stages=("review", "qa"))
    assert task.finding_id == finding.pk
    task_return(task_id=task.pk, user=readers["rad"], comment="Include the whole nodule.")
    finding.refresh_from_db()
    consensus = finding.current_version

    # Given no reading waits for ann1: Next case falls back to the returned consensus, as a task.
    ann1 = ui.open_review(browser, live_server, "ann1", project.slug)
    ui.next_case(ann1)
    assert ann1.get_attribute("#review", "data-task") == str(task.pk)
    assert ann1.get_attribute("#review", "data-reading") is None and not ann1.is_visible("#reading")
    assert ann1.is_visible("#returned") and "Include the whole nodule." in ann1.inner_text("#returned")
    assert ann1.inner_text("#case-title").startswith(f"Task {task.pk}")
    assert ann1.is_visible("#agreement") and "ann2" in ann1.inner_text("#agreement")
    assert ui.voxels(ann1) == finding.annotations.get(version=consensus).voxels

    # When they correct it, the save and the decision go to the task, on top of the consensus.
    paint_stroke(ann1, 0.12, 2)
    ann1.keyboard.press("s")
    ui.wait_message(ann1, "ok", f"Saved version {consensus + 1}")
    fix = finding.annotations.get(version=consensus + 1)
    assert fix.author.username == "ann1" and fix.parent.version == consensus
    ann1.keyboard.press("a")
    ui.wait_message(ann1, "ok", "Submitted (accept)")
    task.refresh_from_db()
    assert task.stage == "review" and task.annotated_by.username == "ann1"

    # A finding they add by hand waits for its readers, and they hold reading 1 of it.
    ann1.keyboard.press("m")
    ann1.fill("#missing-text", "a second small nodule")
    ann1.press("#missing-text", "Enter")
    ann1.wait_for_function(
        "() => document.querySelector('#case-title').innerText.startsWith('Reading 1 of 2')"
    )
    ann1.wait_for_selector("#review[data-state=ready]:not([data-busy])")
    made = Finding.objects.get(project=project, source="manual")
    reading = made.readings.get(index=1)
    assert made.task.stage == "read" and reading.reader.username == "ann1"
    assert ann1.get_attribute("#review", "data-reading") == str(reading.pk)
    assert HIDDEN in ann1.inner_text("#reading")
    assert ann1.errors == []


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_reading_whose_lease_ran_out_is_taken_again(browser, live_server, project, two_readers, readers):
    from datetime import timedelta

    from django.utils import timezone

    ann1 = ui.open_review(browser, live_server, "ann1", project.slug)
    ui.next_case(ann1)
    reading = Reading.objects.get(reader=readers["ann1"])
    Reading.objects.filter(pk=reading.pk).update(lease_expires_at=timezone.now() - timedelta(minutes=1))

    # The save says the lease expired; Take it again renews it (nobody took it over) and the save goes in.
    paint_stroke(ann1, 0.12, 2)
    ann1.keyboard.press("s")
    ui.wait_message(ann1, "error", "lease")
    assert "expired" in ui.message(ann1)
    ann1.click("#messages button")  # Take it again
    ui.wait_message(ann1, "ok", f"You hold reading {reading.index} of 2 again")
    ann1.keyboard.press("s")
    ui.wait_message(ann1, "ok", "Saved version 1")
    reading.refresh_from_db()
    assert reading.annotation.author.username == "ann1" and reading.lease_expires_at > timezone.now()
    assert ann1.errors == []
