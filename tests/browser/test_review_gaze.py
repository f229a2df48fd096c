"""Gaze in context on the review screen (Chromium through Playwright, a live server): a radiograph whose gaze
recording a real gaze label run labelled. The gaze panel lists the transcript's sentences with their times
and the anatomies with their dwell; choosing a sentence shows its window's heatmap over the image (where
the reader looked while saying it), marks the sentence (aria-current, "◀ chosen") and the finding it states;
an anatomy shows its heatmap; the legend says what is shown; the opacity slider works from the keyboard.
Screenshots: test-artifacts/review-gaze-*.png."""

import pytest

from core.models import Role
from core.services import membership_set
from tests.annotation.gaze_case import LOOKS, SIZE, gaze_radiograph_case
from tests.browser import ui
from tests.browser.ui import ARTIFACTS, next_case, open_review

browser = ui.browser  # the Chromium fixture

# Where the shown heatmap peaks, as fractions of the image: the heatmap drawn into a canvas, its brightest
# pixel (the inferno map's last colour is the palest: the largest R + G + B).
PEAK = """() => {
  const img = document.getElementById('gaze');
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const ctx = c.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height).data;
  let best = -1, at = 0;
  for (let i = 0; i < d.length; i += 4) {
    const v = d[i] + d[i + 1] + d[i + 2];
    if (v > best) { best = v; at = i / 4; }
  }
  return [(at % c.width) / c.width, Math.floor(at / c.width) / c.height];
}"""


def _centre(points):
    return sum(p[0] for p in points) / len(points), sum(p[1] for p in points) / len(points)


