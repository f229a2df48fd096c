"""The REST API over ingested data: uploads as jobs, scan files (NIfTI, PNG with windows, thumbnail)."""

import io
import zipfile

import nibabel as nib
import numpy as np
import pytest
from django.urls import reverse
from PIL import Image

from core.models import Job
from studies import demo
from studies.ingest.gaze.synthetic import ReflacxSpec, write_reflacx
from studies.models import GazeRecording, Report, Scan

pytestmark = pytest.mark.django_db(transaction=True)  # uploads run their job after commit


@pytest.fixture
def phantom_zip(tmp_path) -> bytes:
    volume, _ = demo.synthetic_chest_ct(shape=(10, 40, 48), spacing=(5.0, 2.0, 2.0))
    files = demo.write_ct_series(tmp_path / "ct", volume, (5.0, 2.0, 2.0), accession="ACC1")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in files:
            zf.write(p, f"ct/{p.name}")
    return buf.getvalue()


def _upload(client, slug, **fields):
    return client.post(reverse("upload-create", args=[slug]), fields, format="multipart")


def test_upload_zip_runs_an_ingest_job(project, manager, api_client, phantom_zip):
    client = api_client(manager)
    response = _upload(client, project.slug, files=[io.BytesIO(phantom_zip)])
    assert response.status_code == 202, response.content
    job = client.get(reverse("job-detail", args=[response.json()["id"]])).json()
    assert job["status"] == "succeeded" and job["progress"] == 1.0
    assert job["counts"]["scans_stored"] == 1
    scan_id = job["result"]["scans"]["stored"][0]["id"]
    detail = client.get(reverse("scan-detail", args=[scan_id])).json()
    assert detail["shape"] == [48, 40, 10] and detail["modality"] == "CT"
    assert detail["links"]["nifti"] == reverse("scan-nifti", args=[scan_id])
    # the uploaded files are removed from storage once ingested
    from django.core.files.storage import default_storage

    upload_key = Job.objects.get(pk=job["id"]).params["upload_keys"][0]
    assert upload_key.startswith(f"projects/{project.slug}/uploads/") and not default_storage.exists(
        upload_key
    )


def test_upload_with_report_csv_and_gaze_archive(project, manager, api_client, phantom_zip, tmp_path):
    csv = b"accession,findings,impression\nACC1,Nodule in the right upper lobe.,Nodule.\n"
    root = write_reflacx(tmp_path / "gaze", recordings=[ReflacxSpec(id="P102R000009", dicom_id="nomatch")])
    gaze = io.BytesIO()
    with zipfile.ZipFile(gaze, "w") as zf:
        for p in root.rglob("*"):
            if p.is_file():
                zf.write(p, p.relative_to(root))
    gaze.seek(0)
    response = _upload(
        api_client(manager),
        project.slug,
        files=[io.BytesIO(phantom_zip)],
        reports=io.BytesIO(csv),
        report_id_column="accession",
        report_link="accession",
        gaze=gaze,
        gaze_format="reflacx",
    )
    assert response.status_code == 202
    job = Job.objects.get(pk=response.json()["id"])
    assert job.status == "succeeded", job.message
    report = Report.objects.get(project=project)
    assert report.study == Scan.objects.get(project=project).study
    assert GazeRecording.objects.get(project=project).external_id == "P102R000009"


def test_upload_over_the_limit_is_413_and_stores_nothing(project, manager, api_client, phantom_zip, settings):
    settings.UPLOAD_MAX_BYTES = 1000
    response = _upload(api_client(manager), project.slug, files=[io.BytesIO(phantom_zip)])
    assert response.status_code == 413 and "upload limit" in response.json()["detail"]
    assert Job.objects.count() == 0 and Scan.objects.count() == 0


def test_upload_of_bad_files_finishes_with_per_file_errors(project, manager, api_client):
    response = _upload(api_client(manager), project.slug, files=[io.BytesIO(b"not dicom at all")])
    job = Job.objects.get(pk=response.json()["id"])
    assert job.status == "succeeded" and job.counts["scans_errors"] == 1 and job.counts["scans_stored"] == 0
    assert job.errors[0]["part"] == "scans" and job.errors[0]["reason"]


def test_empty_upload_is_400(project, manager, api_client):
    response = _upload(api_client(manager), project.slug)
    assert response.status_code == 400


