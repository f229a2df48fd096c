"""DICOM de-identification (PS3.15 Annex E basic profile, modified dates): studies.deid.

Real headers from pydicom's test files (CT_small, MR_small, RG1_UNCR from pydicom-data) and real Philips
PET header values from ../shared/data/pet/suv-metadata, plus synthetic datasets that set every attribute
of the profile's table to a recognisable ``SECRET…`` value.
"""

import copy
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag

from studies.deid import (
    deidentify_header,
    header_from_json,
    header_to_json,
)
from studies.deid.profile import BASIC_PROFILE, D, K, U, X, Z
from studies.pseudonyms import uid_remap
from tests.conftest import SHARED_DATA

SECRET = "project-secret"
PSEUDONYM = "P0123456789AB"
SHIFT = -37
PHILIPS = "Philips PET Private Group"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
PET_IMAGE = "1.2.840.10008.5.1.4.1.1.128"
SUV_DIR = SHARED_DATA / "pet" / "suv-metadata"


def deid(ds: Dataset, secret: str = SECRET) -> Dataset:
    return deidentify_header(ds, secret=secret, pseudonym=PSEUDONYM, date_shift_days=SHIFT)


def read_testfile(name: str, *, pixels: bool = False) -> Dataset:
    path = pydicom.data.get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom test file {name} is not installed (pydicom-data)")
    return pydicom.dcmread(path, stop_before_pixels=not pixels)


