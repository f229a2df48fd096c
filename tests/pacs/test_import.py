"""Import from a real PACS: the real CT series of ../shared/data in an Orthanc the tests start, found with
QIDO-RS, retrieved with WADO-RS and stored through the ingest of files (de-identified, one canonical
volume, its 30 instances recorded by remapped SOP Instance UID); run again, nothing is duplicated."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pydicom
import pytest
from django.core.files.storage import default_storage

from core.jobs import job_run
from core.models import Job
from pacs.models import PacsImport, PacsSeriesLink, PacsSource
from pacs.services import SourceSpec, import_create, search_filters, source_create, studies_search
from pacs.tasks import pacs_import_body
from studies.models import PatientIdentity, Scan, ScanSource, Study
from tests.pacs.conftest import ACCESSION, CT_FOLDER
from tests.pacs.orthanc import PASSWORD, USER

pytestmark = pytest.mark.django_db(transaction=False)


def basic_source(project, orthanc, user=None, name="hospital") -> PacsSource:
    spec = SourceSpec(name=name, base_url=orthanc.dicomweb, auth="basic", username=USER, password=PASSWORD)
    return source_create(project=project, spec=spec, user=user)


def run_import(source, study_uids, modality="") -> tuple[Job, PacsImport]:
    pacs_import = import_create(source=source, study_uids=study_uids, modality=modality, dispatch=False)
    try:
        job_run(job_id=pacs_import.job_id, body=pacs_import_body)
    except Exception:  # noqa: BLE001 - job_run records the failure on the job row, then raises it for Celery
        pass
    pacs_import.refresh_from_db()
    return Job.objects.get(pk=pacs_import.job_id), pacs_import


def test_the_real_ct_is_found_by_accession_and_modality_and_imported_de_identified(
    project, orthanc, ct_in_orthanc
):
    project.keep_identity_map = True
    project.save(update_fields=["keep_identity_map"])
    source = basic_source(project, orthanc)
    assert source.checked_at is not None and "answered" in source.check_message

    found = studies_search(source=source, filters=search_filters({"accession": ACCESSION, "modality": "CT"}))
    assert [s["study_uid"] for s in found] == [ct_in_orthanc]
    assert found[0]["instances"] == 30 and found[0]["modalities"] == ["CT"]
    assert studies_search(source=source, filters=search_filters({"accession": "NOPE"})) == []

    job, pacs_import = run_import(source, [found[0]["study_uid"]], modality="CT")
    assert job.status == "succeeded", (job.message, job.errors)
    assert job.counts["series_stored"] == 1 and job.counts["instances_retrieved"] == 30
    assert job.errors == []
    scan = Scan.objects.get(project=project)
    assert scan.shape == [512, 512, 30] and scan.modality == "CT"
    # the canonical volume holds the real pixels: slice 0's HU are the file's
    first = pydicom.dcmread(sorted(CT_FOLDER.glob("*.dcm"))[0])
    slices = dict(ScanSource.objects.filter(scan=scan).values_list("sop_uid", "slice_index"))
    assert sorted(slices.values()) == list(range(30))
    with default_storage.open(scan.file.name, "rb") as fh:
        volume = np.asarray(nib.Nifti1Image.from_bytes(fh.read()).dataobj)
    hu = first.pixel_array.astype(np.float64) * float(first.RescaleSlope) + float(first.RescaleIntercept)
    from studies import pseudonyms

    k = slices[pseudonyms.uid_remap(project.deid_secret, str(first.SOPInstanceUID))]
    assert np.array_equal(volume[:, :, k].T, hu)
    # de-identified: no original UID or patient id in the stored rows
    study = Study.objects.get(project=project)
    assert study.study_uid != ct_in_orthanc and study.accession_hash
    assert str(first.SeriesInstanceUID) not in scan.series_uid
    assert PatientIdentity.objects.get(patient=study.patient).original_id == "Lung_Dx-A0002"
    # the identity map keeps the source's own UIDs for the store-back
    link = PacsSeriesLink.objects.get(scan=scan)
    assert (link.study_uid, link.series_uid) == (ct_in_orthanc, str(first.SeriesInstanceUID))
    # the job row (every member reads it) holds no original UID; the import row (managers) does
    assert ct_in_orthanc not in str(job.params) + str(job.result) + str(job.errors) + job.message
    assert pacs_import.outcome[ct_in_orthanc]["status"] == "done"

    # again: nothing retrieved, nothing duplicated
    again, _ = run_import(source, [ct_in_orthanc])
    assert again.status == "succeeded"
    assert again.counts["series_duplicates"] == 1 and again.counts["instances_retrieved"] == 0
    assert Scan.objects.filter(project=project).count() == 1
    assert ScanSource.objects.filter(project=project).count() == 30


def test_without_the_identity_map_no_original_uid_is_kept(project, orthanc, ct_in_orthanc):
    source = basic_source(project, orthanc)
    job, _ = run_import(source, [ct_in_orthanc])
    assert job.status == "succeeded" and job.counts["series_stored"] == 1
    assert not PacsSeriesLink.objects.exists()
    assert not PatientIdentity.objects.exists()


def test_a_report_waiting_for_its_study_is_linked_by_accession_when_the_study_arrives(
    project, orthanc, ct_in_orthanc, tmp_path
):
    from studies.models import Report
    from studies.services.reports import reports_import

    csv = tmp_path / "reports.csv"
    csv.write_text(
        f"accession,findings,impression\n{ACCESSION},Spiculated mass in the left upper lobe.,Mass.\n"
    )
    summary = reports_import(project=project, csv_path=csv, id_column="accession", link="accession")
    assert summary.errors == [] and Report.objects.get().study is None  # no study yet
    job, _ = run_import(basic_source(project, orthanc), [ct_in_orthanc])
    assert job.counts["reports_linked"] == 1
    report = Report.objects.get()
    assert report.study == Study.objects.get(project=project) and ACCESSION not in report.external_id
