"""DICOM SEG exporter on synthetic and real cases, read back with pydicom and highdicom."""

import json

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from releases.formats import dicom_seg, dicom_source
from releases.records import CaseRecord, FormatError, ImageRecord
from studies.deid.core import header_to_json
from tests.releases.synth3d import (
    ATELECTASIS,
    LPS_FROM_RAS,
    NODULES,
    SHAPE,
    ct_array,
    export,
    make_affine,
    make_case,
    mask_label,
    release,
    world,
    write_image,
)


def deidentified_header(study_uid: str, series_uid: str) -> dict:
    ds = Dataset()
    ds.PatientName = "PSEUDO^7"
    ds.PatientID = "pseudo-7"
    ds.PatientSex = "F"
    ds.PatientAge = "061Y"
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "DICOM PS3.15 E.1 Basic Profile"
    ds.StudyDate = "20190312"
    ds.StudyTime = "101500"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = "2.25.99887766"
    ds.SeriesNumber = 3
    ds.SeriesDescription = "Chest 2.5mm"
    ds.Manufacturer = "ACME"
    ds.KVP = "120"
    ds.InstitutionName = "must not be copied"
    ds.Modality = "CT"
    return header_to_json(ds)


def same_files(a, b) -> bool:
    """The two folders hold the same files with the same bytes."""
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    different = [str(f) for f in files if (a / f).read_bytes() != (b / f).read_bytes()]
    assert not different, different
    return True