def walk(ds: Dataset, path: str = "") -> Iterator[tuple[str, DataElement]]:
    """Every element of ``ds`` and of its file meta, recursively through sequence items."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and not path:
        yield from walk(meta, "meta")
    for elem in ds:
        where = f"{path}/{elem.keyword or elem.tag}"
        yield where, elem
        if elem.VR == "SQ":
            for i, item in enumerate(elem.value):
                yield from walk(item, f"{where}[{i}]")


def value_text(elem: DataElement) -> str:
    value = elem.value
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if elem.VR == "SQ":
        return ""
    return str(value)


def leaks(ds: Dataset, needles: list[str]) -> list[str]:
    """``path: value`` of every element whose value contains one of ``needles`` (case-insensitive)."""
    wanted = [n.lower() for n in needles if n]
    return [
        f"{where}: {value_text(elem)!r}"
        for where, elem in walk(ds)
        if any(n in value_text(elem).lower() for n in wanted)
    ]


def shifted(date: str, days: int = SHIFT) -> str:
    return (dt.datetime.strptime(date, "%Y%m%d").date() + dt.timedelta(days=days)).strftime("%Y%m%d")


# --- Synthetic datasets -------------------------------------------------------------------------------

_NUMERIC_VRS = {"US", "SS", "UL", "SL", "FL", "FD", "DS", "IS", "UV", "SV"}


def secret_value(vr: str, n: int):
    if vr in _NUMERIC_VRS:
        return 4242 if vr not in ("DS", "IS") else "4242"
    if vr in ("OB", "OW", "UN"):
        return f"SECRET{n:03d}X".encode()
    if vr == "DA":
        return "19770707"
    if vr == "DT":
        return "19770707121314"
    if vr == "TM":
        return "121314"
    if vr == "AS":
        return "042Y"
    if vr == "UI":
        return f"1.2.3.4.{n}"
    if vr == "SQ":
        item = Dataset()
        item.CodeValue = f"SECRET{n:03d}"
        item.CodingSchemeDesignator = "99SECRET"
        item.CodeMeaning = f"SECRET{n:03d} meaning"
        item.PersonName = f"SECRET{n:03d}^Nested"
        return Sequence([item])
    return f"SECRET{n:03d}"


def identified_dataset() -> Dataset:
    """A CT header where every attribute of the table (and a few more) holds a ``SECRET…`` value."""
    ds = Dataset()
    for n, (tag, _action) in enumerate(sorted(BASIC_PROFILE.items())):
        if tag.group == 0x0002:
            continue  # file meta, set below
        vr = dictionary_VR(tag).split(" or ")[0]
        ds.add(DataElement(tag, vr, secret_value(vr, n)))
    ds.PatientName = "SECRETSURNAME^SECRETGIVEN"
    ds.PatientID = "SECRETPID42"
    ds.PatientBirthDate = "19610203"
    ds.PatientSex = "F"
    ds.PatientAge = "063Y"
    ds.PatientWeight = "71.5"
    ds.PatientSize = "1.68"
    ds.EvaluatorName = "SECRETEVALUATOR^Eve"  # a person name the table does not list
    ds.SOPClassUID = CT_IMAGE
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.99.1.1"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.99.2"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.99.3"
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.99.4"
    ds.StudyDate = "20200315"
    ds.SeriesDate = "20200316"
    ds.AcquisitionDateTime = "20200316101112.123456+0100"
    ds.StudyTime = "101112"
    ds.Modality = "CT"
    ds.Manufacturer = "ACME"
    ds.ImagePositionPatient = [-100.0, -120.5, 30.25]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.7, 0.7]
    ds.SliceThickness = "1.25"
    ds.RescaleSlope = "1"
    ds.RescaleIntercept = "-1024"
    ds.Rows = 4
    ds.Columns = 4
    ds.PixelData = b"\x00\x01" * 16

    ref = Dataset()  # kept (X/Z/U*): UIDs remapped, identifying attributes inside cleaned
    ref.ReferencedSOPClassUID = CT_IMAGE
    ref.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.99.1.2"
    ref.InstitutionName = "SECRETNESTEDHOSPITAL"
    ref.OperatorsName = "SECRETNESTEDOPERATOR"
    equipment = Dataset()  # a sequence the table does not list, two levels down
    equipment.StationName = "SECRETDEEPSTN"
    equipment.DeviceSerialNumber = "SECRETDEEPSERIAL"
    equipment.InstitutionAddress = "SECRET 1 Deep Street"
    equipment.ContributionDateTime = "20200301080000"
    ref.ContributingEquipmentSequence = Sequence([equipment])
    ds.ReferencedImageSequence = Sequence([ref])
    ds.SourceImageSequence = Sequence([copy.deepcopy(ref)])

    private = ds.private_block(0x0019, "SECRET VENDOR", create=True)
    private.add_new(0x01, "LO", "SECRETPRIVATE")
    ds.add_new(0x00091001, "LO", "SECRETORPHAN")  # a private element without a creator

    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CT_IMAGE
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.file_meta.SourceApplicationEntityTitle = "SECRETAE"
    return ds


def pet_dataset(record: dict) -> Dataset:
    """A Philips PET header from one record of a cornerstonejs calculate-suv ``*-instances.json`` file,
    converted to the DICOM JSON model and read with ``Dataset.from_json``, plus identifying attributes."""
    in_sequence = {
        "RadionuclideTotalDose",
        "RadionuclideHalfLife",
        "RadiopharmaceuticalStartTime",
        "RadiopharmaceuticalStartDateTime",
    }
    top: dict = {}
    radiopharmaceutical: dict = {}
    for keyword, value in record.items():
        if keyword == "PhilipsPETPrivateGroup":
            continue
        tag = tag_for_keyword(keyword)
        target = radiopharmaceutical if keyword in in_sequence else top
        target[f"{tag:08X}"] = {
            "vr": dictionary_VR(tag),
            "Value": value if isinstance(value, list) else [value],
        }
    top["00540016"] = {"vr": "SQ", "Value": [radiopharmaceutical]}
    factors = record.get("PhilipsPETPrivateGroup", {})
    top["70530010"] = {"vr": "LO", "Value": [PHILIPS]}
    if "SUVScaleFactor" in factors:
        top["70531000"] = {"vr": "DS", "Value": [float(factors["SUVScaleFactor"])]}
    if "ActivityConcentrationScaleFactor" in factors:
        top["70531009"] = {"vr": "DS", "Value": [float(factors["ActivityConcentrationScaleFactor"])]}
    top["70531001"] = {"vr": "LO", "Value": ["SECRETPHILIPSOTHER"]}  # same block, not whitelisted
    top["00190010"] = {"vr": "LO", "Value": ["SECRET VENDOR"]}
    top["00191001"] = {"vr": "LO", "Value": ["SECRETVENDORVALUE"]}
    ds = Dataset.from_json(top)
    ds.SOPClassUID = PET_IMAGE
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.77.1"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.77.2"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.77.3"
    ds.Modality = "PT"
    ds.PatientName = "SECRETPET^Patient"
    ds.PatientID = "SECRETPET01"
    ds.PatientBirthDate = "19500101"
    ds.InstitutionName = "SECRET PET CENTRE"
    ds.RescaleSlope = "2.5"
    ds.RescaleIntercept = "0"
    return ds


def philips_records(name: str) -> list[dict]:
    path = SUV_DIR / f"{name}-instances.json"
    if not path.is_file():
        pytest.skip(f"real PET header values {path} are absent (../shared/data is not on this machine)")
    return json.loads(Path(path).read_text())


# --- The table ----------------------------------------------------------------------------------------


def test_table_covers_the_identifying_attributes_of_the_basic_profile():
    must_go = [
        "PatientName", "PatientID", "PatientBirthDate", "PatientBirthTime", "PatientAddress",
        "PatientTelephoneNumbers", "PatientMotherBirthName", "PatientBirthName", "OtherPatientIDs",
        "OtherPatientNames", "OtherPatientIDsSequence", "PatientComments", "MedicalRecordLocator",
        "IssuerOfPatientID", "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
        "InstitutionCodeSequence", "ReferringPhysicianName", "ReferringPhysicianAddress",
        "ReferringPhysicianTelephoneNumbers", "PerformingPhysicianName", "NameOfPhysiciansReadingStudy",
        "PhysiciansOfRecord", "OperatorsName", "RequestingPhysician", "StationName", "DeviceSerialNumber",
        "AccessionNumber", "StudyID", "AdmissionID", "RequestedProcedureID", "PerformedProcedureStepID",
        "ScheduledProcedureStepID", "ImageComments", "AdditionalPatientHistory", "RequestAttributesSequence",
        "ReferencedPatientSequence", "ReferencedStudySequence", "DigitalSignaturesSequence",
        "OriginalAttributesSequence", "IconImageSequence", "ProtocolName", "StudyDescription",
        "SeriesDescription", "DetectorID", "PlateID", "CassetteID", "GantryID", "GeneratorID",
        "ContentSequence", "StationAETitle", "RetrieveAETitle", "TimezoneOffsetFromUTC",
    ]  # fmt: skip
    missing = [k for k in must_go if BASIC_PROFILE.get(Tag(tag_for_keyword(k))) not in (X, Z, D)]
    assert missing == []
    assert len([a for a in BASIC_PROFILE.values() if a in (X, Z, D)]) > 380
    # Kept by the options that are applied: patient characteristics and the image references (remapped).
    for keyword in ("PatientSex", "PatientAge", "PatientWeight", "PatientSize"):
        assert BASIC_PROFILE[Tag(tag_for_keyword(keyword))] == K
    for keyword in ("ReferencedImageSequence", "SourceImageSequence"):
        assert BASIC_PROFILE[Tag(tag_for_keyword(keyword))] == U


# --- Synthetic: every attribute of the table ----------------------------------------------------------


def test_every_identifying_attribute_of_the_table_is_removed_emptied_or_replaced():
    ds = identified_dataset()
    out = deid(ds)
    assert leaks(out, ["SECRET"]) == []
    for tag, action in BASIC_PROFILE.items():
        if tag.group == 0x0002 or action in (K, U):
            continue
        keyword = keyword_for_tag(tag)
        vr = dictionary_VR(tag)
        if keyword in ("PatientName", "PatientID"):
            assert out[tag].value == PSEUDONYM
        elif action == X:
            assert tag not in out, keyword
        elif vr in ("DA", "DT", "TM") and keyword not in ("PatientBirthDate",):
            continue  # modified dates: checked below
        elif action == Z or vr == "SQ":
            assert tag in out and out[tag].value in ("", None, [], b""), keyword
        else:  # D
            assert tag in out and str(out[tag].value) != str(ds[tag].value), keyword
    assert "EvaluatorName" in out and out.EvaluatorName == ""
    assert out.file_meta.get("SourceApplicationEntityTitle") is None


def test_identifiers_gone_from_nested_sequences_and_references_remapped():
    ds = identified_dataset()
    out = deid(ds)
    for seq in (out.ReferencedImageSequence, out.SourceImageSequence):
        item = seq[0]
        assert "InstitutionName" not in item and "OperatorsName" not in item
        assert item.ReferencedSOPClassUID == CT_IMAGE
        assert item.ReferencedSOPInstanceUID == uid_remap(SECRET, "1.2.826.0.1.3680043.99.1.2")
        equipment = item.ContributingEquipmentSequence[0]
        assert "StationName" not in equipment and "DeviceSerialNumber" not in equipment
        assert "InstitutionAddress" not in equipment
        assert equipment.ContributionDateTime == shifted("20200301") + "080000"


def test_patient_becomes_the_pseudonym_and_keeps_only_its_characteristics():
    out = deid(identified_dataset())
    assert out.PatientName == PSEUDONYM and out.PatientID == PSEUDONYM
    assert out.PatientBirthDate == ""
    assert "PatientBirthTime" not in out
    assert (out.PatientSex, out.PatientAge, str(out.PatientWeight), str(out.PatientSize)) == (
        "F",
        "063Y",
        "71.5",
        "1.68",
    )


def test_marks_the_header_as_de_identified():
    out = deid(identified_dataset())
    assert out.PatientIdentityRemoved == "YES"
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"
    assert out.DeidentificationMethod
    codes = {(item.CodeValue, item.CodingSchemeDesignator) for item in out.DeidentificationMethodCodeSequence}
    assert {("113100", "DCM"), ("113107", "DCM")} <= codes


def test_private_elements_removed():
    out = deid(identified_dataset())
    assert [str(e.tag) for _, e in walk(out) if e.tag.is_private] == []
    ct = deid(read_testfile("CT_small.dcm"))
    assert any(e.tag.is_private for e in read_testfile("CT_small.dcm"))
    assert [str(e.tag) for _, e in walk(ct) if e.tag.is_private] == []


def test_input_is_not_changed_and_pixels_are_dropped():
    ds = identified_dataset()
    before = copy.deepcopy(ds)
    out = deid(ds)
    assert ds == before and ds.file_meta == before.file_meta
    assert ds.PatientName == "SECRETSURNAME^SECRETGIVEN" and "PixelData" in ds
    assert "PixelData" not in out
    real = read_testfile("CT_small.dcm", pixels=True)
    real_json = real.to_json_dict()
    out = deid(real)
    assert real.to_json_dict() == real_json
    assert "PixelData" not in out and "PixelData" in real


# --- Dates --------------------------------------------------------------------------------------------


def test_dates_shifted_exactly_and_times_kept():
    ds = identified_dataset()
    ds.ContentDate = "20200229"  # leap day
    ds.InstanceCreationDate = "20200101"
    ds.AdmittingDate = "20200310"  # X in the basic profile, kept shifted by the modified-dates option
    ds.add_new(0x00400244, "DA", "20200314")  # PerformedProcedureStepStartDate
    ds.CalibrationDate = ["20190101", "20191231"]  # multi-valued
    ds.RadiopharmaceuticalInformationSequence = Sequence([Dataset()])
    ds.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartDateTime = "20200316093000"
    ds.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartTime = "093000"
    out = deid(ds)
    assert out.StudyDate == shifted("20200315")
    assert out.SeriesDate == shifted("20200316")
    assert out.ContentDate == shifted("20200229")
    assert out.InstanceCreationDate == shifted("20200101")
    assert out.AdmittingDate == shifted("20200310")
    assert out.PerformedProcedureStepStartDate == shifted("20200314")
    assert list(out.CalibrationDate) == [shifted("20190101"), shifted("20191231")]
    assert out.AcquisitionDateTime == shifted("20200316") + "101112.123456+0100"
    item = out.RadiopharmaceuticalInformationSequence[0]
    assert item.RadiopharmaceuticalStartDateTime == shifted("20200316") + "093000"
    assert item.RadiopharmaceuticalStartTime == "093000"
    assert out.StudyTime == "101112"
    start = dt.datetime.strptime(ds.StudyDate, "%Y%m%d")
    assert dt.datetime.strptime(out.StudyDate, "%Y%m%d") - start == dt.timedelta(days=SHIFT)


@pytest.mark.filterwarnings("ignore:Invalid value for VR DA")
def test_partial_and_broken_dates():
    ds = Dataset()
    ds.StudyDate = "2020"  # not a date: emptied rather than kept
    ds.AcquisitionDateTime = "202003"  # month precision: shifted from the 1st, same precision
    ds.ContentDate = "20200301-20200310"  # a range (queries)
    out = deid(ds)
    assert out.StudyDate == ""
    assert out.AcquisitionDateTime == shifted("20200301")[:6]
    assert out.ContentDate == f"{shifted('20200301')}-{shifted('20200310')}"


# --- UIDs ---------------------------------------------------------------------------------------------


def test_uids_remapped_consistently_across_files_and_keyed_by_the_secret():
    first = read_testfile("CT_small.dcm")
    second = read_testfile("CT_small.dcm")
    second.SOPInstanceUID = first.SOPInstanceUID + ".2"
    a, b = deid(first), deid(second)
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert a[keyword].value == b[keyword].value == uid_remap(SECRET, first[keyword].value)
        assert a[keyword].value != first[keyword].value
    assert a.SOPInstanceUID != b.SOPInstanceUID
    assert a.file_meta.MediaStorageSOPInstanceUID == a.SOPInstanceUID
    other = deid(first, secret="another-project")
    assert other.StudyInstanceUID != a.StudyInstanceUID
    # Well-known UIDs stay.
    assert a.SOPClassUID == CT_IMAGE
    assert a.file_meta.TransferSyntaxUID == first.file_meta.TransferSyntaxUID
    assert a.file_meta.ImplementationClassUID == first.file_meta.ImplementationClassUID
    assert all(len(e.value) <= 64 for _, e in walk(a) if e.VR == "UI" and isinstance(e.value, str))


def test_references_point_at_the_remapped_instances():
    source = read_testfile("CT_small.dcm")
    derived = read_testfile("MR_small.dcm")
    ref = Dataset()
    ref.ReferencedSOPClassUID = source.SOPClassUID
    ref.ReferencedSOPInstanceUID = source.SOPInstanceUID
    derived.ReferencedImageSequence = Sequence([ref])
    derived.SourceImageSequence = Sequence([copy.deepcopy(ref)])
    derived.ReferencedSOPSequence = Sequence([copy.deepcopy(ref)])
    derived.ReferencedSeriesSequence = Sequence([Dataset()])
    derived.ReferencedSeriesSequence[0].SeriesInstanceUID = source.SeriesInstanceUID
    new_source, new_derived = deid(source), deid(derived)
    for seq in ("ReferencedImageSequence", "SourceImageSequence", "ReferencedSOPSequence"):
        item = new_derived[seq].value[0]
        assert item.ReferencedSOPInstanceUID == new_source.SOPInstanceUID
        assert item.ReferencedSOPClassUID == source.SOPClassUID
    assert new_derived.ReferencedSeriesSequence[0].SeriesInstanceUID == new_source.SeriesInstanceUID


# --- Ages over 89 and private codes ---------------------------------------------------------------------


def real_ct_header(shared_data: Path) -> Dataset:
    """The first slice of the real chest CT (Lung-PET-CT-Dx, already anonymised by TCIA: PatientAge 053Y)."""
    return pydicom.dcmread(shared_data / "ct" / "lungdx-a0002" / "1-01.dcm", stop_before_pixels=True)


@pytest.mark.parametrize(
    ("age", "expected"),
    [
        ("095Y", "090Y"),
        ("090Y", "090Y"),
        ("089Y", "089Y"),
        ("053Y", "053Y"),
        ("1100M", "090Y"),  # 91 years 8 months, too long for AS but found in the wild
        ("1079M", "1079M"),  # 89 years 11 months: still 89
        ("999M", "999M"),
        ("4700W", "090Y"),
        ("999D", "999D"),
        ("X95", ""),  # not an age: emptied
    ],
)
def test_ages_of_90_years_or_more_become_090Y(shared_data, age, expected):
    ds = real_ct_header(shared_data)
    ds.PatientAge = age
    out = deid(ds)
    assert out.PatientAge == expected
    assert header_from_json(header_to_json(out)).PatientAge == expected
    assert ds.PatientAge == age  # the input is not changed


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def test_codes_of_private_coding_schemes_are_dropped(shared_data):
    ds = real_ct_header(shared_data)
    ds.AnatomicRegionSequence = Sequence(
        [_code("51185008", "SCT", "Chest"), _code("CHEST-ELSEWHERE", "99LOCAL", "St Elsewhere chest")]
    )
    ds.ProcedureCodeSequence = Sequence([_code("CTCH7", "L", "Ward 7 chest CT")])
    ds.RequestedProcedureCodeSequence = Sequence(
        [_code("24627-2", "LN", "CT Chest"), _code("P12", "LOCAL", "Dr Who protocol 12")]
    )
    ds.PerformedProtocolCodeSequence = Sequence([_code("P7", "99STELSEWHERE", "Lung protocol B")])
    equipment = Dataset()
    equipment.Manufacturer = "SIEMENS"
    equipment.PurposeOfReferenceCodeSequence = Sequence(
        [_code("109101", "DCM", "Acquisition Equipment"), _code("Q", "99RADIOLOGY", "QA desk 3")]
    )
    ds.ContributingEquipmentSequence = Sequence([equipment])
    scheme = Dataset()
    scheme.CodingSchemeDesignator = "99STELSEWHERE"
    scheme.CodingSchemeName = "St Elsewhere Hospital codes"
    ds.CodingSchemeIdentificationSequence = Sequence([scheme])

    out = deid(ds)

    def schemes(keyword: str, where: Dataset = out) -> list[str]:
        return [item.CodingSchemeDesignator for item in where.get(keyword) or []]

    assert schemes("AnatomicRegionSequence") == ["SCT"]
    assert schemes("RequestedProcedureCodeSequence") == ["LN"]
    assert "ProcedureCodeSequence" not in out  # its only item was private: the sequence goes
    assert "PerformedProtocolCodeSequence" not in out
    assert "CodingSchemeIdentificationSequence" not in out
    assert schemes("PurposeOfReferenceCodeSequence", out.ContributingEquipmentSequence[0]) == ["DCM"]
    assert {s for _, e in walk(out) if e.keyword == "CodingSchemeDesignator" for s in [e.value]} <= {
        "DCM",
        "SCT",
        "LN",
    }
    assert leaks(out, ["Elsewhere", "Ward 7", "Dr Who", "QA desk", "CTCH7"]) == []
    assert schemes("DeidentificationMethodCodeSequence") == ["DCM"] * 4  # the profile's own codes
