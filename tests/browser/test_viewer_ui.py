"""The review screen's viewer and tools (issue 17) in Chromium against a live server, on a small synthetic
chest CT (20 × 96 × 96 voxels of 4 mm): room to work (the image fills a 1920 × 1080 screen, layouts,
maximise, zoom, pan, window / level, the slice and HU under the cursor), the tools (brush size and its
cursor, threshold brush, region grow, fill between slices, boxes and masks as separate annotations, open and
restore any version), incremental strokes, and nothing lost (leaving asks, a 409 keeps the edits). What the
screen saved is checked with nibabel and scipy against the scan's own voxels. Screenshots go to
test-artifacts/viewer-*.png."""

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from annotation.models import Finding
from core.models import Role
from core.services import membership_set
from core.storage import storage_local_copy
from tests.annotation.factories import review_case
from tests.browser import ui
from tests.browser.ui import (
    ARTIFACTS,
    at,
    drag,
    image_rect,
    next_case,
    open_review,
    voxels,
    wait_message,
    wait_voxels,
)

browser = ui.browser  # the Chromium fixture

SHAPE = (20, 96, 96)  # (Z, Y, X) of the synthetic series
FULL_HD = (1920, 1080)
NV = "window.groundlabReview.nv"
TILES_JS = f"() => {NV}.screenSlices.map((s) => s.axCorSag)"
CENTRE_JS = f"""(axCorSag) => {{
  const nv = {NV};
  const s = nv.screenSlices.find((t) => t.axCorSag === axCorSag);
  const [l, t, w, h] = s.leftTopWidthHeight;
  const r = nv.canvas.getBoundingClientRect();
  const sx = r.width / nv.canvas.width, sy = r.height / nv.canvas.height;
  return [r.left + (l + w / 2) * sx, r.top + (t + h / 2) * sy];
}}"""


@pytest.fixture
def ct(project, tmp_path):
    review_case(
        project,
        tmp_path,
        shape=SHAPE,
        spacing=(4.0, 4.0, 4.0),
        findings="No consolidation. There is a 14 mm nodule in the right upper lobe.",
    )
    return Finding.objects.get(project=project)


@pytest.fixture
def ann(make_user, project):
    user = make_user("ann")
    membership_set(project=project, user=user, role=Role.ANNOTATOR)
    return user


def scan_array(finding) -> np.ndarray:
    with storage_local_copy(finding.scan.file.name) as path:
        return np.asarray(nib.load(str(path)).get_fdata())


def mask_array(finding, version: int) -> np.ndarray:
    annotation = finding.annotations.get(version=version)
    with storage_local_copy(annotation.mask.name) as path:
        return np.asarray(nib.load(str(path)).dataobj) > 0


POINT_JS = f"""(fr) => {{
  const nv = {NV};
  const got = nv.frac2canvasPosWithTile([fr[0], fr[1], nv.scene.crosshairPos[2]], 0);
  const r = nv.canvas.getBoundingClientRect();
  if (!got) return null;
  return [r.left + got.pos[0] * r.width / nv.canvas.width, r.top + got.pos[1] * r.height / nv.canvas.height];
}}"""


def axial_point(page, fx: float, fy: float) -> tuple[float, float]:
    """Where the point (fx, fy) of the volume (fractions) is on the axial tile, in page pixels."""
    return tuple(page.evaluate(POINT_JS, [fx, fy]))


def tiles(page) -> list[int]:
    return sorted(page.evaluate(TILES_JS))


def wait_tiles(page, want: list[int]) -> None:
    page.wait_for_function(f"() => JSON.stringify(({TILES_JS})().sort()) === JSON.stringify({sorted(want)})")


def centre(page, axcorsag: int) -> tuple[float, float]:
    return tuple(page.evaluate(CENTRE_JS, axcorsag))


