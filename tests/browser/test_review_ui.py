"""The review screen in a real browser (Chromium through Playwright) against a live server: an annotator
paints and saves a mask and accepts, a radiologist returns it with a comment, the annotator sees the
comment and accepts again, the radiologist approves. Screenshots go to test-artifacts/."""

from pathlib import Path

import pytest

from annotation.models import Finding
from core.models import Role
from core.services import membership_set
from tests.annotation.factories import review_case
from tests.conftest import REPO, need_service

CHROMIUM = Path("/usr/bin/chromium")
BUNDLE = REPO / "frontend" / "dist" / "review.js"
ARTIFACTS = REPO / "test-artifacts"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PASSWORD = "pw-" + "x" * 12
TIMEOUT_MS = 30_000


@pytest.fixture
def browser(monkeypatch):
    if not CHROMIUM.exists():
        need_service("Chromium", f"{CHROMIUM} is missing (apt-get install chromium chromium-driver)")
    if not BUNDLE.exists():
        need_service("the review bundle", f"{BUNDLE} is missing (make frontend)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need_service("Playwright", "pip install -r requirements-dev.txt")
    # Playwright's sync API runs an event loop in this thread; the ORM calls of the test are still sync.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield launched
        launched.close()


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
def people(make_user, project):
    out = {}
    for name, role in (("ann", Role.ANNOTATOR), ("rad", Role.RADIOLOGIST)):
        out[name] = make_user(name)
        membership_set(project=project, user=out[name], role=role)
    return out


def open_review(browser, live_server, username: str, slug: str):
    """A fresh browser session: log in through the login page, land on the review screen."""
    page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{live_server.url}/review/{slug}/")
    assert "/review/login/" in page.url  # login required
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"**/review/{slug}/")
    page.wait_for_selector("#review[data-state=idle]")
    page.errors = errors
    return page


def next_case(page) -> None:
    page.keyboard.press("n")
    page.wait_for_selector("#review[data-state=ready]:not([data-busy])")
    page.wait_for_timeout(300)  # one more frame of the viewer


def message(page) -> str:
    return page.inner_text("#messages")


def wait_message(page, kind: str, text: str) -> None:
    page.wait_for_function(
        "([kind, text]) => document.querySelector('#review').dataset.message === kind"
        " && document.querySelector('#messages').innerText.includes(text)",
        arg=[kind, text],
    )


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
    ann.click("#messages button")  # Reload
    wait_message(ann, "ok", f"version {theirs.version} is current")
