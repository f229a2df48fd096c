"""End-to-end scan ingest: CLI and service on real and generated files, de-identification, idempotence,
and bad input that leaves nothing behind."""

import datetime
import gzip
import json
import shutil
import zipfile
from io import StringIO
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from django.core.management import call_command
from pydicom.data import get_testdata_file

from studies import demo
from studies.models import Patient, PatientIdentity, Scan, ScanSource, Study
from studies.services.scans import scans_ingest

pytestmark = pytest.mark.django_db


def _media_files(root) -> list[Path]:
    return [p for p in Path(root).rglob("*") if p.is_file() and ".scratch" not in p.parts]


def _ingest_json(*args) -> dict:
    out = StringIO()
    call_command("ingest", *map(str, args), "--json", stdout=out)
    return json.loads(out.getvalue())


@pytest.fixture
def phantom_series(tmp_path) -> Path:
    volume, _ = demo.synthetic_chest_ct(shape=(12, 40, 48), spacing=(5.0, 2.0, 2.0))
    demo.write_ct_series(tmp_path / "phantom", volume, (5.0, 2.0, 2.0), shuffle_instance_numbers=True)
    return tmp_path / "phantom"


def test_cli_ingests_real_ct_series_with_json_summary(project, shared_data, _media_root):
    series = shared_data / "ct" / "lungdx-a0002"
    summary = _ingest_json(series, "--project", project.slug)
    stored = summary["scans"]["stored"]
    assert len(stored) == 1 and summary["scans"]["errors"] == []
    s = stored[0]
    assert s["modality"] == "CT" and s["shape"] == [512, 512, 30]
    assert s["spacing"] == pytest.approx([0.6465, 0.6465, 8.0], abs=1e-3)
    assert np.array(s["affine"]).shape == (4, 4)
    image = nib.load(Path(_media_root) / s["file"])
    assert np.allclose(image.affine, s["affine"], atol=1e-4)
    data = np.asarray(image.dataobj)
    assert data.min() == -1024 and data.max() == 1548  # HU, as the data README says

    # de-identified: pseudonym, shifted date, no original identifiers in the stored header
    original = pydicom.dcmread(sorted(series.glob("*.dcm"))[0], stop_before_pixels=True)
    scan = Scan.objects.get(pk=s["id"])
    patient = scan.study.patient
    assert patient.pseudonym != str(original.PatientID) and patient.pseudonym.startswith("P")
    shift = patient.date_shift_days
    assert -1095 <= shift <= -1
    assert scan.study.study_date == pydicom.valuerep.DA(original.StudyDate) + datetime.timedelta(shift)
    assert scan.series_uid != original.SeriesInstanceUID and scan.study.study_uid != original.StudyInstanceUID
    header_text = gzip.decompress((Path(_media_root) / scan.meta["header_file"]).read_bytes()).decode()
    for value in (
        original.PatientID,
        str(original.PatientName),
        original.StudyInstanceUID,
        original.SOPInstanceUID,
    ):
        if value:
            assert value not in header_text
    assert not PatientIdentity.objects.exists()  # the project keeps no identity map
    assert ScanSource.objects.filter(scan=scan).count() == 30


def test_reingest_is_idempotent(project, phantom_series, _media_root):
    first = scans_ingest(project=project, paths=[phantom_series])
    files_before = sorted(_media_files(_media_root))
    again = scans_ingest(project=project, paths=[phantom_series])
    assert len(first.stored) == 1 and again.stored == [] and len(again.duplicates) == 1
    assert again.duplicates[0]["scan_id"] == first.stored[0]["id"]
    assert Scan.objects.count() == 1 and Patient.objects.count() == 1 and Study.objects.count() == 1
    assert sorted(_media_files(_media_root)) == files_before


def test_slices_are_ordered_by_position_not_instance_number(project, phantom_series, _media_root):
    summary = scans_ingest(project=project, paths=[phantom_series])
    data = np.asarray(nib.load(Path(_media_root) / summary.stored[0]["file"]).dataobj)
    volume, _ = demo.synthetic_chest_ct(shape=(12, 40, 48), spacing=(5.0, 2.0, 2.0))
    # canonical axes (X=column, Y=row, Z=slice) vs the phantom's (Z, Y, X)
    assert np.array_equal(data, volume.transpose(2, 1, 0))