def slices_move(page, dz: int) -> None:
    """Move the crosshair (and so the axial slice shown) dz slices, with NiiVue's own call."""
    page.evaluate(f"(dz) => {{ {NV}.moveCrosshairInVox(0, 0, dz); }}", dz)
    page.wait_for_timeout(200)


def no_autosave(page) -> None:
    """Saves only when the test presses s (the autosave's delay: 10 minutes)."""
    page.evaluate("() => { document.querySelector('#review').dataset.autosaveMs = '600000'; }")


def stroke(page, rect, points) -> None:
    drag(page, [at(rect, fx, fy) for fx, fy in points], steps=8)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_room_to_work_layouts_zoom_window_and_the_cursor(browser, live_server, project, ct, ann):
    ARTIFACTS.mkdir(exist_ok=True)
    page = open_review(browser, live_server, "ann", project.slug, viewport=FULL_HD)
    next_case(page)

    # The image takes the screen (it was 440 px high), the status line below it stays on screen.
    box = page.locator("#viewer-box").bounding_box()
    assert box["width"] >= 1300 and box["height"] >= 750, box
    status = page.locator("#view-status").bounding_box()
    assert status["y"] + status["height"] <= FULL_HD[1], status
    wait_tiles(page, [0, 1, 2])
    page.screenshot(path=str(ARTIFACTS / "viewer-1x3.png"))

    # Layouts: 2×2 has the three planes and the 3D render, 1×1 one plane; o cycles.
    page.click("button[data-layout='2x2']")
    wait_tiles(page, [0, 1, 2, 4])
    page.screenshot(path=str(ARTIFACTS / "viewer-2x2.png"))
    page.click("button[data-layout='1x1'][data-plane='coronal']")
    wait_tiles(page, [1])
    page.keyboard.press("o")
    wait_tiles(page, [0, 1, 2])
    assert page.get_attribute("#review", "data-layout") == "1x3"

    # A double click maximises the plane under it; another one goes back.
    page.mouse.dblclick(*centre(page, 2))
    wait_tiles(page, [2])
    assert page.get_attribute("#review", "data-plane") == "sagittal"
    page.mouse.dblclick(*centre(page, 2))
    wait_tiles(page, [0, 1, 2])

    # Zoom: ctrl + wheel over the axial tile; the image grows around the crosshair.
    a0, b0 = axial_point(page, 0.45, 0.45), axial_point(page, 0.55, 0.55)
    page.mouse.move(*centre(page, 0))
    page.keyboard.down("Control")
    page.mouse.wheel(0, -400)
    page.keyboard.up("Control")
    page.wait_for_function(f"() => {NV}.scene.pan2Dxyzmm[3] > 2")
    page.wait_for_timeout(300)
    a1, b1 = axial_point(page, 0.45, 0.45), axial_point(page, 0.55, 0.55)
    zoom = page.evaluate(f"() => {NV}.scene.pan2Dxyzmm[3]")
    assert abs((b1[0] - a1[0]) / (b0[0] - a0[0]) - zoom) < 0.1, (a0, b0, a1, b1, zoom)
    assert f"zoom {zoom:.1f}×" in page.inner_text("#view-zoom")
    # Pan: ctrl + drag moves the image; 0 resets zoom and pan.
    x, y = centre(page, 0)
    page.keyboard.down("Control")
    drag(page, [(x, y), (x + 80, y + 40)])
    page.keyboard.up("Control")
    page.wait_for_timeout(300)
    a2 = axial_point(page, 0.45, 0.45)
    assert abs(a2[0] - a1[0] - 80) < 12 and abs(a2[1] - a1[1] - 40) < 12, (a1, a2)
    page.screenshot(path=str(ARTIFACTS / "viewer-zoomed.png"))
    page.keyboard.press("0")
    page.wait_for_function(f"() => {NV}.scene.pan2Dxyzmm[3] === 1")

    # The window: the preset shown by name; a right drag sets level / width continuously.
    page.keyboard.press("1")
    page.wait_for_function("() => document.querySelector('#view-window').innerText.includes('Lung window')")
    assert "L -600 W 1500" in page.inner_text("#view-window")
    assert page.is_visible("button[data-window=lung].on")
    x, y = centre(page, 0)
    page.mouse.move(x, y)
    page.mouse.down(button="right")
    for step in range(1, 8):
        page.mouse.move(x + step * 12, y - step * 6)
    page.mouse.up(button="right")
    page.wait_for_function("() => document.querySelector('#view-window').innerText.includes('dragged')")
    cal = page.evaluate(f"() => [{NV}.volumes[0].cal_min, {NV}.volumes[0].cal_max]")
    assert cal != [-1350, 150], cal
    assert page.get_attribute("#review", "data-window") == "custom"
    assert not page.is_visible("button[data-window].on")

    # The slice and the value under the cursor: the scan's own voxel (nibabel) at the voxel shown.
    rect = image_rect(page)
    data = scan_array(ct)
    for fx, fy in ((0.33, 0.47), (0.5, 0.5), (0.5, 0.8)):
        page.mouse.move(*at(rect, fx, fy))
        page.wait_for_timeout(100)
        voxel = [int(v) for v in page.get_attribute("#review", "data-cursor-voxel").split(",")]
        shown = int(page.get_attribute("#review", "data-cursor-value"))
        assert shown == round(data[tuple(voxel)]), (voxel, shown, data[tuple(voxel)])
        assert page.get_attribute("#review", "data-cursor-slice").startswith("axial ")
        assert f"{shown} HU" in page.inner_text("#view-cursor")
    page.screenshot(path=str(ARTIFACTS / "viewer-window-and-cursor.png"))

    # The crosshair is grey: no finding's colour (cases.ts PALETTE: saturated hues).
    r, g, b, _ = page.evaluate(f"() => Array.from({NV}.opts.crosshairColor)")
    assert max(r, g, b) - min(r, g, b) < 0.05, (r, g, b)
    assert page.errors == []


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_brush_threshold_grow_between_slices_box_and_mask_versions(browser, live_server, project, ct, ann):
    ARTIFACTS.mkdir(exist_ok=True)
    finding = ct
    page = open_review(browser, live_server, "ann", project.slug, viewport=FULL_HD)
    no_autosave(page)
    next_case(page)
    assert page.is_visible("#toolbar-edit button[data-action=click]")  # the click tool (models issue)
    rect = image_rect(page)
    data = scan_array(finding)

    # Brush size: keys and slider; the cursor circle is the pen's size on the image.
    page.keyboard.press(".")
    page.keyboard.press(".")
    assert page.input_value("#pen-size") == "7"
    assert page.evaluate(f"() => {NV}.opts.penSize") == 7
    page.keyboard.press("p")
    page.mouse.move(*at(rect, 0.3, 0.45))
    page.mouse.move(*at(rect, 0.31, 0.45))
    page.wait_for_selector("#brush:not([hidden])")
    width = page.locator("#brush").bounding_box()["width"]
    assert abs(width - 7 * rect["width"] / SHAPE[2]) < 0.25 * width, (width, rect)
    page.screenshot(path=str(ARTIFACTS / "viewer-brush.png"))
    page.keyboard.press(",")
    page.keyboard.press(",")
    assert page.input_value("#pen-size") == "3"

    # Fill between slices: the same stroke on two axial slices 4 apart, i fills the 3 between.
    slices_move(page, -6)
    line = [(0.28, 0.45), (0.38, 0.45)]
    stroke(page, rect, line)
    slices_move(page, 4)
    stroke(page, rect, line)
    drawn = voxels(page)
    page.keyboard.press("i")
    wait_message(page, "ok", "Filled")
    assert voxels(page) == drawn * 5 // 2, (drawn, voxels(page))
    page.keyboard.press("z")  # undo and redo the fill
    wait_voxels(page, f"n === {drawn}")
    page.keyboard.press("y")
    wait_voxels(page, f"n === {drawn * 5 // 2}")
    page.keyboard.press("s")
    wait_message(page, "ok", "Saved version 1")
    v1 = mask_array(finding, 1)
    axis = 2  # the canonical NIfTI's slice axis
    painted = [k for k in range(v1.shape[axis]) if v1.take(k, axis=axis).any()]
    assert painted == list(range(painted[0], painted[0] + 5)), painted
    first = v1.take(painted[0], axis=axis)
    for k in painted[1:]:
        assert np.array_equal(v1.take(k, axis=axis), first), k  # the same shape on every slice between

    # Threshold brush: lungs only (HU -1000..-400); a stroke across both lungs and the mediastinum
    # paints only the lungs.
    page.fill("#range-lo", "-1000")
    page.fill("#range-hi", "-400")
    page.locator("#range-hi").blur()
    page.keyboard.press("t")
    assert page.is_checked("#range-on")
    slices_move(page, 6)
    page.keyboard.press(".")
    stroke(page, rect, [(0.12, 0.5), (0.5, 0.5), (0.88, 0.5)])
    page.screenshot(path=str(ARTIFACTS / "viewer-threshold.png"))
    page.keyboard.press("s")
    wait_message(page, "ok", "Saved version 2")
    v2 = mask_array(finding, 2)
    new = v2 & ~v1
    assert new.sum() > 20
    assert data[new].max() <= -400 and data[new].min() >= -1000
    xs = np.nonzero(new)[0]
    assert xs.min() < 40 and xs.max() > 56 and not ((xs > 43) & (xs < 53)).any(), sorted(set(xs))

    # Region grow from a seed in the other lung, in the same range: the 6-connected component (scipy) of
    # the voxels in range that are not drawn yet, holding the seed.
    slices_move(page, 4)
    page.keyboard.press("w")
    assert page.get_attribute("#review", "data-mode") == "grow"
    page.mouse.move(*at(rect, 0.67, 0.47))
    page.wait_for_timeout(100)
    seed = tuple(int(v) for v in page.get_attribute("#review", "data-cursor-voxel").split(","))
    page.mouse.click(*at(rect, 0.67, 0.47))
    wait_message(page, "ok", "Grown")
    page.keyboard.press("s")
    wait_message(page, "ok", "Saved version 3")
    v3 = mask_array(finding, 3)
    labels, _ = ndimage.label((data >= -1000) & (data <= -400) & ~v2)
    assert labels[seed] > 0
    component = labels == labels[seed]
    assert np.array_equal(v3, v2 | component)
    assert int(page.get_attribute("#review", "data-grown")) == component.sum()
    page.screenshot(path=str(ARTIFACTS / "viewer-grow.png"))

    # A box is its own annotation: saving it keeps the mask on the screen and as a version.
    page.keyboard.press("b")
    drag(page, [at(rect, 0.6, 0.35), at(rect, 0.8, 0.6)])
    page.keyboard.press("s")
    wait_message(page, "ok", "Saved version 4")
    finding.refresh_from_db()
    assert finding.annotations.get(version=4).kind == "box"
    assert voxels(page) == finding.annotations.get(version=3).voxels
    page.reload()
    page.wait_for_selector("#review[data-state=idle]")
    no_autosave(page)
    next_case(page)
    assert page.get_attribute("#review", "data-shown-mask") == "3"
    assert page.get_attribute("#review", "data-shown-box") == "4"
    assert voxels(page) == finding.annotations.get(version=3).voxels
    page.screenshot(path=str(ARTIFACTS / "viewer-box-and-mask.png"))

    # Every version opens, and restores as the newest.
    page.click("#versions li[data-version='1'] button[data-version-action=open]")
    page.wait_for_selector("#review[data-shown-mask='1']")
    assert voxels(page) == finding.annotations.get(version=1).voxels
    assert "Showing v1" in page.inner_text("#messages")
    page.screenshot(path=str(ARTIFACTS / "viewer-versions.png"))
    page.click("#versions li[data-version='1'] button[data-version-action=restore]")
    wait_message(page, "ok", "Restored v1 as version 5")
    assert np.array_equal(mask_array(finding, 5), v1)
    page.click("#versions li[data-version='4'] button[data-version-action=restore]")
    wait_message(page, "ok", "Restored v4 as version 6")
    restored = finding.annotations.get(version=6)
    assert restored.kind == "box" and restored.box == finding.annotations.get(version=4).box
    assert page.errors == []


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_stroke_uploads_only_what_it_changed(browser, live_server, project, ct, ann):
    """The pen sends the GPU the box it painted, not the drawing (NiiVue sent all of it on every move)."""
    page = open_review(browser, live_server, "ann", project.slug)
    next_case(page)
    page.evaluate(
        f"""() => {{
          const gl = {NV}.gl;
          const upload = gl.texSubImage3D.bind(gl);
          window.uploads = [];
          gl.texSubImage3D = (...args) => {{
            window.uploads.push(args[5] * args[6] * args[7]);
            return upload(...args);
          }};
        }}"""
    )
    rect = image_rect(page)
    page.keyboard.press("p")
    stroke(page, rect, [(0.3, 0.4), (0.5, 0.5), (0.6, 0.45)])
    page.wait_for_function("() => document.querySelector('#save-state').dataset.kind === 'dirty'")
    uploads = page.evaluate("() => window.uploads")
    whole = SHAPE[0] * SHAPE[1] * SHAPE[2]
    assert uploads and max(uploads) <= SHAPE[1] * SHAPE[2], (uploads, whole)  # one slice at most
    painted = voxels(page)
    page.keyboard.press("s")
    wait_message(page, "ok", f"(mask, {painted} voxels)")
    assert page.errors == []


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_leaving_asks_and_a_conflict_keeps_the_edits(browser, live_server, project, ct, ann):
    from annotation.services import annotation_save, task_next

    finding = ct
    page = open_review(browser, live_server, "ann", project.slug)
    no_autosave(page)
    next_case(page)
    rect = image_rect(page)
    page.keyboard.press("p")
    stroke(page, rect, [(0.3, 0.45), (0.45, 0.5)])
    mine = voxels(page)
    assert mine > 0

    # Leaving the page with an unsaved stroke: the browser asks (dismissed: the page and the stroke stay).
    asked: list[str] = []

    def on_dialog(dialog) -> None:
        asked.append(dialog.type)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.evaluate("() => { window.location.href = '/'; }")
    page.wait_for_timeout(500)
    assert asked == ["beforeunload"] and "/review/" in page.url
    assert voxels(page) == mine

    # Someone saves meanwhile (far from the stroke): the save is a 409, the stroke stays on the screen.
    task = task_next(project=project, user=ann, stages=("annotate",))
    theirs_mask = np.zeros(tuple(finding.scan.shape), bool)
    theirs_mask[70:80, 70:80, 0:2] = True
    theirs = annotation_save(
        task_id=task.pk, user=ann, base_version=finding.current_version, kind="mask", mask=theirs_mask
    )
    page.keyboard.press("s")
    wait_message(page, "error", f"Someone saved version {theirs.version}")
    assert "your edits are kept" in page.inner_text("#messages")
    assert voxels(page) == mine
    page.screenshot(path=str(ARTIFACTS / "viewer-conflict.png"))

    # Re-applied on their version: theirs and mine, saved as the next version.
    page.click("#messages button:has-text('Re-apply my edits')")
    wait_message(page, "ok", f"re-applied on version {theirs.version}")
    assert voxels(page) == mine + int(theirs_mask.sum())
    page.keyboard.press("s")
    wait_message(page, "ok", f"Saved version {theirs.version + 1}")
    saved = mask_array(finding, theirs.version + 1)
    assert saved.sum() == mine + theirs_mask.sum() and (saved & theirs_mask).sum() == theirs_mask.sum()
    page.remove_listener("dialog", on_dialog)
    assert page.errors == []
