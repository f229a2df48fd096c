"""Proposals in the review screen (issue 16 item 3), in Chromium against a live server: a manager's "Tasks
from proposals" button gives waiting findings their starts from the proposals that arrived (the lungs
generator's lungs, a lesion model's masks); the annotator's case then shows the start as the drawing and
the anatomy of the finding's place as a NiiVue layer (the right lung for a right upper lobe nodule, the left
lung for a left effusion), which the list's checkboxes and the key l switch. The layers start hidden (a
layer over the finding's place covers the finding itself); once l shows them, the next cases open with
their place shown until l hides them again. Screenshots in test-artifacts/."""

import io

import numpy as np
import pytest
from PIL import Image

from annotation.models import Finding
from annotation.services import findings_made
from core.models import Role
from core.services import membership_set
from ml.preannotate import Region, _store, preannotate
from tests.annotation.factories import review_case
from tests.annotation.test_proposals_map import _ball_in, version_mask_of
from tests.browser import ui
from tests.browser.ui import ARTIFACTS, next_case, open_finding, open_review, voxels, wait_message

browser = ui.browser  # the Chromium fixture


def green_pixels(page) -> int:
    """Pixels of the viewer where the first layer's green (NiiVue's ``green`` colormap) shows."""
    shot = np.asarray(Image.open(io.BytesIO(page.locator("#viewer").screenshot())).convert("RGB")).astype(int)
    r, g, b = shot[..., 0], shot[..., 1], shot[..., 2]
    return int(((g > r + 40) & (g > b + 40)).sum())


def layers_ready(page, ids: str) -> None:
    page.wait_for_function(
        "(ids) => { const d = document.querySelector('#review').dataset;"
        " return d.layersState === 'ready' && (d.layers ?? '') === ids; }",
        arg=ids,
    )
    page.wait_for_timeout(300)  # a frame of the viewer


def volume_count(page) -> int:
    return page.evaluate("() => window.groundlabReview.nv.volumes.length")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_button_starts_and_anatomy_layers_in_the_browser(browser, live_server, project, tmp_path, make_user):
    ARTIFACTS.mkdir(exist_ok=True)
    scan = review_case(
        project,
        tmp_path,
        shape=(16, 64, 64),
        spacing=(8.0, 6.0, 6.0),
        findings="There is a 14 mm nodule in the right upper lobe. Small left pleural effusion.",
    )
    nodule, effusion = Finding.objects.get(code="2d"), Finding.objects.get(code="2e")
    assert nodule.current_version == effusion.current_version == 0
    for name, role in (("boss", Role.MANAGER), ("ann", Role.ANNOTATOR)):
        membership_set(project=project, user=make_user(name), role=role)
    lungs = {p.label: p for p in preannotate(scan=scan, generator="lungs").proposals}
    right, left = (version_mask_of(lungs[k], scan) for k in ("right_lung", "left_lung"))
    rul, lll = _ball_in(right, scan, 0.85), _ball_in(left, scan, 0.15)
    _store(
        scan,
        "model:lesions",
        {},
        [
            Region(label="lesion", mask=rul | _ball_in(left, scan, 0.9), code="lesion", confidence=0.9),
            Region(label="abnormality", mask=lll, code="abnormality", confidence=0.5),
        ],
        None,
        None,
    )

    # Given a manager on the review screen: the button gives both waiting findings their starts.
    boss = open_review(browser, live_server, "boss", project.slug)
    assert boss.is_visible("button[data-action=from-proposals]")
    boss.click("button[data-action=from-proposals]")
    wait_message(boss, "ok", "2 waiting findings got a start (starts by code 1, overlap 1)")
    nodule.refresh_from_db()
    effusion.refresh_from_db()
    assert nodule.current_version == effusion.current_version == 1

    # When the annotator opens the nodule: its right upper component is the drawing, nothing over it; the
    # key l shows the right lung as its layer (green), the left lung listed but off.
    ann = open_review(browser, live_server, "ann", project.slug)
    assert not ann.is_visible("button[data-action=from-proposals]")
    next_case(ann)
    assert ann.get_attribute("#review", "data-finding") == str(nodule.pk)
    right_id, left_id = str(lungs["right_lung"].pk), str(lungs["left_lung"].pk)
    layers_ready(ann, "")
    assert volume_count(ann) == 1 and green_pixels(ann) == 0
    assert not ann.is_checked(f"#layers li[data-layer='{right_id}'] input")
    assert "this finding's place" in ann.inner_text(f"#layers li[data-layer='{right_id}']")
    ann.keyboard.press("l")
    layers_ready(ann, right_id)
    assert voxels(ann) == nodule.annotations.get(version=1).voxels == int(rul.sum())
    assert volume_count(ann) == 2
    assert ann.is_checked(f"#layers li[data-layer='{right_id}'] input")
    assert not ann.is_checked(f"#layers li[data-layer='{left_id}'] input")
    assert "its label names this finding; its 1 of 2 parts" in ann.inner_text("#start-note")
    green_on = green_pixels(ann)
    ann.screenshot(path=str(ARTIFACTS / "review-anatomy-layer.png"))

    # l hides the layers (the green goes) and shows them again; a checkbox adds the left lung.
    ann.keyboard.press("l")
    layers_ready(ann, "")
    assert volume_count(ann) == 1 and green_pixels(ann) < green_on / 20
    ann.screenshot(path=str(ARTIFACTS / "review-anatomy-layer-off.png"))
    ann.keyboard.press("l")
    layers_ready(ann, right_id)
    assert volume_count(ann) == 2 and green_pixels(ann) > green_on / 2
    ann.check(f"#layers li[data-layer='{left_id}'] input")
    layers_ready(ann, ",".join(sorted((right_id, left_id), key=int)))
    assert volume_count(ann) == 3

    # The effusion: its start is the lesion inside the left lung, its layer the left lung only.
    open_finding(ann, effusion.pk)
    layers_ready(ann, left_id)
    assert volume_count(ann) == 2
    assert voxels(ann) == int(lll.sum()) and "a lesion inside this finding's anatomy" in ann.inner_text(
        "#start-note"
    )
    ann.screenshot(path=str(ARTIFACTS / "review-anatomy-layer-effusion.png"))
    assert ann.errors == [] and boss.errors == []


