"""Ingest records which slice each DICOM instance became (``ScanSource.slice_index``), and a DICOM SEG
export of a frozen release gives every rebuilt slice the (remapped) SOP Instance UID of the instance that
lay there: file names shuffled so that the order files are read in is not the order of their positions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from studies import pseudonyms
from studies.ingest.dicom import dicom_load_series, dicom_read_headers
from studies.models import Scan, ScanSource
from studies.services.scans import scans_ingest
from tests.studies.dicom_factories import new_dataset, save, set_pixels, slice_pixels, write_series

pytestmark = pytest.mark.django_db

CT_REPORT = "There is a 3.5 cm spiculated mass in the right lower lobe. Mild emphysema."
MASS = (slice(150, 230), slice(250, 330), slice(12, 18))  # inside the right lung of lungdx-a0002


def _shuffled_copy(paths: list[Path], folder: Path, seed: int) -> dict[Path, Path]:
    """Copy ``paths`` into ``folder`` under names in a shuffled order; returns copy -> original."""
    folder.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(seed).permutation(len(paths))
    copies = {}
    for name, path in zip(order, paths):
        copy = folder / f"im{int(name):04d}.dcm"
        shutil.copyfile(path, copy)
        copies[copy] = path
    return copies


def _sources(scan: Scan) -> dict[str, ScanSource]:
    return {s.sop_uid: s for s in ScanSource.objects.filter(scan=scan)}


def _stored_array(scan: Scan) -> np.ndarray:
    from django.core.files.storage import default_storage

    return np.asanyarray(nib.load(default_storage.path(scan.file.name)).dataobj)


def _position_rank(originals: list[Path]) -> dict[str, int]:
    """Original SOPInstanceUID -> rank of its position along the slice normal (the expected slice)."""
    along = {}
    for path in originals:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        cosines = np.array(ds.ImageOrientationPatient, dtype=float)
        normal = np.cross(cosines[:3], cosines[3:])
        along[str(ds.SOPInstanceUID)] = float(np.dot(np.array(ds.ImagePositionPatient, dtype=float), normal))
    return {uid: k for k, uid in enumerate(sorted(along, key=along.get))}


def test_real_ct_slices_keep_their_instance_uids_through_a_dicom_seg_export(
    tmp_path, shared_data, make_user, project
):
    from annotation.services import annotation_save, task_approve, task_next, task_submit
    from core.models import Role
    from core.services import membership_set
    from labeling.services import label_run_execute, label_run_get_or_create
    from releases.records import DirSink
    from releases.services import dataset_create, release_create, release_export_to
    from studies.models import Report

    originals = sorted((shared_data / "ct/lungdx-a0002").glob("*.dcm"))
    copies = _shuffled_copy(originals[::-1], tmp_path / "ct", seed=14)
    read_order = [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in sorted(copies)]
    rank = _position_rank(originals)
    assert [rank[uid] for uid in read_order] != list(range(30))  # read order is not slice order

    project.label_schema = "rexgroundingct"
    project.qa_sample_rate = 0.0
    project.save()
    assert not scans_ingest(project=project, paths=[tmp_path / "ct"], workers=1).errors
    scan = Scan.objects.get(project=project)
    secret = project.deid_secret
    sources = _sources(scan)
    assert len(sources) == 30
    assert sorted(s.slice_index for s in sources.values()) == list(range(30))
    for uid, k in rank.items():  # each instance's row holds the slice its position ranks it at
        assert sources[pseudonyms.uid_remap(secret, uid)].slice_index == k
    # and the stored array's slice k holds that instance's pixels (HU)
    array = _stored_array(scan)
    for path in originals[::7]:
        ds = pydicom.dcmread(path)
        k = sources[pseudonyms.uid_remap(secret, str(ds.SOPInstanceUID))].slice_index
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(array[:, :, k].T, hu)

    # a minimal frozen release: the report's mass grounded with a mask, approved
    Report.objects.create(
        project=project, study=scan.study, external_id="ct", source="text", raw_text=CT_REPORT, checksum="ct",
        findings=CT_REPORT,
    )  # fmt: skip
    label_run_execute(run=label_run_get_or_create(project=project, labeler="rules"))
    from annotation.services import findings_from_proposals

    assert findings_from_proposals(project=project) >= 1
    ann, rad = make_user("ann"), make_user("rad")
    membership_set(project=project, user=ann, role=Role.ANNOTATOR)
    membership_set(project=project, user=rad, role=Role.RADIOLOGIST)
    mass = np.zeros(tuple(scan.shape), dtype=bool)
    mass[MASS] = True
    while (task := task_next(project=project, user=ann, stages=("annotate",))) is not None:
        accept = "mass" in task.finding.text.lower()
        if accept:
            annotation_save(
                task_id=task.pk, user=ann, base_version=task.finding.current_version, kind="mask", mask=mass
            )
        task_submit(task_id=task.pk, user=ann, decision="accept" if accept else "reject")
        task_approve(task_id=task_next(project=project, user=rad, stages=("review", "qa")).pk, user=rad)
    release = release_create(dataset=dataset_create(slug="uids", name="UIDs", projects=[project]))
    out = tmp_path / "export"
    sink = DirSink(out)
    release_export_to(release, "dicom-seg", sink)
    sink.close()

    [entry] = json.loads((out / "index.json").read_text())["cases"]
    original_uids = {
        path: str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in originals
    }
    by_remapped = {pseudonyms.uid_remap(secret, uid): path for path, uid in original_uids.items()}
    exported = [pydicom.dcmread(out / f) for f in entry["files"]]
    assert len(exported) == 30
    matched = 0
    for k, ds in enumerate(exported):
        row = sources[ds.SOPInstanceUID]  # the exported instance is a stored one ...
        assert row.slice_index == k == ds.InstanceNumber - 1  # ... the one stored for this slice
        original = pydicom.dcmread(by_remapped[ds.SOPInstanceUID])  # ... and the file that lay here
        np.testing.assert_allclose(ds.ImagePositionPatient, original.ImagePositionPatient, atol=1e-3)
        np.testing.assert_allclose(ds.ImageOrientationPatient, original.ImageOrientationPatient, atol=1e-6)
        hu = original.pixel_array * float(original.RescaleSlope) + float(original.RescaleIntercept)
        np.testing.assert_array_equal(ds.pixel_array, hu)
        matched += 1
    assert matched == 30
    assert (
        entry["series_uid"]
        == scan.series_uid
        == pseudonyms.uid_remap(
            secret, str(pydicom.dcmread(originals[0], stop_before_pixels=True).SeriesInstanceUID)
        )
    )

    # the SEG read by highdicom against the stored series' UIDs (slice order from the rows): the mass
    seg = hd.seg.segread(out / entry["seg"])
    stored_uids = [s.sop_uid for s in sorted(sources.values(), key=lambda s: s.slice_index)]
    number = next(s["segment_number"] for s in entry["segments"] if "mass" in s["text"].lower())
    got = seg.get_pixels_by_source_instance(source_sop_instance_uids=stored_uids, segment_numbers=[number])
    np.testing.assert_array_equal(got[..., 0], mass.transpose(2, 1, 0))
    # every frame of the SEG references a stored instance, at the position of the original file
    for item in seg.PerFrameFunctionalGroupsSequence:
        uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        original = pydicom.dcmread(by_remapped[uid], stop_before_pixels=True)
        np.testing.assert_allclose(
            item.PlanePositionSequence[0].ImagePositionPatient, original.ImagePositionPatient, atol=1e-3
        )


def test_many_slices_over_two_folders_with_shuffled_names_and_a_copy(tmp_path, project):
    """A 64-slice series written with shuffled names over two folders (read again whole as one series by
    the parallel ingest) plus a second copy of one instance: every row's slice is the slice its pixels
    went to; the copy is stored as no row of its own."""
    written = write_series(
        tmp_path / "w", n=64, rows=6, cols=5, step=1.25, instance_numbers=list(range(64, 0, -1))
    )
    order = np.random.default_rng(3).permutation(64)
    originals: dict[str, int] = {}  # original SOP UID -> k it was written at (slice_pixels(k))
    for i, (k, path) in enumerate(zip(order, written)):
        folder = tmp_path / "in" / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, folder / f"x{int(k) * 37 % 101:03d}.dcm")
        originals[str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)] = written.index(path)
    shutil.copyfile(written[10], tmp_path / "in" / "a" / "zz-copy.dcm")
    summary = scans_ingest(project=project, paths=[tmp_path / "in"], workers=2)
    assert not summary.errors, summary.errors
    scan = Scan.objects.get(project=project)
    assert scan.shape == [5, 6, 64]
    rows = list(ScanSource.objects.filter(scan=scan))
    indexed = [r for r in rows if r.slice_index is not None]
    assert sorted(r.slice_index for r in indexed) == list(range(64))
    array = _stored_array(scan)
    remapped = {pseudonyms.uid_remap(project.deid_secret, uid): k for uid, k in originals.items()}
    for r in indexed:
        k = remapped[r.sop_uid]  # written at position k (origin + k x step) with slice_pixels(k)
        assert r.slice_index == k
        np.testing.assert_array_equal(array[:, :, k].T, slice_pixels(k, 6, 5))
    assert len(rows) == 64  # the copy adds no row (it used to break the unique SOP UID constraint)
    again = scans_ingest(project=project, paths=[tmp_path / "in"], workers=1)
    assert (again.counts()["duplicates"], again.errors) == (1, [])


def test_multiframe_and_2d_instances_get_no_slice(tmp_path, project):
    enhanced = tmp_path / "mf" / "enhanced.dcm"
    enhanced.parent.mkdir()
    shutil.copyfile(get_testdata_file("eCT_Supplemental.dcm"), enhanced)
    files, errors = dicom_read_headers([enhanced])
    assert not errors and dicom_load_series(files).slice_uids == ["", ""]

    dx = new_dataset(modality="DX", sop_class="1.2.840.10008.5.1.4.1.1.1.1")
    set_pixels(dx, np.arange(40 * 30).reshape(40, 30).astype(np.int16) % 400)
    dx.PixelSpacing = ["0.2", "0.2"]
    (tmp_path / "dx").mkdir()
    save(dx, tmp_path / "dx" / "cxr.dcm")
    summary = scans_ingest(project=project, paths=[tmp_path / "mf", tmp_path / "dx"], workers=1)
    assert not summary.errors, summary.errors
    rows = ScanSource.objects.filter(project=project)
    assert rows.count() == 2 and {r.slice_index for r in rows} == {None}
    assert sorted(s.ndim for s in Scan.objects.filter(project=project)) == [2, 3]
