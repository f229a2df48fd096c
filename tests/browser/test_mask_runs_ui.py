"""The review screen receives a CT mask compactly (issue 17 item 3): version 1 of a finding (the ``lungs``
generator's mask) arrives as runs (``?encoding=runs``, ``data-mask-path="runs"``) and fills NiiVue's
drawing with the stored voxels, the count and the crosshair from the server; strokes, undo and a save work
on it. The platform's CTs are stored with X and Y running against RAS (image columns and rows): the runs
are flipped into NiiVue's RAS-ordered drawing. A scan whose stored axes NiiVue permutes (x and y swapped)
falls back to the NIfTI, which NiiVue reorients (``data-mask-path="nifti"``), with the same count."""

import gzip
import io

import nibabel as nib
import numpy as np
import pytest
from django.core.files.storage import default_storage

from annotation.models import Finding
from annotation.services import findings_from_proposals
from core.models import Role
from core.services import membership_set
from core.storage import storage_local_copy
from ml.preannotate import preannotate
from studies.masks import mask_centroid, mask_read
from tests.annotation.factories import review_case
from tests.browser import ui
from tests.browser.ui import (
    drag,
    image_rect,
    next_case,
    open_finding,
    open_review,
    voxels,
    wait_message,
    wait_voxels,
)

browser = ui.browser  # the Chromium fixture

NV = "window.groundlabReview.nv"
# the drawing as NiiVue holds it: set voxels, the sum of their indices, and the crosshair's voxel
DRAWING_JS = f"""() => {{
  const nv = {NV};
  let n = 0, sum = 0;
  nv.drawBitmap.forEach((v, i) => {{ if (v) {{ n++; sum += i; }} }});
  return {{ n, sum, vox: Array.from(nv.frac2vox(nv.scene.crosshairPos)) }};
}}"""


# the frame NiiVue renders now, read back from WebGL (same task: the buffer is not yet presented)
FRAME_JS = f"""() => {{
  const nv = {NV};
  nv.drawScene();
  const gl = nv.gl;
  const [w, h] = [gl.drawingBufferWidth, gl.drawingBufferHeight];
  const px = new Uint8Array(w * h * 4);
  gl.readPixels(0, 0, w, h, gl.RGBA, gl.UNSIGNED_BYTE, px);
  let sum = 0;
  for (let i = 0; i < px.length; i++) sum += px[i] * ((i % 997) + 1);
  return sum;
}}"""


@pytest.fixture
def lung(project, tmp_path):
    """A finding whose version 1 is the lungs generator's mask of a small synthetic CT."""
    scan = review_case(project, tmp_path, shape=(16, 64, 64), spacing=(5.0, 5.0, 5.0), findings="Effusion.")
    Finding.objects.all().delete()
    for proposal in preannotate(scan=scan, generator="lungs").proposals:
        proposal.code = "2e"
        proposal.save()
    findings_from_proposals(project=project)
    return Finding.objects.filter(code="2e").order_by("pk").first()


@pytest.fixture
def ann(make_user, project):
    user = make_user("ann")
    membership_set(project=project, user=user, role=Role.ANNOTATOR)
    return user


def open_lung(browser, live_server, project, finding):
    page = open_review(browser, live_server, "ann", project.slug)
    next_case(page)
    if page.get_attribute("#review", "data-finding") != str(finding.pk):
        open_finding(page, finding.pk)
    return page


def _swap_xy(key: str) -> None:
    """Rewrite a stored NIfTI with its x and y axes swapped (the same image in the world)."""
    with storage_local_copy(key) as path:
        image = nib.load(str(path))
        data = np.asarray(image.dataobj).transpose(1, 0, 2)
        affine = image.affine @ np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], float)
    flipped = nib.Nifti1Image(np.ascontiguousarray(data), affine, image.header)
    flipped.set_sform(affine, code=1)
    flipped.set_qform(affine, code=1)
    raw = flipped.to_bytes()
    default_storage.delete(key)
    default_storage.save(key, io.BytesIO(gzip.compress(raw) if key.endswith(".gz") else raw))


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_ct_mask_arrives_as_runs(browser, live_server, project, lung, ann):
    stored = mask_read(lung.annotations.get(version=1).mask.name)
    n = mask_centroid(stored)[0]
    assert n > 500
    page = open_lung(browser, live_server, project, lung)
    assert page.get_attribute("#review", "data-mask-path") == "runs"
    perm = page.evaluate(f"() => Array.from({NV}.volumes[0].permRAS)")
    assert [abs(p) for p in perm] == [1, 2, 3] and min(perm) < 0  # axes flipped: the runs were too
    assert page.get_attribute("#review", "data-shown-mask") == "1"
    assert voxels(page) == n
    drawn = page.evaluate(DRAWING_JS)
    # NiiVue's bitmap (RAS order, x fastest) holds exactly the stored voxels, flipped on the flipped axes,
    # and the crosshair is at their centroid
    ras = np.flip(stored, [a for a in range(3) if perm[a] < 0])
    assert drawn["n"] == n and drawn["sum"] == int(np.flatnonzero(ras.ravel(order="F")).sum())
    assert [round(v) for v in drawn["vox"]] == mask_centroid(ras)[1]
    frame = page.evaluate(FRAME_JS)  # the drawing's texture: only the mask's box was sent to the GPU
    # the same drawing and the same frame as NiiVue's own path: version 1's NIfTI reoriented by loadDrawing
    niivue = page.evaluate(
        f"""async (id) => {{
          const nv = {NV};
          const bytes = await (await fetch(`/api/annotations/${{id}}/mask/?encoding=http`)).arrayBuffer();
          const NVImage = nv.volumes[0].constructor;
          const image = await NVImage.loadFromUrl({{ url: "v1.nii", name: "v1.nii", buffer: bytes }});
          nv.loadDrawing(image);
          return {{ ...({DRAWING_JS})(), frame: ({FRAME_JS})() }};
        }}""",
        lung.annotations.get(version=1).pk,
    )
    assert (niivue["n"], niivue["sum"], niivue["frame"]) == (drawn["n"], drawn["sum"], frame)
    # a stroke on it, undone and redone, then saved: the counts follow from the server's count
    page.evaluate("() => { document.querySelector('#review').dataset.autosaveMs = '600000'; }")
    rect = image_rect(page)
    page.keyboard.press("p")
    drag(page, [(rect["x"] + rect["width"] * fx, rect["y"] + rect["height"] * 0.1) for fx in (0.2, 0.5, 0.8)])
    painted = wait_voxels(page, f"n > {n}")
    page.keyboard.press("z")
    assert wait_voxels(page, f"n === {n}") == n
    page.keyboard.press("y")
    assert wait_voxels(page, f"n === {painted}") == painted
    page.keyboard.press("s")
    wait_message(page, "ok", f"(mask, {painted} voxels)")
    saved = mask_read(lung.annotations.get(version=2).mask.name)
    assert int(saved.sum()) == painted and not (stored & ~saved).any()
    assert page.errors == []


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_scan_with_permuted_axes_falls_back_to_the_nifti(browser, live_server, project, lung, ann):
    version = lung.annotations.get(version=1)
    n = int(mask_read(version.mask.name).sum())
    _swap_xy(lung.scan.file.name)
    _swap_xy(version.mask.name)
    page = open_lung(browser, live_server, project, lung)
    assert page.get_attribute("#review", "data-mask-path") == "nifti"
    assert voxels(page) == n and page.evaluate(DRAWING_JS)["n"] == n
    assert page.get_attribute("#review", "data-message") != "error", page.inner_text("#messages")
    assert page.errors == []
