"""Store-back: an accepted finding's mask goes to the PACS it came from as a DICOM SEG (STOW-RS) that
references the original series by its original UIDs; read back from Orthanc with highdicom, its frames
are the mask's on the right source instances. Off by default; a failed send is recorded and retried."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pytest
from django.db import transaction

from annotation.models import Finding, FindingStatus
from annotation.services import finding_create, version_add
from core.errors import ApplicationError
from pacs.models import PacsStoreBack, StoreBackStatus
from pacs.services import SourceSpec, source_update
from pacs.storeback import store_back_retry, store_back_sweep
from studies.models import Scan, ScanSource
from tests.pacs.conftest import orthanc_client
from tests.pacs.faults import TOKEN, Rule
from tests.pacs.test_faults import bearer_source
from tests.pacs.test_import import basic_source, run_import

pytestmark = pytest.mark.django_db


def accepted_mask(project, user, scan: Scan) -> tuple[Finding, np.ndarray]:
    """An accepted finding on ``scan`` whose current version is a mask (X, Y, Z) on slices 10..12."""
    mask = np.zeros(tuple(scan.shape), dtype=bool)
    mask[200:260, 300:340, 10:13] = True  # X = columns 200..259, Y = rows 300..339
    task = finding_create(
        project=project, user=user, study=scan.study, scan=scan, text="Spiculated mass, left upper lobe."
    )
    finding = task.finding
    with transaction.atomic():
        version_add(finding, [], user=user, kind="mask", array=mask, voxels=int(mask.sum()))
    Finding.objects.filter(pk=finding.pk).update(status=FindingStatus.ACCEPTED)
    finding.refresh_from_db()
    return finding, mask


def test_an_accepted_mask_goes_back_as_a_seg_on_the_original_series_and_reads_back_with_highdicom(
    project, manager, orthanc, ct_in_orthanc
):
    project.keep_identity_map = True
    project.save(update_fields=["keep_identity_map"])
    source = basic_source(project, orthanc)
    job, _ = run_import(source, [ct_in_orthanc])
    scan = Scan.objects.get(project=project)
    finding, mask = accepted_mask(project, manager, scan)

    assert store_back_sweep(project=project) == []  # off by default
    source_update(source=source, spec=SourceSpec(store_back=True))
    [record] = store_back_sweep(project=project)
    assert record.status == StoreBackStatus.STORED, record.message
    assert record.tries == 1
    assert store_back_sweep(project=project) == []  # sent once

    client = orthanc_client(orthanc)
    [seg_ds] = list(client.iter_series(ct_in_orthanc, record.seg_series_uid))
    seg = hd.seg.Segmentation.from_dataset(seg_ds)
    assert seg.Modality == "SEG" and str(seg.StudyInstanceUID) == ct_in_orthanc
    assert int(seg.NumberOfFrames) == 3  # the mask's slices only (empty frames omitted)
    assert seg.PatientID == "Lung_Dx-A0002"  # the PACS's patient, as its own series says
    [ref_series] = seg.ReferencedSeriesSequence
    ct_series = client.search_for_series(ct_in_orthanc, search_filters={"Modality": "CT"})
    assert ref_series.SeriesInstanceUID == ct_series[0]["0020000E"]["Value"][0]
    # each segmented frame sits on the original instance of its slice
    from studies import pseudonyms

    slice_of = dict(ScanSource.objects.filter(scan=scan).values_list("sop_uid", "slice_index"))
    referenced = [str(r.ReferencedSOPInstanceUID) for r in ref_series.ReferencedInstanceSequence]
    assert len(referenced) == 30
    slices = {sop: slice_of[pseudonyms.uid_remap(project.deid_secret, sop)] for sop in referenced}
    # ... and that slice is where the PACS says the instance lies: voxel (0, 0, k) of the canonical volume,
    # in LPS, is the instance's ImagePositionPatient (Orthanc's metadata)
    metadata = client.retrieve_series_metadata(ct_in_orthanc, str(ref_series.SeriesInstanceUID))
    position = {m["00080018"]["Value"][0]: [float(v) for v in m["00200032"]["Value"]] for m in metadata}
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(scan.affine, dtype=float)  # RAS -> LPS
    for sop, k in slices.items():
        assert np.allclose((affine @ [0, 0, k, 1])[:3], position[sop], atol=1e-3), (sop, k)
    for sop, k in slices.items():
        frames = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[sop], segment_numbers=[1], assert_missing_frames_are_empty=True
        )
        assert np.array_equal(frames[0, :, :, 0].astype(bool), mask[:, :, k].T), k
    [segment] = seg.SegmentSequence
    assert segment.SegmentDescription == "Spiculated mass, left upper lobe."
    assert segment.SegmentAlgorithmType == "MANUAL"

    # a new accepted version is sent again, as its own SEG
    with transaction.atomic():
        version_add(finding, [], user=manager, kind="mask", array=mask, voxels=int(mask.sum()))
    [second] = store_back_sweep(project=project)
    assert second.status == StoreBackStatus.STORED and second.seg_sop_uid != record.seg_sop_uid


def test_store_back_needs_the_identity_map(project, orthanc, ct_in_orthanc):
    source = basic_source(project, orthanc)
    with pytest.raises(ApplicationError) as refused:
        source_update(source=source, spec=SourceSpec(store_back=True))
    assert refused.value.field == "store_back" and "identity map" in refused.value.message


def test_a_failed_send_is_recorded_then_retried(
    project, manager, orthanc, fault_proxy, shared_data, settings
):
    settings.PACS_RETRY_WAIT_MS = 10
    from tests.pacs.conftest import load_ct

    study = load_ct(orthanc)[0]
    project.keep_identity_map = True
    project.save(update_fields=["keep_identity_map"])
    source = bearer_source(project, fault_proxy)
    run_import(source, [study])
    finding, _ = accepted_mask(project, manager, Scan.objects.get(project=project))
    source_update(source=source, spec=SourceSpec(store_back=True))

    fault_proxy.add(Rule(r"/studies/[0-9.]+$", "status", method="POST", status=500, times=None))
    [record] = store_back_sweep(project=project)
    assert record.status == StoreBackStatus.FAILED and "answered HTTP 500" in record.message
    [record] = store_back_sweep(project=project)  # the sweep tries again
    assert record.tries == 2 and record.status == StoreBackStatus.FAILED

    fault_proxy.clear()
    record = store_back_retry(record=record)
    assert record.status == StoreBackStatus.STORED and record.message == ""
    assert PacsStoreBack.objects.get().seg_sop_uid == record.seg_sop_uid
    assert TOKEN  # bearer auth was used throughout
