"""The scan NIfTI with ``?encoding=http`` (the review screen): a stored ``.nii.gz`` is sent as its stored
bytes with ``Content-Encoding: gzip`` (the browser inflates it), a ``.nii`` as it is."""

import gzip

import nibabel as nib
import numpy as np
from django.urls import reverse

from studies import demo
from studies.models import Scan
from studies.services.scans import scans_ingest


def _ingest(project, folder):
    volume, _ = demo.synthetic_chest_ct(shape=(6, 32, 40), spacing=(5.0, 2.0, 2.0))
    demo.write_ct_series(folder / "ct", volume, (5.0, 2.0, 2.0))
    stored = scans_ingest(project=project, paths=[folder / "ct"]).stored
    return Scan.objects.get(pk=stored[0]["id"]), volume


def test_gzip_store_is_sent_for_the_browser_to_inflate(project, manager, api_client, tmp_path, settings):
    settings.CANONICAL_NIFTI_GZIP = True
    scan, volume = _ingest(project, tmp_path)
    url = reverse("scan-nifti", args=[scan.pk])
    response = api_client(manager).get(url, {"encoding": "http"})
    assert response.status_code == 200
    assert response["Content-Encoding"] == "gzip" and response["Content-Type"] == "application/octet-stream"
    assert f'filename="scan-{scan.pk}.nii"' in response["Content-Disposition"]
    body = b"".join(response.streaming_content)
    plain = gzip.decompress(body)  # what the browser hands the page
    assert int.from_bytes(plain[:4], "little") == 348  # a NIfTI-1 header, not another gzip layer
    path = tmp_path / "dl.nii"
    path.write_bytes(plain)
    assert np.array_equal(np.asarray(nib.load(path).dataobj), volume.transpose(2, 1, 0))
    # without the parameter: the .nii.gz file as it is
    plain_response = api_client(manager).get(url)
    assert "Content-Encoding" not in plain_response and plain_response["Content-Type"] == "application/gzip"


def test_uncompressed_store_is_sent_as_it_is(project, manager, api_client, tmp_path, settings):
    settings.CANONICAL_NIFTI_GZIP = False
    scan, _ = _ingest(project, tmp_path)
    response = api_client(manager).get(reverse("scan-nifti", args=[scan.pk]), {"encoding": "http"})
    assert response.status_code == 200 and "Content-Encoding" not in response
    body = b"".join(response.streaming_content)
    assert int.from_bytes(body[:4], "little") == 348