def lps_of_frame_pixels(seg: pydicom.Dataset, frame: int, rc: np.ndarray) -> np.ndarray:
    """LPS mm of pixels (row, column) of SEG frame ``frame`` from its functional groups."""
    shared = seg.SharedFunctionalGroupsSequence[0]
    cosines = np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, dtype=float)
    row_spacing, col_spacing = (float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
    position = np.array(
        seg.PerFrameFunctionalGroupsSequence[frame].PlanePositionSequence[0].ImagePositionPatient, dtype=float
    )
    along_row = np.outer(rc[:, 1] * col_spacing, cosines[:3])  # columns advance along the row cosine
    along_column = np.outer(rc[:, 0] * row_spacing, cosines[3:])
    return position + along_row + along_column


@pytest.mark.parametrize("kind", ["axial", "flipped", "oblique"])
def test_dicom_seg_round_trip(tmp_path, kind):
    affine = make_affine(kind)
    cases = release(tmp_path, affine)
    case = cases[0]
    header = deidentified_header(case.image.study_uid, case.image.series_uid)
    case.image.dicom_header = header
    case.image.sop_uids = [f"{case.image.series_uid}.{k + 1}" for k in range(SHAPE[2])]
    out = tmp_path / "out"
    summary = export(dicom_seg, cases, out)
    assert summary.skipped == ["case-a/case-a-box: kind 'box' is not supported by this format"]
    index = {c["case_id"]: c for c in json.loads((out / "index.json").read_text())["cases"]}
    entry = index["case-a"]
    assert len(entry["files"]) == SHAPE[2] and entry["seg"] == "seg/case-a.dcm"
    assert [(s["segment_number"], s["label_id"], s["algorithm_type"]) for s in entry["segments"]] == [
        (1, "case-a-nodules", "MANUAL"),
        (2, "case-a-atelectasis", "AUTOMATIC"),
    ]
    assert [r["label_id"] for r in entry["report_only"]] == ["case-a-effusion"]
    assert index["case-b"]["seg"] is None and not (out / "seg/case-b.dcm").exists()
    assert len(index["case-b"]["files"]) == SHAPE[2]

    # the rebuilt series: the record's UIDs, copied header attributes, pixels and geometry of the NIfTI
    lps = LPS_FROM_RAS @ affine
    sources = [pydicom.dcmread(out / f) for f in entry["files"]]
    volume = ct_array()
    for k, ds in enumerate(sources):
        assert ds.SOPClassUID == dicom_source.CT_IMAGE_STORAGE
        assert ds.SOPInstanceUID == case.image.sop_uids[k]
        assert (ds.StudyInstanceUID, ds.SeriesInstanceUID) == (case.image.study_uid, case.image.series_uid)
        assert (str(ds.PatientName), ds.PatientID, ds.PatientAge, ds.Manufacturer) == (
            "PSEUDO^7",
            "pseudo-7",
            "061Y",
            "ACME",
        )
        assert ds.FrameOfReferenceUID == "2.25.99887766" and "InstitutionName" not in ds
        np.testing.assert_array_equal(ds.pixel_array, volume[:, :, k].T)
        np.testing.assert_allclose(ds.ImagePositionPatient, (lps @ [0, 0, k, 1])[:3], atol=1e-6)
    np.testing.assert_allclose(sources[0].SliceThickness, 2.5, atol=1e-9)

    # the SEG: readable by pydicom and highdicom, each segment's mask back on the source instances
    raw = pydicom.dcmread(out / entry["seg"])
    assert raw.Modality == "SEG" and raw.SegmentationType == "BINARY"
    assert raw.StudyInstanceUID == case.image.study_uid and raw.PatientID == "pseudo-7"
    assert raw.FrameOfReferenceUID == "2.25.99887766"
    seg = hd.seg.segread(out / entry["seg"])
    assert seg.get_segment_numbers() == [1, 2]
    assert seg.get_segment_description(1).tracking_id == "case-a-nodules"
    assert seg.get_segment_description(2).segment_label == "Basal atelectasis."
    assert raw.SegmentSequence[0].SegmentDescription == "Two nodules in the right lower lobe."
    assert seg.get_segment_description(2).algorithm_type == hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
    # 2d "Two nodules ..." is a Nodule; 2b (atelectasis / consolidation) has no concept: Lesion
    assert seg.get_segment_description(1).segmented_property_type == codes.SCT.Nodule
    assert seg.get_segment_description(2).segmented_property_type == codes.SCT.Lesion
    assert [s["coded_exactly"] for s in entry["segments"]] == [True, False]
    colours = [tuple(item.RecommendedDisplayCIELabValue) for item in raw.SegmentSequence]
    assert len(set(colours)) == 2  # each segment its own colour (Slicer gives segments without one the same)
    algorithm = raw.SegmentSequence[1].SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("lung-seg", "lungs v3")
    assert raw.SegmentSequence[0].SegmentAlgorithmType == "MANUAL"
    got = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=case.image.sop_uids, segment_numbers=[1, 2], combine_segments=False
    )  # (slices, rows, columns, segments)
    np.testing.assert_array_equal(got[..., 0], NODULES.transpose(2, 1, 0))
    np.testing.assert_array_equal(got[..., 1], ATELECTASIS.transpose(2, 1, 0))

    # geometry: a SEG pixel's LPS position from the SEG's own functional groups = the NIfTI voxel's RAS
    # position (canonical affine) converted to LPS
    slice_of = {uid: k for k, uid in enumerate(case.image.sop_uids)}
    masks = {1: NODULES, 2: ATELECTASIS}
    total = 0
    for f, item in enumerate(raw.PerFrameFunctionalGroupsSequence):
        k = slice_of[item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID]
        segment = item.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        rc = np.argwhere(seg.get_frame(f + 1))  # (row, column) of the frame's segment pixels
        assert masks[segment][rc[:, 1], rc[:, 0], k].all()
        expected = world(lps, np.c_[rc[:, 1], rc[:, 0], np.full(len(rc), k)])
        np.testing.assert_allclose(lps_of_frame_pixels(raw, f, rc), expected, atol=1e-4)
        total += len(rc)
    assert total == NODULES.sum() + ATELECTASIS.sum()


def test_dicom_seg_non_ct_float_image(tmp_path):
    """A PET (float SUV) volume: Secondary Capture instances, values rescaled onto uint16, SEG on them."""
    affine = make_affine("axial")
    case = make_case(tmp_path / "src", "pet", "train", affine, [("m", ATELECTASIS, {"text": "Uptake."})])
    suv = (np.indices(SHAPE).sum(axis=0) * 0.37).astype(np.float32)
    write_image(tmp_path / "src", "pet", suv, affine)
    case.image.modality = "PT"
    out = tmp_path / "out"
    export(dicom_seg, [case], out)
    entry = json.loads((out / "index.json").read_text())["cases"][0]
    sources = [pydicom.dcmread(out / f) for f in entry["files"]]
    assert sources[0].SOPClassUID == dicom_source.SECONDARY_CAPTURE_IMAGE_STORAGE
    assert sources[0].Modality == "PT"
    for k, ds in enumerate(sources):
        values = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_allclose(values, suv[:, :, k].T, atol=float(ds.RescaleSlope))
    seg = hd.seg.segread(out / entry["seg"])
    got = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[ds.SOPInstanceUID for ds in sources], segment_numbers=[1]
    )
    np.testing.assert_array_equal(got[..., 0], ATELECTASIS.transpose(2, 1, 0))


