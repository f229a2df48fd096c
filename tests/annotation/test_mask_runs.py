"""A version's mask as runs (``GET /api/annotations/<id>/mask/?encoding=runs``, the review screen's compact
form): the runs, voxel count and centroid against ``studies.masks`` on the ``lungs`` generator's mask of a
synthetic CT (version 1 of a finding), the stored voxel order kept for a mask whose affine is not RAS (the
screen then falls back to the NIfTI), the same visibility as the NIfTI (one selector), and bad requests."""

import gzip
import io

import nibabel as nib
import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.urls import reverse

from annotation.models import Finding
from annotation.services import findings_from_proposals
from core.models import Role
from core.services import membership_set
from ml.preannotate import preannotate
from studies.masks import (
    mask_centroid,
    mask_decode,
    mask_from_runs,
    mask_index_sums,
    mask_read,
    mask_runs,
    nifti_mask_gz,
)
from tests.annotation.test_review import case  # noqa: F401 - fixture


@pytest.fixture
def lung_version(project, case):  # noqa: F811
    """Version 1 of a finding: the lungs generator's mask (a copy of the region proposal)."""
    Finding.objects.all().delete()
    outcome = preannotate(scan=case, generator="lungs")
    for p in outcome.proposals:
        p.code = "2e"
        p.save()
    findings_from_proposals(project=project)
    return Finding.objects.get(code="2e").annotations.get(version=1)


def _runs(response) -> tuple[bytes, tuple[int, ...]]:
    assert response.status_code == 200, response.content
    assert response["Content-Encoding"] == "gzip" and response["Content-Type"] == "application/octet-stream"
    shape = tuple(int(n) for n in response["X-Mask-Shape"].split(","))
    return gzip.decompress(response.content), shape  # what the browser hands the page


def test_runs_round_trip_a_real_mask(project, lung_version, annotator, api_client):
    stored = mask_read(lung_version.mask.name)
    assert stored.ndim == 3 and 1000 < stored.sum() < stored.size // 2  # a lung, not a toy block
    url = reverse("annotation-mask", args=[lung_version.pk])
    response = api_client(annotator).get(url, {"encoding": "runs"})
    body, shape = _runs(response)
    assert shape == stored.shape
    assert np.array_equal(mask_from_runs(body, shape), stored)
    pairs = np.frombuffer(body, "<u4").reshape(-1, 2)
    assert int(response["X-Mask-Runs"]) == len(pairs) and (pairs[:, 1] > 0).all()
    assert (pairs[1:, 0] > pairs[:-1, 0] + pairs[:-1, 1]).all()  # ascending, never touching
    # the order is the NIfTI's (X fastest): the first run starts at the first set voxel of the stored file
    nifti = gzip.decompress(b"".join(api_client(annotator).get(url, {"encoding": "http"}).streaming_content))
    flat = np.asarray(nib.Nifti1Image.from_bytes(nifti).dataobj).ravel(order="F")
    assert pairs[0, 0] == np.flatnonzero(flat)[0]
    # the count and centroid the screen shows without looping over the voxels
    assert int(response["X-Mask-Voxels"]) == int(stored.sum())
    where = np.nonzero(stored)
    want = [int(np.floor(a.mean() + 0.5)) for a in where]
    assert [int(i) for i in response["X-Mask-Centroid"].split(",")] == want
    assert [int(i) for i in response["X-Mask-Sums"].split(",")] == [int(a.sum()) for a in where]
    # the compact form is far smaller than the NIfTI the screen used to parse
    assert len(response.content) < len(nifti) / 20


def test_runs_keep_the_stored_order_of_a_mask_not_in_ras(project, lung_version, annotator, api_client):
    """A mask stored with another affine (x and y flipped): the runs follow the stored voxels, not RAS (the
    screen flips them into NiiVue's drawing, or loads the NIfTI where NiiVue permutes the axes)."""
    shape = tuple(lung_version.finding.scan.shape)
    mask = np.zeros(shape, bool)
    mask[1:5, 2:4, 0] = True  # asymmetric: a flip would move it
    mask[-1, -1, -1] = True
    key = lung_version.mask.name
    default_storage.delete(key)
    default_storage.save(key, io.BytesIO(nifti_mask_gz(mask, np.diag([-0.7, -0.7, 1.0, 1.0]))))
    response = api_client(annotator).get(
        reverse("annotation-mask", args=[lung_version.pk]), {"encoding": "runs"}
    )
    body, got_shape = _runs(response)
    assert got_shape == shape
    assert np.array_equal(mask_from_runs(body, shape), mask)
    assert np.frombuffer(body, "<u4").reshape(-1, 2)[0].tolist() == [1 + 2 * shape[0], 4]
    assert np.frombuffer(body, "<u4")[-2:].tolist() == [mask.size - 1, 1]
    assert response["X-Mask-Voxels"] == "9" and response["X-Mask-Centroid"] == ",".join(
        str(int(np.floor(a.mean() + 0.5))) for a in np.nonzero(mask)
    )


def test_runs_are_seen_by_whoever_sees_the_nifti(
    project, lung_version, annotator, outsider, make_user, api_client
):
    researcher = make_user("res")
    membership_set(project=project, user=researcher, role=Role.RESEARCHER)
    url = reverse("annotation-mask", args=[lung_version.pk])
    assert lung_version.finding.status != "accepted"  # researchers see accepted findings only
    for user, status in ((annotator, 200), (researcher, 404), (outsider, 404)):
        client = api_client(user)
        assert client.get(url).status_code == status
        assert client.get(url, {"encoding": "runs"}).status_code == status, user.username
    assert api_client(None).get(url, {"encoding": "runs"}).status_code in (401, 403)
    bad = api_client(annotator).get(url, {"encoding": "rle"})
    assert bad.status_code == 400 and "encoding" in bad.json()


def test_runs_codec():
    rng = np.random.default_rng(7)
    for shape in ((5, 4, 3), (7, 6), (1, 1, 1), (64, 33, 9)):
        for p in (0.0, 0.2, 0.9, 1.0):
            mask = rng.random(shape) < p
            runs = mask_runs(mask)
            assert np.array_equal(mask_from_runs(runs.tobytes(), shape), mask)
            n, centre = mask_centroid(mask)
            assert n == int(mask.sum()) and mask_index_sums(mask) == (
                n,
                [int(a.sum()) for a in np.nonzero(mask)],
            )
            assert centre == (None if not n else [int(np.floor(a.mean() + 0.5)) for a in np.nonzero(mask)])
    with pytest.raises(ValueError, match="outside"):
        mask_from_runs(np.array([[10, 5]], "<u4"), (3, 4))
    # a NIfTI read back (Fortran order) gives the same runs as its C-ordered copy
    mask = rng.random((9, 8, 7)) < 0.3
    decoded = mask_decode(nifti_mask_gz(mask, np.eye(4)))
    assert np.array_equal(mask_runs(decoded), mask_runs(np.ascontiguousarray(mask)))