@pytest.fixture
def ct_scan(project, tmp_path):
    from studies.services.scans import scans_ingest

    volume, _ = demo.synthetic_chest_ct(shape=(10, 40, 48), spacing=(5.0, 2.0, 2.0))
    demo.write_ct_series(tmp_path / "ct", volume, (5.0, 2.0, 2.0))
    summary = scans_ingest(project=project, paths=[tmp_path / "ct"])
    return Scan.objects.get(pk=summary.stored[0]["id"])


def test_nifti_download_matches_the_stored_volume(manager, api_client, ct_scan, tmp_path):
    response = api_client(manager).get(reverse("scan-nifti", args=[ct_scan.pk]))
    assert response.status_code == 200 and response["Content-Type"] == "application/octet-stream"
    assert response["Content-Disposition"] == f'inline; filename="scan-{ct_scan.pk}.nii"'
    path = tmp_path / "dl.nii"
    path.write_bytes(b"".join(response.streaming_content))
    image = nib.load(path)
    assert list(image.shape) == ct_scan.shape and np.allclose(image.affine, ct_scan.affine, atol=1e-4)


@pytest.mark.parametrize(
    ("query", "size"),
    [({}, (48, 40)), ({"axis": "coronal"}, (48, 10)), ({"axis": "sagittal", "index": 3}, (40, 10))],
)
def test_slice_png_in_three_orientations(manager, api_client, ct_scan, query, size):
    response = api_client(manager).get(reverse("scan-png", args=[ct_scan.pk]), {**query, "window": "lung"})
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    assert image.mode == "L" and image.size == size


def test_window_changes_the_rendering(manager, api_client, ct_scan):
    client = api_client(manager)
    url = reverse("scan-png", args=[ct_scan.pk])
    lung = np.asarray(Image.open(io.BytesIO(client.get(url, {"window": "lung"}).content)))
    bone = np.asarray(Image.open(io.BytesIO(client.get(url, {"center": 400, "width": 1800}).content)))
    assert lung.shape == bone.shape and not np.array_equal(lung, bone)


@pytest.mark.parametrize(
    ("query", "field"),
    [({"axis": "oblique"}, "axis"), ({"index": 99}, "index"), ({"window": "liver"}, "window"),
     ({"center": 40}, "width"), ({"index": "x"}, "index")],
)  # fmt: skip
def test_bad_slice_queries_name_the_field(manager, api_client, ct_scan, query, field):
    response = api_client(manager).get(reverse("scan-png", args=[ct_scan.pk]), query)
    assert response.status_code == 400 and field in response.json()


def test_thumbnail(manager, api_client, ct_scan):
    response = api_client(manager).get(reverse("scan-thumbnail", args=[ct_scan.pk]))
    assert response.status_code == 200
    assert max(Image.open(io.BytesIO(b"".join(response.streaming_content))).size) <= 256


def test_list_filters(project, manager, api_client, ct_scan):
    client = api_client(manager)
    assert client.get(reverse("scan-list"), {"modality": "ct"}).json()["count"] == 1
    assert client.get(reverse("scan-list"), {"modality": "MR"}).json()["count"] == 0
    assert client.get(reverse("scan-list"), {"study": ct_scan.study_id, "ndim": 3}).json()["count"] == 1
    assert client.get(reverse("scan-list"), {"study": "abc"}).status_code == 400
    patients = client.get(reverse("patient-list"), {"project": project.slug}).json()
    assert patients["results"][0]["study_count"] == 1


def test_gzip_canonical_files_when_configured(project, manager, api_client, tmp_path, settings):
    from studies.services.scans import scans_ingest

    settings.CANONICAL_NIFTI_GZIP = True
    volume, _ = demo.synthetic_chest_ct(shape=(6, 32, 40), spacing=(5.0, 2.0, 2.0))
    demo.write_ct_series(tmp_path / "ct", volume, (5.0, 2.0, 2.0))
    scan = Scan.objects.get(pk=scans_ingest(project=project, paths=[tmp_path / "ct"]).stored[0]["id"])
    assert scan.file.name.endswith("/image.nii.gz")
    response = api_client(manager).get(reverse("scan-nifti", args=[scan.pk]))
    assert response["Content-Type"] == "application/gzip"
    path = tmp_path / "dl.nii.gz"
    path.write_bytes(b"".join(response.streaming_content))
    assert np.array_equal(np.asarray(nib.load(path).dataobj), volume.transpose(2, 1, 0))
    png = api_client(manager).get(reverse("scan-png", args=[scan.pk]), {"axis": "coronal"})
    assert Image.open(io.BytesIO(png.content)).size == (40, 6)
