"""Interactive proposals (issue 16 item 7): the classical region grow from clicks (on a phantom with a known
nodule and on the real Lung-PET-CT-Dx CT), and the click API through the ``gpu`` queue's job (in-process
here): the answer's mask, who sees it, what is refused, the answer files replaced by newer clicks."""

from pathlib import Path

import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.urls import reverse
from scipy import ndimage

from annotation.models import Finding
from core.models import Job, Role
from core.services import membership_set
from ml.generators.grow import GrowError, GrowParams, grow_from_clicks
from ml.interactive import interactive_answer, mask_decode
from ml.preannotate import scan_volume
from studies import demo
from tests.annotation.factories import review_case

SPACING_ZYX = (2.5, 3.0, 3.0)
SHAPE_ZYX = (24, 96, 96)


def _phantom():
    """The demo chest phantom as the platform's arrays are: (X, Y, Z), spacing per axis, nodule truth."""
    volume, info = demo.synthetic_chest_ct(shape=SHAPE_ZYX, spacing=SPACING_ZYX)
    xyz = np.transpose(volume, (2, 1, 0)).astype(np.float32)
    spacing = SPACING_ZYX[::-1]
    z, y, x = info["nodule_center_zyx"]
    grids = np.meshgrid(*[np.arange(n) for n in xyz.shape], indexing="ij")
    truth = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, (x, y, z), spacing, strict=True)) <= 7.0**2
    return xyz, spacing, (x, y, z), truth


def _reader(volume):
    return lambda lo, hi: volume[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]


def _paste(result, shape) -> np.ndarray:
    full = np.zeros(shape, bool)
    full[tuple(slice(a, b) for a, b in zip(result.lo, result.hi, strict=True))] = result.mask
    return full


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / max(1, int(a.sum() + b.sum()))


def test_grow_finds_the_phantom_nodule_in_the_shown_window():
    volume, spacing, seed, truth = _phantom()
    for window in ((-160, 240), (-1350, 150)):  # mediastinal, lung
        grown = grow_from_clicks(_reader(volume), volume.shape, spacing, [seed], window=window)
        assert dice(_paste(grown, volume.shape), truth) == 1.0, window
        assert not grown.limited and grown.warnings == [] and grown.seed_values == [30.0]
    # lung window: 30 HU + 0.1 · 1500 is above the window's top: everything brighter looks alike (open range)
    assert grow_from_clicks(_reader(volume), volume.shape, spacing, [seed], window=(-1350, 150)).range == (
        -120.0,
        float("inf"),
    )
    # the lung (-850 HU) grows to the box's limit and says so
    lung = (seed[0] + 8, seed[1], seed[2])
    assert volume[lung] == -850
    leaked = grow_from_clicks(
        _reader(volume),
        volume.shape,
        spacing,
        [lung],
        window=(-1350, 150),
        params=GrowParams(max_radius_mm=30),
    )
    assert leaked.limited and "max_radius_mm" in leaked.warnings[0] and leaked.radius_mm == 30
    assert leaked.voxels_read < volume.size / 4  # the box, not the scan


def test_background_clicks_and_thin_connections_cut_the_region():
    # two 12 mm blobs of 40 HU in air joined by a 6 mm bar, and another joined by a 1 mm thread
    shape, spacing = (80, 60, 20), (1.0, 1.0, 1.0)
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    volume = np.full(shape, -1000.0, np.float32)

    def ball(c, r=6.0):
        return sum((g - v) ** 2 for g, v in zip(grids, c, strict=True)) <= r * r

    left, right, far = (15, 30, 10), (45, 30, 10), (70, 30, 10)
    for c in (left, right, far):
        volume[ball(c)] = 40
    volume[15:45, 27:33, 7:13] = 40  # the bar: 6 × 6 mm
    volume[45:71, 30, 10] = 40  # the thread: one voxel
    read = _reader(volume)
    both = grow_from_clicks(read, shape, spacing, [left], window=(-160, 240))
    grown = _paste(both, shape)
    assert grown[right] and not grown[far], "the bar carries the region, the thread does not"
    cut = _paste(grow_from_clicks(read, shape, spacing, [left], [right], window=(-160, 240)), shape)
    assert cut[left] and not cut[right] and not cut[far]
    assert not cut[35:, :, :].any() and cut[:25].sum() > 0.9 * ball(left)[:25].sum()  # cut halfway
    no_cut = grow_from_clicks(read, shape, spacing, [left], [(5, 5, 5)], window=(-160, 240))
    assert not no_cut.split and no_cut.voxels == both.voxels  # a background click outside: nothing
    with pytest.raises(GrowError) as err:
        grow_from_clicks(read, shape, spacing, [left], [left], window=(-160, 240))
    assert err.value.field == "background"
    with pytest.raises(GrowError) as err:
        grow_from_clicks(read, shape, spacing, [(80, 0, 0)])
    assert err.value.field == "points" and "outside" in err.value.reason