def _wait_shown(page, key: str, url: str) -> None:
    """The overlay shows ``key``'s heatmap ``url``, loaded at the image's size and visible."""
    page.wait_for_function(
        """([key, url, w]) => { const g = document.getElementById('gaze');
             return document.querySelector('#review').dataset.gazeShown === key
               && g.getAttribute('src') === url && g.complete && g.naturalWidth === w && !g.hidden; }""",
        arg=[key, url, SIZE[0]],
    )


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_gaze_panel_sentences_anatomies_legend_and_opacity(
    browser, live_server, project, make_user, tmp_path
):
    ARTIFACTS.mkdir(exist_ok=True)
    gaze_radiograph_case(project, tmp_path)
    membership_set(project=project, user=make_user("ann"), role=Role.ANNOTATOR)
    page = open_review(browser, live_server, "ann", project.slug, viewport=(1500, 950))
    next_case(page)
    labels = page.evaluate("() => window.groundlabReview.current().gaze[0].labels")
    sentences, anatomies = labels["sentences"], labels["anatomies"]

    # The panel: the transcript (three sentences with their times), the anatomies with dwell and share;
    # the whole recording is chosen.
    assert page.is_visible("#gaze-box")
    listed = page.locator("#gaze-sentences button.gaze-item")
    assert listed.count() == 3
    assert "0.8–2.0 s" in listed.nth(0).inner_text() and "heart is enlarged" in listed.nth(0).inner_text()
    heart = next(a for a in anatomies if a["anatomy"] == "heart")
    heart_button = page.locator("#gaze-anatomies button[data-anatomy=heart]")
    assert f"{heart['dwell_s']:.1f} s · {round(100 * heart['dwell_share'])}%" in heart_button.inner_text()
    assert page.get_attribute("#gaze-whole button", "aria-current") == "true"
    assert page.inner_text("#gaze-shown").startswith("Hidden") and "whole recording, 12 fixations" in (
        page.inner_text("#gaze-shown")
    )

    # When they choose sentence 2 (the effusion): its heatmap is over the image, peaking where the reader
    # looked while saying it; the sentence is marked, and so is the effusion in the findings list.
    listed.nth(1).click()
    _wait_shown(page, "sentence:1", sentences[1]["heatmap_png"])
    assert page.get_attribute("#review", "data-gaze") == "on"
    assert listed.nth(1).get_attribute("aria-current") == "true" and "◀ chosen" in listed.nth(1).inner_text()
    assert listed.nth(0).get_attribute("aria-current") is None
    legend = page.inner_text("#gaze-shown")
    assert "sentence 2: “" in legend and "spoken 3.2–5.0 s" in legend and "gaze 1.2–5.0 s" in legend
    [effusion_id] = sentences[1]["finding_ids"]
    tagged = page.locator(f"#findings li[data-finding='{effusion_id}'] .gaze-tag")
    assert tagged.inner_text() == "said in sentence 2"
    peak = page.evaluate(PEAK)
    want = _centre(LOOKS[1][2])
    assert abs(peak[0] - want[0]) < 0.08 and abs(peak[1] - want[1]) < 0.08, (peak, want)
    page.locator("#gaze-box").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "review-gaze-sentence.png"))

    # Sentence 1 (the heart): another heatmap, peaking on the heart; only it is marked now.
    listed.nth(0).click()
    _wait_shown(page, "sentence:0", sentences[0]["heatmap_png"])
    peak = page.evaluate(PEAK)
    want = _centre(LOOKS[0][2])
    assert abs(peak[0] - want[0]) < 0.08 and abs(peak[1] - want[1]) < 0.08, (peak, want)
    assert page.locator("#findings .gaze-tag").count() == 1
    assert listed.nth(1).get_attribute("aria-current") is None

    # From the keyboard: Tab reaches the next sentence (focus visible), Enter chooses it.
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.dataset.sentence") == "1"
    assert page.evaluate("() => document.activeElement.matches(':focus-visible')")
    page.keyboard.press("Enter")
    _wait_shown(page, "sentence:1", sentences[1]["heatmap_png"])

    # An anatomy: the heart's heatmap, and the legend says its dwell and share.
    heart_button.focus()
    page.keyboard.press("Enter")
    _wait_shown(page, "anatomy:heart", heart["heatmap_png"])
    assert heart_button.get_attribute("aria-current") == "true"
    share = round(100 * heart["dwell_share"])
    assert f"anatomy: heart, {heart['dwell_s']:.1f} s dwell, {share}%" in page.inner_text("#gaze-shown")
    assert page.locator("#findings .gaze-tag").count() == 0
    page.locator("#gaze-box").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "review-gaze-anatomy.png"))

    # The opacity slider, from the keyboard: three steps of 5 % down from 75 %.
    assert page.evaluate("() => getComputedStyle(document.getElementById('gaze')).opacity") == "0.75"
    page.focus("#gaze-opacity")
    for _ in range(3):
        page.keyboard.press("ArrowLeft")
    assert page.inner_text("#gaze-opacity-value") == "60%"
    assert page.evaluate("() => getComputedStyle(document.getElementById('gaze')).opacity") == "0.6"
    page.focus("#gaze-opacity")
    for _ in range(5):
        page.keyboard.press("ArrowRight")
    assert page.inner_text("#gaze-opacity-value") == "85%"
    page.screenshot(path=str(ARTIFACTS / "review-gaze-opacity.png"))

    # Back to the whole recording; g hides the heatmap and the legend says so.
    page.click("#gaze-whole button")
    _wait_shown(page, "whole", labels["recording"]["heatmap_png"])
    assert "Shown: whole recording, 12 fixations" in page.inner_text("#gaze-shown")
    page.locator("#viewer").click()  # the keys belong to the page again
    page.keyboard.press("g")
    assert not page.is_visible("#gaze") and page.inner_text("#gaze-shown").startswith("Hidden")
    assert page.errors == []


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_demo_radiograph_in_context(browser, live_server, tmp_path):
    """``demo_setup``'s radiograph (the real RG1_UNCR.dcm, its dictation on the masses, the heart and the
    bases): its first sentence's heatmap and the mass it states; the heart's heatmap."""
    from io import StringIO

    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from annotation.models import ReviewTask

    call_command("demo_setup", "--data-dir", str(tmp_path / "demo"), stdout=StringIO())
    person = get_user_model().objects.get(username="demo-annotator")
    person.set_password(ui.PASSWORD)
    person.save()
    mass = ReviewTask.objects.filter(finding__scan__name="RG1_UNCR", stage="annotate").order_by("id").first()
    page = open_review(browser, live_server, "demo-annotator", "demo", viewport=(1500, 950))
    next_case(page)
    if page.get_attribute("#review", "data-finding") != str(mass.finding_id):
        ui.open_finding(page, mass.finding_id)
    labels = page.evaluate("() => window.groundlabReview.current().gaze[0].labels")
    width = page.evaluate("() => window.groundlabReview.current().scan.shape[0]")

    first = page.locator("#gaze-sentences button[data-sentence='0']")
    assert "multiple masses in both lungs" in first.inner_text().lower()
    first.click()
    page.wait_for_function(
        """([url, w]) => { const g = document.getElementById('gaze');
             return g.getAttribute('src') === url && g.complete && g.naturalWidth === w && !g.hidden; }""",
        arg=[labels["sentences"][0]["heatmap_png"], width],
    )
    tag = page.locator(f"#findings li[data-finding='{mass.finding_id}'] .gaze-tag")
    assert tag.inner_text() == "said in sentence 1"
    page.locator("#gaze-box").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "review-gaze-demo-sentence.png"))

    heart = next(a for a in labels["anatomies"] if a["anatomy"] == "heart")
    page.click("#gaze-anatomies button[data-anatomy=heart]")
    page.wait_for_function(
        "url => document.getElementById('gaze').getAttribute('src') === url"
        " && document.getElementById('gaze').complete",
        arg=heart["heatmap_png"],
    )
    assert page.inner_text("#gaze-shown").startswith("Shown: anatomy: heart, ")
    page.screenshot(path=str(ARTIFACTS / "review-gaze-demo-anatomy.png"))
    assert page.errors == []


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_before_a_gaze_run_the_panel_says_how_to_start_one(
    browser, live_server, project, make_user, tmp_path
):
    gaze_radiograph_case(project, tmp_path, label=False)
    membership_set(project=project, user=make_user("ann"), role=Role.ANNOTATOR)
    page = open_review(browser, live_server, "ann", project.slug)
    next_case(page)
    assert page.is_visible("#gaze-box") and not page.is_visible("#gaze-lists")
    note = page.inner_text("#gaze-note")
    assert "No gaze label run has labelled this recording yet" in note and "console" in note
    # the whole recording's heatmap, computed now, is still there
    page.click("#gaze-whole button")
    page.wait_for_function(
        "w => (g => g.complete && g.naturalWidth === w && !g.hidden)(document.getElementById('gaze'))",
        arg=SIZE[0],
    )
    assert page.inner_text("#gaze-shown").startswith("Shown: whole recording")
    assert page.get_attribute("#gaze-shown", "data-loading") is None
    assert page.errors == []