def _ellipse(width: int, height: int, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """An ellipse of pixels on a (X, Y) = (width, height) grid."""
    x, y = np.mgrid[0:width, 0:height]
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_radiograph_organ_start_and_side_in_the_browser(browser, live_server, project, tmp_path, make_user):
    from tests.annotation.factories import radiograph_case

    ARTIFACTS.mkdir(exist_ok=True)
    width, height = 200, 160
    scan = radiograph_case(
        project,
        tmp_path,
        size=(width, height),
        findings="The heart is enlarged, consistent with cardiomegaly. Small left pleural effusion.",
        proposal_box=None,
        gaze=False,
    )
    heart_finding, effusion = (
        Finding.objects.get(code="Cardiomegaly"),
        Finding.objects.get(code="Pleural Effusion"),
    )
    membership_set(project=project, user=make_user("ann"), role=Role.ANNOTATOR)
    # An anatomy model's organs on the PA radiograph (the patient's right lung on the image's left) and an
    # effusion model's mask with a blob at each lung base.
    right = _ellipse(width, height, 0.3 * width, 0.45 * height, 0.12 * width, 0.25 * height)
    left = _ellipse(width, height, 0.7 * width, 0.45 * height, 0.12 * width, 0.25 * height)
    heart = _ellipse(width, height, 0.52 * width, 0.62 * height, 0.14 * width, 0.12 * height)
    blobs = [_ellipse(width, height, cx * width, 0.62 * height, 6, 4) for cx in (0.3, 0.7)]
    organs = _store(
        scan,
        "model:anatomy",
        {},
        [
            Region(label=n, mask=m, code=n)
            for n, m in (("right lung", right), ("left lung", left), ("heart", heart))
        ],
        None,
        None,
    )
    (fluid,) = _store(
        scan,
        "model:effusion",
        {},
        [Region(label="effusion", mask=blobs[0] | blobs[1], code="effusion")],
        None,
        None,
    )
    made = findings_made(project=project)
    assert made.attached == 2 and made.rules == {"code": 1, "organ": 1}, made.as_dict()
    heart_finding.refresh_from_db()
    effusion.refresh_from_db()
    assert heart_finding.annotations.get(version=1).region_proposal_id == organs[2].pk
    assert effusion.annotations.get(version=1).voxels == int(blobs[1].sum())

    # The annotator's cardiomegaly: the heart is its start and, once l shows it, its layer.
    ann = open_review(browser, live_server, "ann", project.slug)
    next_case(ann)
    assert ann.get_attribute("#review", "data-finding") == str(heart_finding.pk)
    layers_ready(ann, "")
    ann.keyboard.press("l")
    layers_ready(ann, str(organs[2].pk))
    assert voxels(ann) == int(heart.sum())
    assert "the organ this finding is about" in ann.inner_text("#start-note")
    green_heart = green_pixels(ann)
    assert green_heart > 0
    ann.screenshot(path=str(ARTIFACTS / "review-radiograph-heart-layer.png"))
    ann.keyboard.press("l")
    layers_ready(ann, "")
    assert green_pixels(ann) < green_heart / 20

    # The left effusion (opened with the layers hidden, as l left them; l shows its place): its start is
    # the blob at the left base (the image's right), its layer the left lung, drawn on the image's right
    # half.
    open_finding(ann, effusion.pk)
    layers_ready(ann, "")
    ann.keyboard.press("l")
    layers_ready(ann, str(organs[1].pk))
    assert voxels(ann) == int(blobs[1].sum())
    shot = np.asarray(Image.open(io.BytesIO(ann.locator("#viewer").screenshot())).convert("RGB")).astype(int)
    green = (shot[..., 1] > shot[..., 0] + 40) & (shot[..., 1] > shot[..., 2] + 40)
    columns = np.nonzero(green)[1]
    assert len(columns) > 0 and np.median(columns) > shot.shape[1] / 2
    ann.screenshot(path=str(ARTIFACTS / "review-radiograph-left-lung-layer.png"))
    assert ann.errors == []
