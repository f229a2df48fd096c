"""Real-world DICOM that other readers accept: anonymised series whose UIDs and PatientID are empty, random
bytes after a DICOM preamble, a CT sent as one upload part per slice, a zip with a corrupt member.

The anonymised series are the real CT series of ``../shared/data`` (``ct/lungdx-a0002``) with the UID
attributes and PatientID blanked by pydicom in a temporary copy; SimpleITK's ImageSeriesReader (GDCM)
reads the same files as the reference."""

import gzip
import io
import json
import os
import resource
import struct
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from django.core.files.storage import default_storage
from django.urls import reverse

from core.models import Job
from studies import pseudonyms
from studies.ingest.dicom import dicom_read_headers
from studies.models import Patient, Scan, ScanSource, Study
from studies.services.scans import scans_ingest
from tests.studies.dicom_factories import write_series

CT_SERIES = "ct/lungdx-a0002"
BLANKED = ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "PatientID")
FALLBACKS = (
    "SOPInstanceUID empty",
    "SeriesInstanceUID empty",
    "StudyInstanceUID empty",
    "PatientID empty",
)


def ct_paths(shared_data: Path) -> list[Path]:
    paths = sorted((shared_data / CT_SERIES).glob("*.dcm"))
    assert len(paths) == 30
    return paths


