"""The click tool in the review screen (issue 16 item 7), in Chromium against a live server: the annotator
picks the mediastinal window and the tool (c), clicks the phantom's nodule on the axial view and gets it as
the drawing (a region grow in the shown window's range, answered by the click's job), saves it, undoes and
redoes it; a shift+click in the lung beside it (background, outside the region) changes nothing, and a
click in the lung grows the lung, cut where the background click is. Screenshots in test-artifacts/."""

import numpy as np
import pytest

from annotation.models import Finding
from annotation.proposals import read_mask
from core.models import Job, Role
from core.services import membership_set
from ml.preannotate import scan_volume
from studies import demo
from tests.annotation.factories import review_case
from tests.browser import ui
from tests.browser.ui import ARTIFACTS, next_case, open_review, voxels, wait_message, wait_voxels

browser = ui.browser  # the Chromium fixture
SHAPE_ZYX, SPACING_ZYX = (24, 96, 96), (2.5, 3.0, 3.0)


def page_point(page, mm) -> tuple[float, float]:
    """Move the crosshair to ``mm`` (world) and return that point's page position on the axial tile."""
    return tuple(
        page.evaluate(
            """(mm) => {
              const nv = window.groundlabReview.nv;
              const frac = nv.mm2frac(mm);
              nv.scene.crosshairPos = frac;
              nv.drawScene();
              const p = nv.frac2canvasPosWithTile(frac, 0).pos;  // 0: the axial tile
              const r = nv.canvas.getBoundingClientRect();
              return [r.left + p[0] * r.width / nv.canvas.width, r.top + p[1] * r.height / nv.canvas.height];
            }""",
            list(mm),
        )
    )


def wait_answer(page, clicks: int) -> None:
    page.wait_for_function(
        "(n) => { const d = document.querySelector('#review').dataset;"
        " return d.clicking === 'done' && Number(d.clicks) === n; }",
        arg=clicks,
    )


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_click_the_nodule_and_get_it_as_the_drawing(browser, live_server, project, tmp_path, make_user):
    ARTIFACTS.mkdir(exist_ok=True)
    scan = review_case(
        project,
        tmp_path,
        shape=SHAPE_ZYX,
        spacing=SPACING_ZYX,
        findings="A 14 mm nodule in the right upper lobe.",
    )
    finding = Finding.objects.get(project=project, scan=scan)
    ann = make_user("ann")
    membership_set(project=project, user=ann, role=Role.ANNOTATOR)
    _, info = demo.synthetic_chest_ct(shape=SHAPE_ZYX, spacing=SPACING_ZYX)
    z, y, x = info["nodule_center_zyx"]
    volume = scan_volume(scan)
    assert volume[x, y, z] == 30
    affine = np.asarray(scan.affine, dtype=float)
    grids = np.meshgrid(*[np.arange(n) for n in volume.shape], indexing="ij")
    truth = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, (x, y, z), SPACING_ZYX[::-1], strict=True)) <= 49

    page = open_review(browser, live_server, "ann", project.slug)
    next_case(page)
    assert voxels(page) == 0
    page.keyboard.press("2")  # mediastinal window: [-160, 240]
    page.keyboard.press("c")
    assert page.get_attribute("#review", "data-mode") == "click"
    wait_message(page, "info", "region grow in the window's intensity range")

    nodule_mm = (affine @ [x, y, z, 1])[:3]
    page.mouse.click(*page_point(page, nodule_mm))
    wait_answer(page, 1)
    drawn = voxels(page)
    assert drawn == int(truth.sum()), (drawn, int(truth.sum()))
    assert "region grow in [-10, 70]" in page.inner_text("#messages")
    job = Job.objects.filter(kind="interactive").latest("id")
    assert job.created_by == ann and job.params["finding"] == finding.pk
    assert job.params["points"] == [[x, y, z]] and job.params["window"] == [-160.0, 240.0]
    page.screenshot(path=str(ARTIFACTS / "review-click-nodule.png"))

    # a background click beside the nodule (lung, outside the region): the same answer
    lung = (x + 5, y, z)
    assert volume[lung] == -850
    page.keyboard.down("Shift")
    page.mouse.click(*page_point(page, (affine @ [*lung, 1])[:3]))
    page.keyboard.up("Shift")
    wait_answer(page, 2)
    assert voxels(page) == drawn
    assert Job.objects.filter(kind="interactive").latest("id").params["background"] == [list(lung)]

    page.keyboard.press("s")
    wait_message(page, "ok", "Saved version")
    saved = finding.annotations.order_by("-version").first()
    assert saved.kind == "mask" and saved.author == ann
    assert np.array_equal(read_mask(saved.mask.name), truth)

    # undo / redo go through the click's answer like a stroke
    page.keyboard.press("z")
    wait_voxels(page, "n === 0")
    page.keyboard.press("y")
    assert wait_voxels(page, f"n === {drawn}") == drawn

    # Escape ends the clicks; a new run in the lung window grows the lung beside it, cut at the background
    # click; the nodule (its own region, not lung) stays drawn: answers paste over the drawing before them
    page.keyboard.press("Escape")
    page.keyboard.press("1")
    page.keyboard.press("c")
    page.mouse.click(*page_point(page, (affine @ [x + 8, y, z, 1])[:3]))
    wait_answer(page, 1)
    lung_drawn = voxels(page)
    assert lung_drawn > 20 * drawn
    page.keyboard.down("Shift")
    page.mouse.click(*page_point(page, (affine @ [x + 8, y + 12, z, 1])[:3]))
    page.keyboard.up("Shift")
    wait_answer(page, 2)
    assert drawn < voxels(page) < lung_drawn
    assert "cut at your background clicks" in page.inner_text("#messages")
    page.screenshot(path=str(ARTIFACTS / "review-click-lung-cut.png"))
    assert page.errors == []
