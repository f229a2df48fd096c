"""The review screen in a real browser (Chromium through Playwright) against a live server: an annotator
paints and saves a mask and accepts, a radiologist returns it with a comment, the annotator sees the
comment and accepts again, the radiologist approves. Screenshots go to test-artifacts/."""

import pytest

from annotation.models import Finding
from core.models import Role
from core.services import membership_set
from tests.annotation.factories import radiograph_case, review_case
from tests.browser import ui
from tests.browser.ui import (
    ARTIFACTS,
    at,
    drag,
    image_rect,
    message,
    next_case,
    open_finding,
    open_review,
    voxels,
    wait_message,
    wait_voxels,
)

browser = ui.browser  # the Chromium fixture


@pytest.fixture
def case(project, tmp_path):
    """A small CT (16 × 64 × 64 voxels) with a report of one present finding, as an annotate task."""
    review_case(
        project,
        tmp_path,
        shape=(16, 64, 64),
        findings="No consolidation. There is a 14 mm nodule in the right upper lobe.",
    )
    return Finding.objects.get(project=project)


@pytest.fixture
def people(make_members, project):
    return make_members(project, ann=Role.ANNOTATOR, rad=Role.RADIOLOGIST)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_annotate_return_and_approve_in_the_browser(browser, live_server, project, case, people):
    ARTIFACTS.mkdir(exist_ok=True)
    finding = case
    base = finding.current_version

    # Given an annotator on the review screen: the next case shows the report, the span and the scan.
    ann = open_review(browser, live_server, "ann", project.slug)
    next_case(ann)
    assert ann.inner_text("#report mark.current") == finding.text
    assert finding.text in ann.inner_text("#findings li.current")
    assert not ann.is_visible("button[data-action=approve]")
    ann.click("button[data-window=mediastinum]")

    # When they paint a stroke on the axial tile and save.
    ann.keyboard.press("p")
    assert ann.get_attribute("#review", "data-mode") == "paint"
    box = ann.locator("#viewer").bounding_box()
    x0, y = box["x"] + box["width"] * 0.12, box["y"] + box["height"] * 0.5
    ann.mouse.move(x0, y)
    ann.mouse.down()
    for step in range(1, 16):
        ann.mouse.move(x0 + step * 4, y + step * 2)
    ann.mouse.up()
    ann.screenshot(path=str(ARTIFACTS / "review-annotator-painted.png"))
    ann.keyboard.press("s")
    wait_message(ann, "ok", f"Saved version {base + 1}")

    # Then a new version with voxels exists; accepting sends the task to review.
    finding.refresh_from_db()
    saved = finding.annotations.get(version=base + 1)
    assert finding.current_version == base + 1 and saved.kind == "mask" and saved.voxels > 0
    assert saved.author.username == "ann"
    ann.keyboard.press("a")
    wait_message(ann, "ok", "Submitted (accept)")
    finding.task.refresh_from_db()
    assert finding.task.stage == "review"

    # When the radiologist opens it, the saved mask is on the scan; they return it with a comment.
    rad = open_review(browser, live_server, "rad", project.slug)
    next_case(rad)
    assert rad.inner_text("#report mark.current") == finding.text
    assert rad.is_visible("button[data-action=return]") and not rad.is_visible("button[data-action=save]")
    assert "v1 mask by ann" in rad.inner_text("#versions li.current")
    assert rad.get_attribute("#review", "data-mask-voxels") == str(saved.voxels)
    rad.screenshot(path=str(ARTIFACTS / "review-radiologist.png"))
    rad.click("button[data-action=return]")
    wait_message(rad, "error", "needs a comment")  # never silent, never sent without one
    rad.fill("#comment", "Extend the mask to the whole nodule.")
    rad.click("button[data-action=return]")
    wait_message(rad, "ok", "Returned")
    finding.task.refresh_from_db()
    assert finding.task.stage == "annotate"

    # Then the annotator's next case shows the comment prominently; they accept again.
    next_case(ann)
    assert ann.is_visible("#returned")
    assert "Extend the mask to the whole nodule." in ann.inner_text("#returned")
    ann.screenshot(path=str(ARTIFACTS / "review-annotator-returned.png"))
    ann.click("button[data-action=accept]")
    wait_message(ann, "ok", "Submitted (accept)")

    # And the radiologist's approval accepts the finding.
    next_case(rad)
    rad.click("button[data-action=approve]")
    wait_message(rad, "ok", "Approved")
    finding.refresh_from_db()
    finding.task.refresh_from_db()
    assert finding.status == "accepted" and finding.task.stage == "accepted"

    # Both queues are empty now, and that is said.
    rad.keyboard.press("n")
    rad.wait_for_selector("#review[data-state=empty]")
    assert "Queue empty" in message(rad)
    assert ann.errors == [] and rad.errors == []