def anonymise(paths: list[Path], folder: Path, *, blank_file_meta: bool = False, **changes) -> list[Path]:
    """Copies of ``paths`` in ``folder`` with SOP/Series/Study Instance UIDs and PatientID present but
    empty (and, with ``blank_file_meta``, the file meta's MediaStorageSOPInstanceUID too)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for path in paths:
        ds = pydicom.dcmread(path)
        for keyword in BLANKED:
            setattr(ds, keyword, "")
        if blank_file_meta:
            ds.file_meta.MediaStorageSOPInstanceUID = ""
        for keyword, value in changes.items():
            setattr(ds, keyword, value)
        ds.save_as(folder / path.name)
        out.append(folder / path.name)
    return out


def sitk_read(folder: Path) -> sitk.Image:
    """The series SimpleITK finds in ``folder``: GDCM names the anonymised one by its empty UID."""
    reader = sitk.ImageSeriesReader()
    assert reader.GetGDCMSeriesIDs(str(folder)) == ("",)
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), ""))
    return reader.Execute()


def stored_voxels(scan: Scan) -> np.ndarray:
    return np.asarray(nib.load(default_storage.path(scan.file.name)).dataobj)


def noise_file(path: Path, size: int, seed: int) -> Path:
    """A 128-byte preamble and 'DICM', then random bytes."""
    path.write_bytes(b"\0" * 128 + b"DICM" + np.random.default_rng(seed).bytes(size))
    return path


# --- anonymised series ---------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "worker-processes"])
def test_an_anonymised_real_ct_is_stored_as_simpleitk_reads_it(
    project, shared_data, tmp_path, manager, api_client, workers
):
    folder = tmp_path / "anon"
    anonymise(ct_paths(shared_data), folder)
    reference = sitk_read(folder)

    summary = scans_ingest(project=project, paths=[folder], workers=workers)

    assert summary.errors == [] and len(summary.stored) == 1
    scan = Scan.objects.get()
    assert scan.shape == [512, 512, 30] and ScanSource.objects.filter(scan=scan).count() == 30
    # the same voxels as SimpleITK: ours (X, Y, Z), SimpleITK's array (Z, Y, X), both Z along the normal
    assert np.array_equal(stored_voxels(scan).transpose(2, 1, 0), sitk.GetArrayFromImage(reference))
    assert scan.spacing == pytest.approx(list(reference.GetSpacing()))
    affine = np.asarray(scan.affine)
    for ijk in [(0, 0, 0), (511, 0, 0), (0, 511, 29), (511, 511, 29)]:
        lps = reference.TransformIndexToPhysicalPoint(ijk)
        ras = affine @ np.array([*ijk, 1.0])
        assert ras[:3] == pytest.approx([-lps[0], -lps[1], lps[2]], abs=1e-3)
    # each fallback listed on the stored series, and shown by the API
    for fallback in FALLBACKS:
        assert any(w.startswith(fallback) for w in scan.warnings), (fallback, scan.warnings)
    assert any("MediaStorageSOPInstanceUID used" in w for w in scan.warnings)
    detail = api_client(manager).get(reverse("scan-detail", args=[scan.pk])).json()
    assert detail["warnings"] == scan.warnings
    # one study and one patient of its own, with a pseudonym not shared by every file without a PatientID
    study = Study.objects.get()
    patient = Patient.objects.get()
    assert study.patient == patient and scan.study == study
    nobody = pseudonyms.patient_pseudonym(pseudonyms.patient_identity_hash(project.deid_secret, ""))
    assert patient.pseudonym.startswith("P") and patient.pseudonym != nobody
    # the stored, de-identified header holds the series UID the scan has, and the pseudonym
    with default_storage.open(scan.meta["header_file"]) as fh:
        header = json.loads(gzip.decompress(fh.read()))
    assert header["0020000E"]["Value"] == [scan.series_uid]
    assert header["0020000D"]["Value"] == [study.study_uid]
    assert header["00100020"]["Value"] == [patient.pseudonym]


@pytest.mark.django_db
def test_without_any_instance_uid_each_file_gets_one_from_its_content_and_re_ingest_stores_nothing(
    project, shared_data, tmp_path
):
    folder = tmp_path / "anon"
    anonymise(ct_paths(shared_data), folder, blank_file_meta=True)

    first = scans_ingest(project=project, paths=[folder], workers=1)
    again = scans_ingest(project=project, paths=[folder], workers=1)

    assert first.errors == [] and len(first.stored) == 1
    scan = Scan.objects.get()
    assert scan.shape == [512, 512, 30]
    assert any("derived from each file's content (sha256)" in w for w in scan.warnings)
    sops = list(ScanSource.objects.values_list("sop_uid", flat=True))
    assert len(set(sops)) == 30 and all(sops)
    assert again.stored == [] and again.errors == []
    assert again.duplicates == [
        {"file": again.duplicates[0]["file"], "scan_id": scan.pk, "reason": "already stored"}
    ]
    assert Scan.objects.count() == 1 and ScanSource.objects.count() == 30 and Study.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "worker-processes"])
def test_anonymised_series_in_one_folder_tree_are_told_apart(project, shared_data, tmp_path, workers):
    ct = ct_paths(shared_data)
    root = tmp_path / "export"
    # folder a: the whole CT (series number 3) and ten of its slices as series 5; folder b: fifteen
    # slices with every shared attribute of the first, in another folder
    anonymise(ct, root / "a", blank_file_meta=True)
    anonymise(ct[:10], root / "a" / "tmp", blank_file_meta=True, SeriesNumber=5, SeriesDescription="MIP")
    for p in (root / "a" / "tmp").iterdir():
        p.rename(root / "a" / f"mip-{p.name}")
    (root / "a" / "tmp").rmdir()
    anonymise(ct[::2], root / "b", blank_file_meta=True, ImageComments="second export")

    summary = scans_ingest(project=project, paths=[root], workers=workers)

    assert summary.errors == []
    assert sorted(s["shape"][2] for s in summary.stored) == [10, 15, 30]
    assert Study.objects.count() == 3 and Patient.objects.count() == 3
    assert len(set(Patient.objects.values_list("pseudonym", flat=True))) == 3
    assert ScanSource.objects.count() == 55
    again = scans_ingest(project=project, paths=[root], workers=workers)
    assert again.stored == [] and len(again.duplicates) == 3 and Scan.objects.count() == 3


# --- random bytes after a DICOM preamble -------------------------------------------------------------


@pytest.mark.parametrize("size", [16, 1000, 64 * 1024])
@pytest.mark.parametrize("seed", range(4))
def test_random_bytes_after_a_dicm_preamble_are_not_a_readable_dicom_file(tmp_path, size, seed):
    path = noise_file(tmp_path / "noise.dcm", size, seed)
    files, errors = dicom_read_headers([path])
    assert files == [] and len(errors) == 1
    assert errors[0].file == str(path)
    assert errors[0].reason.startswith("not a readable DICOM file (") and "UID" not in errors[0].reason


@pytest.mark.django_db
def test_a_noise_file_beside_an_anonymised_series_is_named_and_the_series_stored(
    project, shared_data, tmp_path
):
    folder = tmp_path / "anon"
    anonymise(ct_paths(shared_data), folder)
    noise_file(folder / "1-31.dcm", 20_000, seed=7)
    summary = scans_ingest(project=project, paths=[folder], workers=1)
    assert [s["shape"] for s in summary.stored] == [[512, 512, 30]]
    [error] = summary.errors
    assert Path(error["file"]).name == "1-31.dcm" and error["reason"].startswith(
        "not a readable DICOM file ("
    )


# --- uploads through the API -----------------------------------------------------------------------------


def _upload(client, slug, **fields):
    return client.post(reverse("upload-create", args=[slug]), fields, format="multipart")


def _parts(paths: list[Path]) -> list[io.BytesIO]:
    parts = []
    for path in paths:
        part = io.BytesIO(path.read_bytes())
        part.name = path.name
        parts.append(part)
    return parts


@pytest.fixture
def slices_255(tmp_path) -> list[Path]:
    """A CT of 255 slices of 16 x 16 pixels, one file per slice (pydicom-written)."""
    return write_series(tmp_path / "ct255", n=255, rows=16, cols=16, step=1.25)


@pytest.mark.django_db(transaction=True)
def test_a_ct_sent_as_255_file_parts_is_one_255_slice_series(project, manager, api_client, slices_255):
    response = _upload(api_client(manager), project.slug, files=_parts(slices_255))

    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert job.status == "succeeded", job.message
    assert job.counts["scans_stored"] == 1 and job.errors == []
    scan = Scan.objects.get()
    assert scan.shape == [16, 16, 255] and ScanSource.objects.filter(scan=scan).count() == 255


@pytest.mark.django_db(transaction=True)
def test_file_parts_hold_no_descriptor_while_the_request_is_read(project, manager, api_client, slices_255):
    """A server whose process may open few files (a common soft limit is 1,024) still takes a request of
    many more parts than that: here 255 parts with room for 100 more descriptors than are open now."""
    parts = _parts(slices_255)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 100, hard))
    try:
        response = _upload(api_client(manager), project.slug, files=parts)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert response.status_code == 202, response.content
    assert Job.objects.get(pk=response.json()["id"]).counts["scans_stored"] == 1


@pytest.mark.django_db(transaction=True)
def test_more_files_than_the_limit_is_413_naming_files(project, manager, api_client, settings, slices_255):
    settings.UPLOAD_MAX_FILES = 200
    response = _upload(api_client(manager), project.slug, files=_parts(slices_255))
    assert response.status_code == 413, response.content
    assert response.json()["field"] == "files" and "UPLOAD_MAX_FILES" in response.json()["detail"]
    assert Job.objects.count() == 0 and Scan.objects.count() == 0


@pytest.mark.django_db
def test_other_endpoints_keep_the_limit_of_100_files(project, manager, api_client):
    """Only the scan upload takes thousands of parts: another multipart endpoint (model registration)
    refuses the 101st."""
    parts = [io.BytesIO(b"x") for _ in range(101)]
    for i, part in enumerate(parts):
        part.name = f"model{i}.pt"
    response = api_client(manager).post(
        reverse("project-models", args=[project.slug]), {"file": parts, "name": "m"}, format="multipart"
    )
    assert response.status_code == 413, response.content
    assert response.json()["field"] == "files" and "REQUEST_MAX_FILES" in response.json()["detail"]


# --- a zip with corrupt members --------------------------------------------------------------------------


def _corrupt_crc(data: bytes, member: str) -> bytes:
    """``data`` (a zip) with one byte of ``member``'s compressed data changed: it fails its CRC-32."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        info = zf.getinfo(member)
    out = bytearray(data)
    (name_len, extra_len) = struct.unpack_from("<HH", out, info.header_offset + 26)
    start = info.header_offset + 30 + name_len + extra_len
    out[start + info.compress_size // 2] ^= 0xFF
    return bytes(out)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "worker-processes"])