def test_one_pseudonym_and_date_shift_per_patient_and_identity_map(project, tmp_path, settings):
    project.keep_identity_map = True
    project.save(update_fields=["keep_identity_map"])
    volume, _ = demo.synthetic_chest_ct(shape=(6, 32, 32), spacing=(5.0, 2.0, 2.0))
    demo.write_ct_series(tmp_path / "a", volume, (5.0, 2.0, 2.0), patient_id="MRN1", accession="A1")
    demo.write_ct_series(tmp_path / "b", volume, (5.0, 2.0, 2.0), patient_id="MRN1", accession="A2")
    demo.write_ct_series(tmp_path / "c", volume, (5.0, 2.0, 2.0), patient_id="MRN2", accession="A3")
    summary = scans_ingest(project=project, paths=[tmp_path])
    assert len(summary.stored) == 3
    assert Patient.objects.count() == 2 and Study.objects.count() == 3
    p1 = Patient.objects.get(identity__original_id="MRN1")
    assert p1.studies.count() == 2 and p1.identity.original_name == "DEMO^SYNTHETIC"
    assert len({s.study_date for s in p1.studies.all()}) == 1


def test_bad_files_in_a_folder_are_skipped_and_listed(project, phantom_series, _media_root):
    shutil.copy(get_testdata_file("MR_truncated.dcm"), phantom_series / "truncated.dcm")
    (phantom_series / "notes.txt").write_text("not an image")
    summary = scans_ingest(project=project, paths=[phantom_series])
    assert len(summary.stored) == 1
    failed = {Path(e["file"]).name for e in summary.errors}
    assert {"truncated.dcm", "notes.txt"} <= failed
    assert all(e["reason"] for e in summary.errors)


def _rewrite(path: Path, **changes) -> None:
    ds = pydicom.dcmread(path)
    for key, value in changes.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    ds.save_as(path)


@pytest.mark.parametrize("breakage", ["missing_pixels", "mixed_size"])
def test_broken_series_leaves_no_rows_and_no_files(project, phantom_series, _media_root, breakage):
    victim = sorted(phantom_series.glob("*.dcm"))[3]
    if breakage == "missing_pixels":
        _rewrite(victim, PixelData=None)
    else:
        ds = pydicom.dcmread(victim)
        ds.Rows, ds.Columns = 20, 24
        ds.PixelData = np.zeros((20, 24), np.uint16).tobytes()
        ds.save_as(victim)
    summary = scans_ingest(project=project, paths=[phantom_series])
    assert summary.stored == [] and len(summary.errors) == 1
    assert victim.name in json.dumps(summary.errors[0]) and summary.errors[0]["reason"]
    assert Scan.objects.count() == 0 and ScanSource.objects.count() == 0 and Patient.objects.count() == 0
    assert _media_files(_media_root) == []