@pytest.mark.django_db(transaction=True)
def test_stale_save_says_who_saved_since(browser, live_server, project, case, people):
    """A save against an older version shows the 409 with both versions, not a silent failure."""
    import numpy as np

    from annotation.services import annotation_save, task_next

    ann = open_review(browser, live_server, "ann", project.slug)
    next_case(ann)
    task = task_next(project=project, user=people["ann"], stages=("annotate",))
    mask = np.zeros(tuple(case.scan.shape), bool)
    mask[20:30, 20:30, 5:8] = True
    theirs = annotation_save(
        task_id=task.pk, user=people["ann"], base_version=case.current_version, kind="mask", mask=mask
    )
    ann.keyboard.press("s")
    wait_message(ann, "error", f"Someone saved version {theirs.version}")
    assert f"you edited version {case.current_version}" in message(ann)
    ann.click("#messages button:has-text('Drop mine and reload')")
    wait_message(ann, "ok", f"version {theirs.version} is current")


# ---- radiographs, boxes, fill / undo / redo, the findings list, missing findings, leases --------------


@pytest.fixture
def radiograph(project, tmp_path):
    """A 200 × 160 radiograph with two findings (Cardiomegaly: version 1 from a gaze box proposal, a mask
    of [60, 50, 140, 120]; Pleural Effusion: no version) and a gaze recording."""
    radiograph_case(project, tmp_path)
    return list(Finding.objects.filter(project=project).order_by("id"))


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_box_on_a_radiograph_is_saved_in_image_pixels(browser, live_server, project, radiograph, people):
    ARTIFACTS.mkdir(exist_ok=True)
    heart = radiograph[0]
    ann = open_review(browser, live_server, "ann", project.slug)
    next_case(ann)

    # The radiograph is one 2D view: no CT windows; the preview gave way to the viewer; v1 is the
    # proposal's mask (80 × 70 pixels), and the proposal's box is listed with the finding.
    assert ann.get_attribute("#review", "data-finding") == str(heart.pk)
    assert "scan-2d" in ann.get_attribute("#review", "class")
    assert not ann.is_visible("button[data-window=lung]") and not ann.is_visible("#box-depth")
    assert "/api/scans/" in ann.get_attribute("#preview", "src") and not ann.is_visible("#preview")
    assert voxels(ann) == 80 * 70
    listed = ann.inner_text("#findings li.current")
    assert "proposal #" in listed and "gaze" in listed
    ann.keyboard.press("g")
    gaze_shown = (
        "() => (g => g.complete && g.naturalWidth === 200 && !g.hidden)(document.getElementById('gaze'))"
    )
    ann.wait_for_function(gaze_shown)
    assert ann.get_attribute("#review", "data-gaze") == "on"
    ann.screenshot(path=str(ARTIFACTS / "review-radiograph-gaze.png"))
    ann.keyboard.press("g")
    assert not ann.is_visible("#gaze")

    # When they drag a box from (10 %, 20 %) to (50 %, 40 %) of the image and save.
    ann.keyboard.press("b")
    assert ann.get_attribute("#review", "data-mode") == "box"
    rect = image_rect(ann)
    drag(ann, [at(rect, 0.1, 0.2), at(rect, 0.5, 0.4)])
    assert "s saves it" in message(ann)
    ann.screenshot(path=str(ARTIFACTS / "review-radiograph-box.png"))
    ann.keyboard.press("s")  # (if the autosave came first, this saves the same box again)
    wait_message(ann, "ok", "Saved version")

    # Then the new version is that box in pixels [xmin, ymin, xmax, ymax] of the 200 × 160 image.
    heart.refresh_from_db()
    saved = heart.annotations.get(version=heart.current_version)
    assert saved.version >= 2 and saved.kind == "box" and len(saved.box) == 4
    for got, want in zip(saved.box, [20, 32, 100, 64], strict=True):
        assert abs(got - want) <= 2, (saved.box, [20, 32, 100, 64])
    assert f"v{saved.version} box" in ann.inner_text("#versions li.current")
    assert ann.errors == []


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_box_on_ct_spans_the_slice_range(browser, live_server, project, case, people):
    ann = open_review(browser, live_server, "ann", project.slug)
    next_case(ann)
    assert "scan-3d" in ann.get_attribute("#review", "class") and ann.is_visible("button[data-window=lung]")
    ann.keyboard.press("b")
    ann.fill("#box-depth", "1")
    rect = image_rect(ann)  # the axial tile
    drag(ann, [at(rect, 0.3, 0.3), at(rect, 0.6, 0.5)])
    ann.screenshot(path=str(ARTIFACTS / "review-ct-box.png"))
    ann.keyboard.press("?")
    assert ann.is_visible("#help") and "redo" in ann.inner_text("#help")
    ann.screenshot(path=str(ARTIFACTS / "review-ct-keys.png"))
    ann.keyboard.press("Escape")
    assert not ann.is_visible("#help")
    ann.keyboard.press("s")
    wait_message(ann, "ok", "Saved version")
    saved = case.annotations.order_by("-version").first()
    assert saved.kind == "box" and len(saved.box) == 6
    x0, y0, z0, x1, y1, z1 = saved.box
    assert z1 - z0 == 3  # the current slice ± 1
    # 64 × 64 voxels on the tile: the drag covers 30 % by 20 % of it
    assert abs((x1 - x0) - 0.3 * 64) <= 2 and abs((y1 - y0) - 0.2 * 64) <= 2, saved.box


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_fill_undo_redo_holes_and_autosave(browser, live_server, project, radiograph, people):
    heart = radiograph[0]
    ann = open_review(browser, live_server, "ann", project.slug)
    next_case(ann)
    start = voxels(ann)
    assert start == 80 * 70

    # A filled outline (f): dragging round a rectangle of 40 × 50 pixels paints all of it.
    ann.keyboard.press("f")
    assert ann.get_attribute("#review", "data-mode") == "fill"
    rect = image_rect(ann)
    corners = [(0.05, 0.55), (0.25, 0.55), (0.25, 0.86), (0.05, 0.86), (0.05, 0.56)]
    drag(ann, [at(rect, *c) for c in corners])
    filled = wait_voxels(ann, f"n > {start}")
    assert 0.8 * 40 * 50 < filled - start < 1.3 * 40 * 50, filled - start

    # Undo (z) takes it back, redo (y) and shift+Z bring it again.
    ann.keyboard.press("z")
    assert wait_voxels(ann, f"n === {start}") == start
    ann.keyboard.press("y")
    assert wait_voxels(ann, f"n === {filled}") == filled
    ann.keyboard.press("z")
    wait_voxels(ann, f"n === {start}")
    ann.keyboard.press("Shift+Z")
    wait_voxels(ann, f"n === {filled}")

    # An erased stroke inside the filled rectangle makes a hole; holes (h) fills it again.
    ann.keyboard.press("e")
    drag(ann, [at(rect, 0.12, 0.7), at(rect, 0.18, 0.7)])
    holed = wait_voxels(ann, f"n < {filled}")
    ann.keyboard.press("h")
    assert wait_voxels(ann, f"n > {holed}") == filled
    ann.keyboard.press("Escape")

    # Then the drawing is saved by itself a few seconds after the last change.
    ann.wait_for_function("() => document.querySelector('#save-state').innerText.startsWith('saved v')")
    assert "Autosaved version" in message(ann)
    heart.refresh_from_db()
    saved = heart.annotations.get(version=heart.current_version)
    assert saved.version >= 2 and saved.kind == "mask" and saved.voxels == filled
    assert f"saved v{saved.version}" in ann.inner_text("#save-state")
    assert ann.errors == []


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_findings_list_switches_and_held_tasks_say_so(
    browser, live_server, project, radiograph, people, make_user
):
    from annotation.services import task_claim

    heart, effusion = radiograph
    ann = open_review(browser, live_server, "ann", project.slug)
    next_case(ann)
    assert ann.get_attribute("#review", "data-finding") == str(heart.pk)

    # Clicking the other finding saves the drawing, claims the other finding's task and opens it.
    ann.keyboard.press("p")
    rect = image_rect(ann)
    drag(ann, [at(rect, 0.1, 0.8), at(rect, 0.2, 0.85)])
    open_finding(ann, effusion.pk)
    heart.refresh_from_db()
    assert heart.current_version == 2 and heart.annotations.get(version=2).author.username == "ann"
    assert effusion.text in ann.inner_text("#case-title")
    assert voxels(ann) == 0
    effusion.task.refresh_from_db()
    assert effusion.task.assignee.username == "ann"
    # [ goes back (the task is still theirs): their saved version is shown.
    ann.keyboard.press("[")
    ann.wait_for_selector(f"#review[data-finding='{heart.pk}'][data-state=ready]:not([data-busy])")
    assert voxels(ann) == heart.annotations.get(version=2).voxels
    ann.screenshot(path=str(ARTIFACTS / "review-radiograph.png"))

    # When another annotator holds a task, clicking it says so and the case stays.
    other = make_user("ann2")
    membership_set(project=project, user=other, role=Role.ANNOTATOR)
    effusion.task.assignee = None
    effusion.task.save()
    task_claim(task_id=effusion.task.pk, user=other, stages=("annotate",))
    ann.click(f"#findings li[data-finding='{effusion.pk}']")
    wait_message(ann, "error", "another reviewer holds this task")
    assert ann.get_attribute("#review", "data-finding") == str(heart.pk)
    assert ann.errors == []


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_add_a_missing_finding_from_the_report(browser, live_server, project, radiograph, people):
    ann = open_review(browser, live_server, "ann", project.slug)
    next_case(ann)
    words = "Degenerative changes of the thoracic spine"
    # Select the words in the report, as a mouse would.
    ann.evaluate(
        """(words) => {
          const para = document.querySelector('.report-text[data-section=findings]');
          const walker = document.createTreeWalker(para, NodeFilter.SHOW_TEXT);
          for (let node = walker.nextNode(); node; node = walker.nextNode()) {
            const at = node.textContent.indexOf(words);
            if (at < 0) continue;
            const range = document.createRange();
            range.setStart(node, at);
            range.setEnd(node, at + words.length);
            getSelection().removeAllRanges();
            getSelection().addRange(range);
            return;
          }
          throw new Error('words not found');
        }""",
        words,
    )
    ann.keyboard.press("m")
    assert ann.is_visible("#missing-form")
    assert ann.input_value("#missing-text") == words
    assert "characters" in ann.inner_text("#missing-span")
    ann.fill("#missing-code", "Other")
    ann.press("#missing-text", "Enter")
    ann.wait_for_function("() => document.querySelector('#case-title').innerText.includes('Degenerative')")
    ann.wait_for_selector("#review[data-state=ready]:not([data-busy])")

    made = Finding.objects.get(project=project, source="manual")
    report = made.report.findings
    assert made.text == words and made.code == "Other" and made.section == "findings"
    assert report[made.start : made.end] == words
    assert made.task.assignee.username == "ann" and made.task.stage == "annotate"
    assert ann.get_attribute("#review", "data-finding") == str(made.pk)
    assert ann.inner_text("#report mark.current") == words
    assert ann.errors == []


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_lost_lease_and_bad_input_are_shown(browser, live_server, project, radiograph, people):
    from datetime import timedelta

    from django.utils import timezone

    heart, effusion = radiograph
    ann = open_review(browser, live_server, "ann", project.slug)
    next_case(ann)

    # The lease ran out while they painted: the save says so, and Claim again lets them save.
    heart.task.refresh_from_db()
    heart.task.lease_expires_at = timezone.now() - timedelta(minutes=1)
    heart.task.save()
    ann.keyboard.press("p")
    rect = image_rect(ann)
    drag(ann, [at(rect, 0.1, 0.8), at(rect, 0.2, 0.85)])
    ann.keyboard.press("s")
    wait_message(ann, "error", "lease")
    assert "expired" in message(ann)
    ann.click("#messages button")  # Claim again
    wait_message(ann, "ok", "You hold task")
    ann.keyboard.press("s")
    wait_message(ann, "ok", "Saved version 2")
    assert heart.annotations.get(version=2).author.username == "ann"

    # An empty finding cannot be accepted: the API's reason is shown.
    open_finding(ann, effusion.pk)
    ann.keyboard.press("a")
    wait_message(ann, "error", "empty annotation cannot be accepted")
    assert ann.errors == []


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_radiologist_switches_between_proposal_and_result(browser, live_server, project, radiograph, people):
    import numpy as np

    from annotation.services import annotation_save, task_next, task_submit

    heart = radiograph[0]
    task = task_next(project=project, user=people["ann"], stages=("annotate",))
    assert task.finding_id == heart.pk
    mask = np.zeros((200, 160), bool)
    mask[70:130, 60:110] = True  # 60 × 50 pixels, the proposal was 80 × 70
    annotation_save(task_id=task.pk, user=people["ann"], base_version=1, kind="mask", mask=mask)
    task_submit(task_id=task.pk, user=people["ann"], decision="accept")

    rad = open_review(browser, live_server, "rad", project.slug)
    next_case(rad)
    assert voxels(rad) == 60 * 50
    assert "annotator's result" in rad.inner_text("#versions") and "proposal" in rad.inner_text("#versions")
    assert "annotator's result" in rad.inner_text("#showing")
    rad.screenshot(path=str(ARTIFACTS / "review-radiologist-radiograph.png"))
    rad.keyboard.press("v")
    rad.wait_for_selector("#review[data-showing=proposal]:not([data-busy])")
    assert wait_voxels(rad, "n === 5600") == 80 * 70
    assert "proposal" in rad.inner_text("#showing")
    rad.keyboard.press("v")
    rad.wait_for_selector("#review[data-showing=annotator]:not([data-busy])")
    assert wait_voxels(rad, "n === 3000") == 60 * 50
    assert rad.errors == []
