"""De-identification of real headers (CT, MR, CR, Philips PET), header identity, burned-in status and
the JSON form of de-identified headers."""

import json

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence

from studies import scrub
from studies.deid import (
    burned_in_status,
    header_from_json,
    header_identity,
    header_to_json,
)
from studies.deid.profile import SAFE_PRIVATE
from tests.studies.test_deid import (
    CT_IMAGE,
    PHILIPS,
    PSEUDONYM,
    deid,
    identified_dataset,
    leaks,
    pet_dataset,
    philips_records,
    read_testfile,
    shifted,
)

# --- Real files ---------------------------------------------------------------------------------------

_IDENTIFYING = [
    "PatientName", "PatientID", "OtherPatientIDs", "InstitutionName", "InstitutionalDepartmentName",
    "StationName", "OperatorsName", "ReferringPhysicianName", "NameOfPhysiciansReadingStudy",
    "DeviceSerialNumber", "AccessionNumber", "StudyID", "StudyInstanceUID", "SeriesInstanceUID",
    "SOPInstanceUID", "FrameOfReferenceUID", "InstanceCreatorUID", "PatientBirthDate",
]  # fmt: skip
_PRESERVED = [
    "Modality", "SOPClassUID", "Rows", "Columns", "PixelSpacing", "ImagePositionPatient",
    "ImageOrientationPatient", "SliceThickness", "SpacingBetweenSlices", "SliceLocation", "RescaleSlope",
    "RescaleIntercept", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
    "PhotometricInterpretation", "SamplesPerPixel", "WindowCenter", "WindowWidth", "PatientPosition",
    "PatientSex", "PatientAge", "PatientWeight", "PatientSize", "KVP", "Manufacturer",
    "ManufacturerModelName", "ConvolutionKernel", "ViewPosition", "BodyPartExamined", "PixelPaddingValue",
    "SeriesNumber", "InstanceNumber", "StudyTime", "SeriesTime", "AcquisitionTime",
]  # fmt: skip


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "RG1_UNCR.dcm"])
def test_real_headers_lose_identifiers_and_keep_what_pixels_need(name):
    ds = read_testfile(name)
    needles = []
    for keyword in _IDENTIFYING:
        value = ds.get(keyword)
        values = value if isinstance(value, list | pydicom.multival.MultiValue) else [value]
        needles += [str(v).strip() for v in values if v is not None and len(str(v).strip()) >= 4]
    # Parts of the kept manufacturer name are not identifiers (MR_small: institution "TOSHIBA").
    needles = [n for n in needles if n not in str(ds.get("Manufacturer", ""))]
    assert needles, "the test file should carry identifiers"
    out = deid(ds)
    assert leaks(out, needles) == []
    for keyword in _PRESERVED:
        if keyword in ds:
            assert out[keyword].value == ds[keyword].value, keyword
    for keyword in ("StudyDate", "SeriesDate", "ContentDate", "AcquisitionDate"):
        if ds.get(keyword):
            assert out[keyword].value == shifted(ds[keyword].value), keyword


# --- PET: SUV factors and dose fields -----------------------------------------------------------------

_PET_KEPT = [
    "Units", "DecayCorrection", "CorrectedImage", "PatientWeight", "PatientSize", "PatientSex",
    "ActualFrameDuration", "FrameReferenceTime", "AcquisitionTime", "SeriesTime", "RescaleSlope",
    "RescaleIntercept", "Modality",
]  # fmt: skip


def check_pet(ds: Dataset) -> None:
    out = deid(ds)
    block = out.private_block(0x7053, PHILIPS)
    for offset in (0x00, 0x09):
        if (0x7053, 0x1000 + offset) in ds:
            assert block[offset].value == ds[0x7053, 0x1000 + offset].value
    assert out[0x7053, 0x0010].value == PHILIPS
    assert (0x7053, 0x1001) not in out and (0x0019, 0x1001) not in out and (0x0019, 0x0010) not in out
    assert leaks(out, ["SECRET"]) == []
    for keyword in _PET_KEPT:
        if keyword in ds:
            assert out[keyword].value == ds[keyword].value, keyword
    before = ds.RadiopharmaceuticalInformationSequence[0]
    after = out.RadiopharmaceuticalInformationSequence[0]
    assert after.RadionuclideTotalDose == before.RadionuclideTotalDose
    assert after.RadionuclideHalfLife == before.RadionuclideHalfLife
    assert after.RadiopharmaceuticalStartTime == before.RadiopharmaceuticalStartTime
    if "RadiopharmaceuticalStartDateTime" in before:
        start = before.RadiopharmaceuticalStartDateTime
        assert after.RadiopharmaceuticalStartDateTime == shifted(start[:8]) + start[8:]
    assert out.AcquisitionDate == shifted(ds.AcquisitionDate)


@pytest.mark.parametrize("name", ["PHILIPS_BQML", "PHILIPS_CNTS_AND_SUV"])
def test_real_philips_pet_headers_keep_suv_factors_and_dose(name):
    for record in philips_records(name):
        check_pet(pet_dataset(record))


def test_synthetic_philips_pet_header_keeps_suv_factors():
    record = {
        "SeriesDate": "20201217", "SeriesTime": "110155", "PatientSex": "F", "PatientSize": 1.75,
        "PatientWeight": 64, "AcquisitionDate": "20201217", "AcquisitionTime": "110156",
        "DecayCorrection": "START", "Units": "BQML", "RadionuclideTotalDose": 126000000,
        "RadionuclideHalfLife": 6586.2, "RadiopharmaceuticalStartTime": "100058",
        "RadiopharmaceuticalStartDateTime": "20201217100058",
        "PhilipsPETPrivateGroup": {"SUVScaleFactor": "0.0035", "ActivityConcentrationScaleFactor": "4.7"},
    }  # fmt: skip
    check_pet(pet_dataset(record))
    assert {(g, c, o) for g, c, o in SAFE_PRIVATE} == {(0x7053, PHILIPS, 0x00), (0x7053, PHILIPS, 0x09)}