def test_store_failure_rolls_back_rows_and_files(project, phantom_series, _media_root, monkeypatch):
    from studies.services import scan_store

    def broken_bulk_create(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(scan_store.ScanSource.objects, "bulk_create", broken_bulk_create)
    with pytest.raises(RuntimeError):
        scans_ingest(project=project, paths=[phantom_series])
    assert Scan.objects.count() == 0 and Study.objects.count() == 0
    assert _media_files(_media_root) == []


def test_zip_with_escaping_member_stores_nothing(project, phantom_series, tmp_path, _media_root):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(phantom_series.glob("*.dcm")):
            zf.write(p, f"series/{p.name}")
        zf.writestr("../../escape.dcm", b"x")
    summary = scans_ingest(project=project, paths=[archive])
    assert summary.stored == [] and "escapes" in summary.errors[0]["reason"]
    assert Scan.objects.count() == 0 and not (tmp_path.parent / "escape.dcm").exists()


def test_zip_archive_of_series_is_ingested(project, phantom_series, tmp_path):
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(phantom_series.glob("*.dcm")):
            zf.write(p, f"study/series/{p.name}")
    summary = scans_ingest(project=project, paths=[archive])
    assert len(summary.stored) == 1 and summary.stored[0]["shape"] == [48, 40, 12]


def test_packaged_radiograph_ct_and_mr(project, _media_root):
    summary = scans_ingest(project=project, paths=demo.packaged_scans(), workers=2)
    by_modality = {s["modality"]: s for s in summary.stored}
    assert set(by_modality) == {"CR", "CT", "MR"}, summary.errors
    cr = by_modality["CR"]
    assert cr["shape"] == [1841, 1955] and cr["name"] == "RG1_UNCR"
    assert len(cr["spacing"]) == 2
    assert Scan.objects.get(pk=cr["id"]).ndim == 2


def test_nifti_png_and_jpeg_files(project, tmp_path, shared_data):
    tmp_path = tmp_path / "in"  # not the media folder
    tmp_path.mkdir()
    nib_data = Path(nib.__file__).parent / "tests" / "data"
    shutil.copy(nib_data / "anatomical.nii", tmp_path / "anatomical.nii")
    shutil.copy(shared_data / "cxr" / "iu" / "CXR7_IM-2263-1001.png", tmp_path)
    shutil.copy(shared_data / "cxr" / "iu" / "CXR7_IM-2263-2001.png", tmp_path)
    from PIL import Image

    Image.open(tmp_path / "CXR7_IM-2263-1001.png").convert("L").save(
        tmp_path / "CXR9_IM-1-1001.jpg", quality=90
    )
    summary = scans_ingest(project=project, paths=[tmp_path], study_pattern=r"CXR(\d+)_")
    assert summary.errors == []
    names = {s["name"]: s for s in summary.stored}
    assert set(names) == {"anatomical", "CXR7_IM-2263-1001", "CXR7_IM-2263-2001", "CXR9_IM-1-1001"}
    assert names["anatomical"]["modality"] == "OT" and len(names["anatomical"]["shape"]) == 3
    assert names["CXR7_IM-2263-1001"]["shape"] == [512, 512]
    # the frontal and lateral views of CXR7 share one study
    assert names["CXR7_IM-2263-1001"]["study_id"] == names["CXR7_IM-2263-2001"]["study_id"]
    assert names["CXR9_IM-1-1001"]["study_id"] != names["CXR7_IM-2263-1001"]["study_id"]
    again = scans_ingest(project=project, paths=[tmp_path], study_pattern=r"CXR(\d+)_")
    assert again.stored == [] and len(again.duplicates) == 4


def test_secondary_capture_without_burned_in_annotation_is_flagged(project, tmp_path):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.Modality = "OT"
    if "BurnedInAnnotation" in ds:
        del ds.BurnedInAnnotation
    ds.save_as(tmp_path / "sc.dcm")
    summary = scans_ingest(project=project, paths=[tmp_path / "sc.dcm"])
    scan = Scan.objects.get(pk=summary.stored[0]["id"])
    assert scan.burned_in_annotation == "UNKNOWN" and scan.needs_burned_in_review


def test_report_is_scrubbed_of_names_in_the_dicom_header(project, tmp_path):
    volume, _ = demo.synthetic_chest_ct(shape=(6, 32, 32), spacing=(5.0, 2.0, 2.0))
    demo.write_ct_series(
        tmp_path / "ct", volume, (5.0, 2.0, 2.0), patient_name="DOE^JOHN", accession="ACC777"
    )
    csv = tmp_path / "reports.csv"
    csv.write_text(
        "accession,findings,impression\nACC777,Patient John Doe has a nodule.,Nodule. Discussed with Doe.\n"
    )
    from studies.services.ingest import ReportOptions, ingest_run

    summary = ingest_run(
        project=project,
        paths=[tmp_path / "ct"],
        reports=ReportOptions(csv=csv, id_column="accession", link="accession"),
    )
    assert len(summary["scans"]["stored"]) == 1
    from studies.models import Report

    report = Report.objects.get()
    assert report.study_id == summary["scans"]["stored"][0]["study_id"]
    assert report.findings == "Patient XXXX XXXX has a nodule."
    assert (
        "Doe" not in report.raw_text and "John" not in report.raw_text and "ACC777" not in report.external_id
    )


def test_descriptions_are_cleaned_of_identifiers(project, tmp_path):
    volume, _ = demo.synthetic_chest_ct(shape=(4, 32, 32), spacing=(5.0, 2.0, 2.0))
    files = demo.write_ct_series(tmp_path / "ct", volume, (5.0, 2.0, 2.0), patient_name="ROE^RICHARD")
    for path in files:
        _rewrite(path, SeriesDescription="Chest Roe follow-up", StudyDescription="CT for RICHARD ROE")
    summary = scans_ingest(project=project, paths=[tmp_path / "ct"])
    scan = Scan.objects.get(pk=summary.stored[0]["id"])
    assert scan.series_description == "Chest XXXX follow-up"
    assert scan.study.description == "CT for XXXX XXXX"


def test_cli_text_summary_with_reports_and_gaze(project, phantom_series, tmp_path):
    from studies.ingest.gaze.synthetic import ReflacxSpec, write_reflacx

    csv = tmp_path / "reports.csv"
    csv.write_text("accession,findings\nDEMO0001,A nodule.\n")
    gaze = write_reflacx(tmp_path / "gaze", recordings=[ReflacxSpec(id="P102R000002", dicom_id="x")])
    out = StringIO()
    call_command(
        "ingest", str(phantom_series), "--project", project.slug, "--reports", str(csv),
        "--report-id-column", "accession", "--report-link", "accession", "--gaze", str(gaze),
        stdout=out, stderr=StringIO(),
    )  # fmt: skip
    text = out.getvalue()
    assert "Scans: 1 stored, 0 already stored, 0 errors" in text
    assert "spacing 2, 2, 5 mm" in text
    assert "Reports:" in text and "Gaze:" in text


def test_cli_unknown_project_and_nothing_to_do(project):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="no project 'nope'"):
        call_command("ingest", "x", "--project", "nope")
    with pytest.raises(CommandError, match="nothing to ingest"):
        call_command("ingest", "--project", project.slug)