def test_dicom_seg_derives_uids_and_rejects_2d(tmp_path):
    affine = make_affine("axial")
    case = make_case(
        tmp_path / "src", "u", "train", affine, [("m", ATELECTASIS, {"text": "x", "source": "weak"})]
    )
    case.image.sop_uids = ["1.2.3"]  # not one per slice: derived
    case.image.study_uid = ""
    out1, out2 = tmp_path / "o1", tmp_path / "o2"
    export(dicom_seg, [case], out1)
    export(dicom_seg, [case], out2)
    a = [pydicom.dcmread(p) for p in sorted((out1 / "series/u").glob("*.dcm"))]
    b = [pydicom.dcmread(p) for p in sorted((out2 / "series/u").glob("*.dcm"))]
    assert len({ds.SOPInstanceUID for ds in a}) == SHAPE[2]
    assert [ds.SOPInstanceUID for ds in a] == [ds.SOPInstanceUID for ds in b]
    assert a[0].StudyInstanceUID == b[0].StudyInstanceUID and a[0].PatientID == "pseudo-u"
    seg_uids = {pydicom.dcmread(out / "seg/u.dcm").SOPInstanceUID for out in (out1, out2)}
    assert len(seg_uids) == 1
    assert same_files(out1, out2)  # no freeze time: a fixed date, not the clock
    assert pydicom.dcmread(out1 / "seg/u.dcm").ContentDate == "20000101"

    flat = np.diag([-0.2, -0.2, 1.0, 1.0])
    image = ImageRecord(
        write_image(tmp_path, "cxr", np.zeros((8, 6), np.int16), flat), [8, 6], [0.2, 0.2], flat, "DX"
    )
    with pytest.raises(FormatError) as err:
        export(dicom_seg, [CaseRecord("cxr", "p", "s", "train", image)], tmp_path / "o3")
    assert err.value.field == "cxr.image"


def test_dicom_seg_real_ct_series_keeps_positions(tmp_path, shared_data):
    """lungdx-a0002 (30 slices) read by the platform's ingest, exported: every rebuilt instance sits where
    the original one did, with the original HU."""
    from studies.deid.core import deidentify_header
    from studies.ingest.dicom import dicom_load_series, dicom_read_headers
    from studies.ingest.volume_io import volume_write_nifti

    paths = sorted((shared_data / "ct/lungdx-a0002").glob("*.dcm"))
    files, errors = dicom_read_headers(paths)
    assert not errors
    volume = dicom_load_series(files)
    nifti = tmp_path / "ct.nii.gz"
    volume_write_nifti(volume, nifti)
    header = header_to_json(
        deidentify_header(files[0].header, secret="s", pseudonym="P1", date_shift_days=-3)
    )
    image = ImageRecord(
        path=nifti,
        shape=list(volume.array.shape),
        spacing=list(volume.spacing),
        affine=volume.affine,
        modality="CT",
        dicom_header=header,
    )
    mask = np.zeros(volume.array.shape, dtype=bool)
    mask[200:260, 220:300, 10:14] = True
    label = mask_label(tmp_path, "real", mask, volume.affine, text="A mass.")
    out = tmp_path / "out"
    export(dicom_seg, [CaseRecord("real", "P1", "s", "train", image, labels=[label])], out)
    written = [pydicom.dcmread(p) for p in sorted((out / "series/real").glob("*.dcm"))]
    rebuilt = {tuple(round(float(v), 3) for v in ds.ImagePositionPatient): ds for ds in written}
    originals = [pydicom.dcmread(p) for p in paths]
    assert len(rebuilt) == len(originals) == 30
    for original in originals:
        ds = rebuilt[tuple(round(float(v), 3) for v in original.ImagePositionPatient)]
        np.testing.assert_allclose(ds.ImageOrientationPatient, original.ImageOrientationPatient, atol=1e-6)
        np.testing.assert_allclose(ds.PixelSpacing, original.PixelSpacing, atol=1e-6)
        hu = original.pixel_array * float(original.RescaleSlope) + float(original.RescaleIntercept)
        np.testing.assert_array_equal(ds.pixel_array, hu)
    seg = hd.seg.segread(out / "seg/real.dcm")
    assert seg.PatientID == "P1"
    assert int(
        seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[ds.SOPInstanceUID for ds in rebuilt.values()], segment_numbers=[1]
        ).sum()
    ) == int(mask.sum())