def test_grow_on_a_2d_image_fills_holes():
    image = np.zeros((64, 48), np.float32)
    image[10:40, 10:30] = 200
    image[20:24, 15:19] = 0  # a hole
    grown = grow_from_clicks(_reader(image), image.shape, (0.5, 0.5), [(12, 12)], window=(0, 255))
    assert grown.box == [10, 10, 40, 30] and grown.mask.all()
    kept = grow_from_clicks(
        _reader(image),
        image.shape,
        (0.5, 0.5),
        [(12, 12)],
        window=(0, 255),
        params=GrowParams(fill_holes=False),
    )
    assert kept.voxels == 30 * 20 - 16


def _real_ct(shared_data: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    import pydicom

    files = sorted((shared_data / "ct" / "lungdx-a0002").glob("*.dcm"))
    slices = sorted((pydicom.dcmread(f) for f in files), key=lambda d: float(d.ImagePositionPatient[2]))
    hu = np.stack([d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in slices])
    pixel = [float(v) for v in slices[0].PixelSpacing]
    step = float(slices[1].ImagePositionPatient[2]) - float(slices[0].ImagePositionPatient[2])
    return np.transpose(hu, (2, 1, 0)).astype(np.float32), (pixel[1], pixel[0], step)


def test_grow_on_the_real_ct_leaks_into_the_mediastinum_until_a_background_click(shared_data):
    """Lung_Dx-A0002's right lower lobe mass (slice 12, 8 mm slices) touches the hilum: grown alone in the
    mediastinal window it leaks into heart and mediastinum (limited, with the warning; its 1 mm thread into
    the chest wall is cut); a background click on the heart cuts it there (under a quarter of the voxels
    left) while the mass, as a plain 2D flood fill of its slice finds it, stays."""
    volume, spacing = _real_ct(shared_data)
    mass, heart = (173, 300, 12), (215, 225, 13)  # heart: the hilum's edge of it, 30 mm away
    read = _reader(volume)
    alone = grow_from_clicks(read, volume.shape, spacing, [mass], window=(-160, 240))
    assert alone.limited and alone.warnings and _paste(alone, volume.shape)[heart]
    cut = grow_from_clicks(read, volume.shape, spacing, [mass], [heart], window=(-160, 240))
    region = _paste(cut, volume.shape)
    assert cut.split and not region[heart] and cut.voxels < alone.voxels / 4
    low, high = cut.range
    in_slice = (volume[:, :, 12] >= low) & (volume[:, :, 12] <= high)
    labels, _ = ndimage.label(in_slice)
    flood = labels == labels[mass[:2]]
    flood &= np.hypot(*np.meshgrid(np.arange(512) - 173, np.arange(512) - 300, indexing="ij")) < 40 / 0.65
    assert (region[:, :, 12] & flood).sum() > 0.9 * flood.sum()  # the mass's own slice, 4 cm around the click
    assert region[:, :, 12].sum() * 0.65**2 > 300  # mm² of the mass on its slice
    assert cut.radius_mm == GrowParams().max_radius_mm


# --- the click API ----------------------------------------------------------------------------------------


@pytest.fixture
def nodule_case(project, tmp_path):
    scan = review_case(
        project,
        tmp_path,
        shape=SHAPE_ZYX,
        spacing=SPACING_ZYX,
        findings="A 14 mm nodule in the right upper lobe.",
    )
    finding = Finding.objects.get(project=project, scan=scan)
    _, info = demo.synthetic_chest_ct(shape=SHAPE_ZYX, spacing=SPACING_ZYX)
    z, y, x = info["nodule_center_zyx"]
    stored = scan_volume(scan)
    assert stored.shape == SHAPE_ZYX[::-1] and stored[x, y, z] == 30  # canonical (X, Y, Z)
    return finding, (x, y, z), stored


@pytest.mark.django_db(transaction=True)
def test_a_click_is_answered_by_a_job_with_the_nodule(project, make_user, api_client, nodule_case):
    finding, seed, stored = nodule_case
    people = {}
    for name, role in (("ann", Role.ANNOTATOR), ("ann2", Role.ANNOTATOR), ("rad", Role.RADIOLOGIST)):
        people[name] = make_user(name)
        membership_set(project=project, user=people[name], role=role)
    client = api_client(people["ann"])
    url = reverse("finding-interactive", args=[finding.pk])
    told = client.get(url).json()
    assert told["method"] == "region-grow" and told["model"] is None and told["worker"] == "in-process"
    assert told["region_grow"]["tolerance"] == 0.1

    started = client.post(url, {"points": [list(seed)], "window": [-160, 240]}, format="json")
    assert started.status_code == 202, started.content
    job_id = started.json()["job_id"]
    job = Job.objects.get(pk=job_id)
    assert job.kind == "interactive" and job.status == "succeeded", job.message
    assert job.params["points"] == [list(seed)] and job.params["window"] == [-160.0, 240.0]
    answer = client.get(reverse("finding-interactive-answer", args=[finding.pk, job_id])).json()
    assert answer["status"] == "succeeded" and answer["method"] == "region-grow"
    assert answer["range"] == [-10.0, 70.0] and answer["seed_values"] == [30.0] and not answer["limited"]
    mask = mask_decode(answer["mask"])
    full = np.zeros(stored.shape, bool)
    box = answer["box"]
    full[box[0] : box[3], box[1] : box[4], box[2] : box[5]] = mask
    grids = np.meshgrid(*[np.arange(n) for n in stored.shape], indexing="ij")
    truth = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, seed, SPACING_ZYX[::-1], strict=True)) <= 49
    assert dice(full, truth) == 1.0 and answer["voxels"] == int(truth.sum())
    assert answer["volume_ml"] == pytest.approx(truth.sum() * 22.5 / 1000)
    assert "mask_key" not in answer and answer["seconds"]["total"] > 0

    # the answer is the clicker's alone; radiologists do not click; bad clicks are 400s naming the field
    answer_url = reverse("finding-interactive-answer", args=[finding.pk, job_id])
    assert api_client(people["ann2"]).get(answer_url).status_code == 404
    assert api_client(people["rad"]).post(url, {"points": [list(seed)]}, format="json").status_code == 403
    outside = client.post(url, {"points": [[96, 0, 0]]}, format="json")
    assert outside.status_code == 400 and "outside the scan" in outside.json()["points"]
    both = client.post(url, {"points": [list(seed)], "background": [list(seed)]}, format="json")
    assert both.status_code == 400 and both.json()["field"] == "background"
    bad_window = client.post(url, {"points": [list(seed)], "window": [5, 1]}, format="json")
    assert bad_window.status_code == 400 and bad_window.json()["field"] == "window"
    unknown = client.post(url, {"points": [list(seed)], "params": {"magic": 1}}, format="json")
    assert unknown.status_code == 400 and unknown.json()["field"] == "magic"
    no_model = client.post(url, {"points": [list(seed)], "method": "model"}, format="json")
    assert no_model.status_code == 400 and "no ready interactive model" in no_model.json()["method"]

    # a newer click (with a background click inside the lung: outside the nodule, nothing changes) replaces
    # the older answer's file
    again = client.post(
        url,
        {"points": [list(seed)], "background": [[seed[0] + 6, seed[1], seed[2]]], "window": [-160, 240]},
        format="json",
    ).json()
    newer = client.get(reverse("finding-interactive-answer", args=[finding.pk, again["job_id"]])).json()
    assert newer["voxels"] == answer["voxels"] and not newer["split"]
    assert not default_storage.exists(Job.objects.get(pk=job_id).result["mask_key"])
    assert interactive_answer(Job.objects.get(pk=job_id))["status"] == "gone"