def test_cli_exits_non_zero_when_everything_failed(project, tmp_path):
    bad = tmp_path / "bad.dcm"
    bad.write_text("no")
    with pytest.raises(SystemExit) as exc:
        call_command("ingest", str(bad), "--project", project.slug, "--json", stdout=StringIO())
    assert exc.value.code == 1


def test_parallel_ingest_matches_serial(project, other_project, tmp_path, _media_root):
    """Folders read on two worker processes give the same scans as one process, including a series
    whose files are spread over two folders (read again whole)."""
    for i in range(3):
        volume, _ = demo.synthetic_chest_ct(shape=(8 + i, 32, 40), spacing=(5.0, 2.0, 2.0))
        demo.write_ct_series(tmp_path / "in" / f"s{i}", volume, (5.0, 2.0, 2.0), patient_id=f"MRN{i}")
    (tmp_path / "in" / "s2b").mkdir()
    for path in sorted((tmp_path / "in" / "s2").glob("*.dcm"))[::2]:
        path.rename(tmp_path / "in" / "s2b" / path.name)
    (tmp_path / "in" / "junk.dcm").write_text("junk")
    serial = scans_ingest(project=project, paths=[tmp_path / "in"], workers=1)
    progress = []
    parallel = scans_ingest(
        project=other_project, paths=[tmp_path / "in"], workers=2, progress=lambda *a: progress.append(a)
    )
    fractions = [done / total for done, total, _ in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0

    def key(summary):
        return sorted((s["shape"][2], s["name"], str(s["spacing"])) for s in summary.stored)

    assert len(parallel.stored) == 3 and key(parallel) == key(serial)
    assert [Path(e["file"]).name for e in parallel.errors] == ["junk.dcm"]
    for s_serial, s_par in zip(
        sorted(serial.stored, key=lambda s: s["shape"][2]),
        sorted(parallel.stored, key=lambda s: s["shape"][2]),
    ):
        a = np.asarray(nib.load(Path(_media_root) / s_serial["file"]).dataobj)
        b = np.asarray(nib.load(Path(_media_root) / s_par["file"]).dataobj)
        assert np.array_equal(a, b) and np.allclose(s_serial["affine"], s_par["affine"])