# --- Segment codes ----------------------------------------------------------------------------------------


def test_every_segment_code_is_in_pydicoms_dictionary():
    """No code of the table is invented: each (scheme, value, meaning) is one of pydicom's (PS3.16)."""
    from pydicom.sr import _concepts_dict

    from labeling.types import CHEXPERT_OBSERVATIONS
    from releases.formats import dicom_codes
    from releases.labels import ANATOMY_CODES, CATEGORY

    known = {
        (scheme, value, meaning)
        for scheme, table in _concepts_dict.concepts.items()
        for entry in table.values()
        for value, (meaning, _cids) in entry.items()
    }
    used = dicom_codes.all_codes()
    assert len(used) > 40
    missing = [c for c in used if (c.scheme_designator, c.value, c.meaning) not in known]
    assert not missing, missing
    # every class the platform makes has a row: ReXGroundingCT categories, CheXpert observations, anatomy
    assert (
        all(CATEGORY.match(c) for c in dicom_codes.REXGROUNDINGCT) and len(dicom_codes.REXGROUNDINGCT) == 14
    )
    assert set(dicom_codes.CHEXPERT) == set(CHEXPERT_OBSERVATIONS)
    assert set(dicom_codes.ANATOMY) == set(ANATOMY_CODES)

    def coded(code="", category="", text="", role="finding"):
        c = dicom_codes.segment_codes(code=code, category=category, text=text, role=role)
        return c.category, c.type, c.modifier, c.region, c.exact

    finding, anatomy = codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.AnatomicalStructure
    assert coded(category="2d", text="A 3.5 cm spiculated mass.") == (
        finding,
        codes.SCT.Mass,
        None,
        None,
        True,
    )
    assert coded(category="2d", text="Two nodules.")[1] == codes.SCT.Nodule
    assert coded(category="2d", text="A lesion.")[1:] == (codes.SCT.Lesion, None, None, False)
    assert coded(category="2e", text="Small right pleural effusion.")[1] == codes.SCT.PleuralEffusion
    assert coded(category="2e", text="Pleural thickening.")[1:] == (codes.SCT.Lesion, None, None, False)
    assert coded(category="2c", text="GGO")[1] == codes.DCM.GroundGlassOpacity
    assert coded(category="1c", text="Emphysema.")[4] is False  # no emphysema concept in PS3.16
    assert coded(code="Lung Opacity")[1:4] == (codes.DCM.Opacity, None, codes.SCT.Lung)
    assert coded(code="left_lung", role="context") == (anatomy, codes.SCT.Lung, codes.SCT.Left, None, True)
    assert coded(code="right_lung", role="finding")[2] == codes.SCT.Right  # anatomy released as a class
    assert coded(code="thyroid", role="context")[:2] == (anatomy, anatomy)
    assert coded(code="whatever", text="x")[:2] == (finding, codes.SCT.Lesion)