def test_a_zip_with_corrupt_members_stores_every_other_unit_and_lists_them(
    project, manager, api_client, shared_data, tmp_path, settings, workers
):
    settings.INGEST_WORKERS = workers
    ct = ct_paths(shared_data)
    phantom = write_series(tmp_path / "phantom", n=6)
    cut = tmp_path / "cut.dcm"  # a slice of another series, cut short after its header
    ds = pydicom.dcmread(ct[0])
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(cut)
    cut.write_bytes(cut.read_bytes()[:3000])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in ct:
            zf.write(p, f"ct/{p.name}")
        for p in phantom:
            zf.write(p, f"phantom/{p.name}")
        zf.write(ct[5], "bad/crc.dcm")
        zf.writestr("bad/noise.dcm", b"\0" * 128 + b"DICM" + np.random.default_rng(3).bytes(40_000))
        zf.write(cut, "bad/cut.dcm")
    upload = io.BytesIO(_corrupt_crc(buf.getvalue(), "bad/crc.dcm"))
    upload.name = "export.zip"

    response = _upload(api_client(manager), project.slug, files=[upload])

    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert job.status == "succeeded", job.message
    assert sorted(Scan.objects.values_list("shape", flat=True)) == [[32, 24, 6], [512, 512, 30]]
    errors = {e["file"].split("!")[-1] if "!" in e["file"] else e["file"]: e for e in job.errors}
    named = {name for name in errors if name.startswith("bad/") or "/bad/" in name}
    assert len(job.errors) == 3 and len(named) == 3, job.errors
    by_member = {name.rsplit("bad/", 1)[1]: errors[name] for name in named}
    for member, error in by_member.items():  # named as inside the archive, wherever it was read
        assert error["file"].endswith(f"export.zip!bad/{member}"), error
    assert "corrupt zip member" in by_member["crc.dcm"]["reason"] and "CRC" in by_member["crc.dcm"]["reason"]
    assert by_member["noise.dcm"]["reason"].startswith("not a readable DICOM file (")
    assert "truncated" in by_member["cut.dcm"]["reason"]
    assert "Traceback" not in json.dumps(job.errors) + (job.message or "")