def test_philips_block_under_another_creator_is_removed():
    ds = Dataset()
    ds.add_new(0x70530010, "LO", "Some Other Vendor")
    ds.add_new(0x70531000, "DS", "0.5")
    out = deid(ds)
    assert not [e for e in out if e.tag.is_private]


# --- Identity, burned-in annotation, JSON -------------------------------------------------------------


def test_header_identity_returns_the_original_identifiers():
    ds = read_testfile("MR_small.dcm")
    ds.AccessionNumber = "ACC12345"
    ds.PatientBirthDate = "19610203"
    ds.OtherPatientNames = "Maiden^Mary"
    ds.OtherPatientIDsSequence = Sequence([Dataset()])
    ds.OtherPatientIDsSequence[0].PatientID = "MRN-777"
    ds.PerformingPhysicianName = "Doctor^Dolittle"
    identity = header_identity(ds)
    assert identity["patient_id"] == ds.PatientID
    assert identity["patient_name"] == str(ds.PatientName)
    assert identity["birth_date"] == "19610203"
    assert identity["accession"] == "ACC12345"
    assert identity["study_uid"] == ds.StudyInstanceUID
    assert identity["series_uid"] == ds.SeriesInstanceUID
    assert identity["sop_uid"] == ds.SOPInstanceUID
    assert identity["study_date"] == ds.StudyDate
    tokens = set(identity["scrub_tokens"])
    expected = scrub.identifier_tokens(
        names=[
            str(ds.PatientName), "Maiden^Mary", str(ds.ReferringPhysicianName), "Doctor^Dolittle",
            str(ds.NameOfPhysiciansReadingStudy), str(ds.OperatorsName),
        ],
        ids=[ds.PatientID, "ACC12345", "MRN-777"],
        dates=["19610203"],
    )  # fmt: skip
    assert tokens == expected
    assert {"acc12345", "mrn-777", "maiden", "dolittle", "1961-02-03", "03.02.1961"} <= tokens


def test_header_identity_of_an_empty_header():
    identity = header_identity(Dataset())
    assert identity["patient_id"] == "" and identity["study_uid"] == "" and identity["scrub_tokens"] == []


def _with(**attributes) -> Dataset:
    ds = Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


@pytest.mark.parametrize(
    ("ds", "expected"),
    [
        (_with(BurnedInAnnotation="YES", Modality="CT", SOPClassUID=CT_IMAGE), "YES"),
        (_with(BurnedInAnnotation="NO", Modality="OT", SOPClassUID="1.2.840.10008.5.1.4.1.1.7"), "NO"),
        (_with(Modality="OT", SOPClassUID="1.2.840.10008.5.1.4.1.1.7"), "UNKNOWN"),
        (_with(Modality="CR", SOPClassUID="1.2.840.10008.5.1.4.1.1.7.4"), "UNKNOWN"),  # multi-frame SC
        (_with(Modality="CT", SOPClassUID=CT_IMAGE, ConversionType="WSD"), "UNKNOWN"),
        (_with(Modality="OT"), "UNKNOWN"),
        (_with(Modality="CT", SOPClassUID=CT_IMAGE), "NO"),
        (_with(Modality="CR", SOPClassUID="1.2.840.10008.5.1.4.1.1.1"), "NO"),
    ],
)
def test_burned_in_status(ds, expected):
    assert burned_in_status(ds) == expected


def test_burned_in_status_reads_the_sop_class_from_file_meta_and_real_files():
    ds = _with(Modality="XC")
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    assert burned_in_status(ds) == "UNKNOWN"
    assert burned_in_status(read_testfile("CT_small.dcm")) == "NO"
    assert burned_in_status(read_testfile("RG1_UNCR.dcm")) == "NO"


def test_header_json_round_trip_without_bulk_data():
    ds = identified_dataset()
    ds.add_new(0x7053_0010, "LO", PHILIPS)
    ds.add_new(0x7053_1000, "DS", "0.003515736")
    out = deid(ds)
    out.add_new(0x00186011, "SQ", Sequence([Dataset()]))  # SequenceOfUltrasoundRegions, nested bulk
    out[0x00186011].value[0].add_new(0x00420011, "OB", b"\x01" * 200_000)
    out.add_new(0x00880200, "SQ", Sequence())
    out.add_new(0x00189345, "FD", 12.5)  # CTDIvol
    data = header_to_json(out)
    text = json.dumps(data)
    assert "SECRET" not in text
    back = header_from_json(json.loads(text))
    assert back.PatientName == PSEUDONYM
    assert back.StudyInstanceUID == out.StudyInstanceUID
    assert back.ReferencedImageSequence[0].ReferencedSOPInstanceUID == (
        out.ReferencedImageSequence[0].ReferencedSOPInstanceUID
    )
    assert back[0x7053, 0x1000].value == out[0x7053, 0x1000].value
    assert back.CTDIvol == 12.5
    assert "PixelData" not in back
    assert "EncapsulatedDocument" not in back[0x00186011].value[0]
    assert len(text) < 100_000


def test_header_json_of_real_file_drops_pixels():
    ds = read_testfile("CT_small.dcm", pixels=True)
    out = deid(ds)
    out.PixelData = ds.PixelData  # even when a caller forgot to drop them
    data = header_to_json(out)
    assert "7FE00010" not in data
    assert header_from_json(data).SeriesInstanceUID == out.SeriesInstanceUID