@pytest.mark.django_db(transaction=True)
def test_embedded_clicks_go_to_one_warm_child(
    project, make_user, api_client, nodule_case, settings, tmp_path
):
    """The embedded default: clicks never run in this (the web) process, and one warm child answers them
    all; a child that died is replaced at the next click."""
    import os
    import signal
    import time

    from ml import interactive_worker
    from tests.conftest import sqlite_file_database

    finding, seed, _ = nodule_case
    ann = make_user("ann")
    membership_set(project=project, user=ann, role=Role.ANNOTATOR)
    settings.EMBEDDED_GPU_JOBS_IN_CHILD = True
    client = api_client(ann)
    url = reverse("finding-interactive", args=[finding.pk])

    def start() -> int:
        return client.post(url, {"points": [list(seed)], "window": [-160, 240]}, format="json").json()[
            "job_id"
        ]

    def wait(job_id: int) -> dict:
        answer_url = reverse("finding-interactive-answer", args=[finding.pk, job_id])
        deadline = time.monotonic() + 180
        while (answer := client.get(answer_url).json())["status"] in ("pending", "running"):
            assert time.monotonic() < deadline, "no answer in 180 s"
            time.sleep(0.05)
        assert answer["status"] in ("succeeded", "gone"), answer
        return {**answer, "pid": Job.objects.get(pk=job_id).result.get("pid")}

    with sqlite_file_database(tmp_path):
        try:
            assert client.get(url).json()["worker"] == "stopped"
            assert client.get(url, {"warm": "1"}).json()["worker"] in ("starting", "ready")
            first = wait(start())
            second_id, third_id = start(), start()  # two clicks at once: both answered, one after the other
            second, third = wait(second_id), wait(third_id)
            assert first["voxels"] == third["voxels"] > 0 and second["pid"] == third["pid"]
            assert first["pid"] == second["pid"] == interactive_worker.worker_pid() != os.getpid()
            os.kill(first["pid"], signal.SIGKILL)
            deadline = time.monotonic() + 30
            while interactive_worker.worker_pid() is not None and time.monotonic() < deadline:
                time.sleep(0.05)
            again = wait(start())
            assert (
                again["pid"] not in (None, first["pid"], os.getpid()) and again["voxels"] == first["voxels"]
            )
        finally:
            interactive_worker.worker_stop()