# --- A release of real data -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_real_release_dicom_seg_reads_like_the_reference_readers(tmp_path, shared_data, make_user):
    """The real CT (ingested, grounded, frozen) exported twice: the same bytes; the SEG's dates are the
    freeze's; segments coded with their meaning; highdicom maps each segment back onto the exported series
    and onto the stored series' instance UIDs; SimpleITK rebuilds the series with the NIfTI's geometry."""
    import datetime

    import SimpleITK as sitk
    from django.core.files.storage import default_storage

    from releases.records import DirSink
    from releases.services import release_create, release_export_to
    from studies.models import ScanSource
    from tests.releases.real import real_release

    real = real_release(shared_data, tmp_path / "data", make_user)
    # the dataset's radiographs are 2D and hold a box: a CT-only version of it for this format
    release = release_create(dataset=real.dataset, selection={"sources": "both", "modalities": ["CT"]})
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        sink = DirSink(out)
        release_export_to(release, "dicom-seg", sink)
        sink.close()
    out = outs[0]
    assert same_files(*outs)

    [entry] = json.loads((out / "index.json").read_text())["cases"]
    assert entry["series_uid"] == real.ct.series_uid and len(entry["files"]) == 30
    stored = list(ScanSource.objects.filter(scan=real.ct).order_by("slice_index"))
    stored_uids = [s.sop_uid for s in stored]
    assert [s.slice_index for s in stored] == list(range(30))
    series = [pydicom.dcmread(out / f) for f in entry["files"]]
    assert [ds.SOPInstanceUID for ds in series] == stored_uids  # each slice its own stored instance

    # dates and times: the freeze's, in UTC
    raw = pydicom.dcmread(out / entry["seg"])
    frozen = release.frozen_at.astimezone(datetime.UTC)
    day, time = frozen.strftime("%Y%m%d"), frozen.strftime("%H%M%S")
    for keyword in ("Content", "Series", "InstanceCreation"):
        assert (raw[f"{keyword}Date"].value, raw[f"{keyword}Time"].value) == (day, time), keyword
    highdicom_item = [e for e in raw.ContributingEquipmentSequence if e.ManufacturerModelName == "highdicom"]
    assert highdicom_item[0].ContributionDateTime == day + time

    # coded segments: the mass, the effusion, the lungs generator's lungs (context, AUTOMATIC)
    segments = {s["category"] or s["code"]: s for s in entry["segments"]}
    assert segments["2d"]["property_type"] == {"scheme": "SCT", "value": "4147007", "meaning": "Mass"}
    assert segments["2e"]["property_type"]["value"] == "60046008"  # Pleural effusion
    seg = hd.seg.segread(out / entry["seg"])
    for side, code in (("left_lung", codes.SCT.Left), ("right_lung", codes.SCT.Right)):
        number = segments[side]["segment_number"]
        description = seg.get_segment_description(number)
        assert description.segmented_property_category == codes.SCT.AnatomicalStructure
        assert description.segmented_property_type == codes.SCT.Lung
        assert description.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
        item = raw.SegmentSequence[number - 1].SegmentedPropertyTypeCodeSequence[0]
        assert item.SegmentedPropertyTypeModifierCodeSequence[0].CodeValue == code.value
        assert description.segment_label == side.replace("_", " ").capitalize()
    mass = seg.get_segment_description(segments["2d"]["segment_number"])
    assert mass.segmented_property_category == codes.SCT.MorphologicallyAbnormalStructure
    assert mass.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.MANUAL

    # highdicom: the SEG references the exported series, same frame of reference; the mass back on it
    assert raw.ReferencedSeriesSequence[0].SeriesInstanceUID == series[0].SeriesInstanceUID
    referenced = {
        i.ReferencedSOPInstanceUID for i in raw.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    }
    assert referenced <= set(stored_uids)
    assert raw.FrameOfReferenceUID == series[0].FrameOfReferenceUID
    number = segments["2d"]["segment_number"]
    for uids in ([ds.SOPInstanceUID for ds in series], stored_uids):
        got = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[number])
        np.testing.assert_array_equal(got[..., 0], real.mass.transpose(2, 1, 0))

    # SimpleITK: the rebuilt series has the canonical NIfTI's geometry and values
    reader = sitk.ImageSeriesReader()
    names = reader.GetGDCMSeriesFileNames(str(out / "series" / entry["case_id"]), entry["series_uid"])
    assert len(names) == 30
    reader.SetFileNames(names)
    rebuilt = reader.Execute()
    canonical = sitk.ReadImage(default_storage.path(real.ct.file.name))
    np.testing.assert_allclose(rebuilt.GetOrigin(), canonical.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(rebuilt.GetSpacing(), canonical.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(rebuilt.GetDirection(), canonical.GetDirection(), atol=1e-5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(rebuilt), sitk.GetArrayFromImage(canonical))
