"""Ingest and the API on S3-compatible object storage (moto's server on loopback)."""

import gzip
import io
import zipfile

import nibabel as nib
import numpy as np
import pytest
from django.urls import reverse
from PIL import Image

from core.models import Job
from studies import demo
from studies.models import Scan
from studies.services.scans import scans_ingest


@pytest.fixture
def phantom(tmp_path):
    volume, _ = demo.synthetic_chest_ct(shape=(8, 32, 40), spacing=(5.0, 2.0, 2.0))
    return demo.write_ct_series(tmp_path / "ct", volume, (5.0, 2.0, 2.0))


@pytest.mark.django_db
def test_ingest_stores_canonical_files_in_the_bucket(
    project, manager, api_client, s3_storage, phantom, tmp_path
):
    summary = scans_ingest(project=project, paths=[phantom[0].parent])
    scan = Scan.objects.get(pk=summary.stored[0]["id"])
    keys = s3_storage.keys()
    assert scan.file.name in keys and scan.thumbnail.name in keys and scan.meta["header_file"] in keys
    assert not list((tmp_path / "media").rglob("*.nii"))  # nothing on the local disk
    stored = tmp_path / "from-bucket.nii"
    stored.write_bytes(s3_storage.read(scan.file.name))
    assert list(nib.load(stored).shape) == [40, 32, 8]
    assert b"DEMO^SYNTHETIC" not in gzip.decompress(s3_storage.read(scan.meta["header_file"]))

    client = api_client(manager)
    body = b"".join(client.get(reverse("scan-nifti", args=[scan.pk])).streaming_content)
    assert body == s3_storage.read(scan.file.name)
    png = client.get(reverse("scan-png", args=[scan.pk]), {"window": "lung"})
    assert Image.open(io.BytesIO(png.content)).size == (40, 32)


@pytest.mark.django_db
def test_failed_series_leaves_nothing_in_the_bucket(project, s3_storage, phantom, monkeypatch):
    from studies.services import scan_store

    def broken(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(scan_store.ScanSource.objects, "bulk_create", broken)
    with pytest.raises(RuntimeError):
        scans_ingest(project=project, paths=[phantom[0].parent])
    assert s3_storage.keys() == [] and Scan.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_upload_job_on_object_storage(project, manager, api_client, s3_storage, phantom):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in phantom:
            zf.write(p, p.name)
    buf.seek(0)
    response = api_client(manager).post(
        reverse("upload-create", args=[project.slug]), {"files": [buf]}, format="multipart"
    )
    job = Job.objects.get(pk=response.json()["id"])
    assert job.status == "succeeded", job.message
    keys = s3_storage.keys()
    assert not [k for k in keys if "/uploads/" in k]  # upload objects removed after ingest
    scan = Scan.objects.get()
    assert scan.file.name in keys and np.array(scan.affine).shape == (4, 4)
