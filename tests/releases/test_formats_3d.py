"""3D dataset exporters (ReXGroundingCT, MONAI datalist, DICOM SEG), each read back by its own loader.

Pure tests: synthetic cases written into tmp_path, no database."""

import json
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset

from releases.formats import dicom_seg, monai_datalist, rexgroundingct
from releases.records import CaseRecord, DirSink, FormatError, ImageRecord, LabelRecord, ReleaseMeta
from studies.deid.core import header_to_json
from studies.ingest.volume_io import nifti_mask_gz

SHAPE = (24, 20, 12)  # (X, Y, Z)
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
META = ReleaseMeta(name="chest-findings", version=3, description="test release", licence="CC-BY-4.0")
FORMATS = [rexgroundingct, monai_datalist, dicom_seg]


def make_affine(kind: str) -> np.ndarray:
    """Voxel -> RAS+ mm: ``axial`` as DICOM axial CT comes in (x and y flipped), ``flipped`` with the slice
    axis running from head to feet and X towards patient left, ``oblique`` rotated about two axes."""
    if kind == "axial":
        affine = np.diag([-0.8, -0.8, 2.5, 1.0])
    elif kind == "flipped":
        affine = np.diag([0.8, -0.8, -2.5, 1.0])
    else:
        a, b = np.deg2rad(12.0), np.deg2rad(-7.0)
        rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
        rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
        affine = np.eye(4)
        affine[:3, :3] = rz @ rx @ np.diag([-0.8, -0.8, 2.5])
    affine[:3, 3] = [101.6, 87.25, -212.5]
    return affine


def ct_array(shape=SHAPE) -> np.ndarray:
    """int16 HU whose value tells the voxel: -1000 + i + 30 j + 700 k."""
    i, j, k = np.indices(shape)
    return np.asfortranarray((-1000 + i + 30 * j + 700 * k).astype(np.int16))


def blob(slices: tuple[slice, ...], shape=SHAPE) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[slices] = True
    return mask


NODULES = blob(np.s_[2:5, 3:6, 1:3]) | blob(np.s_[15:19, 12:15, 7:10])  # two 26-separate blobs
ATELECTASIS = blob(np.s_[8:14, 5:10, 3:7])


def write_image(folder: Path, name: str, array: np.ndarray, affine: np.ndarray) -> Path:
    path = folder / f"{name}.nii.gz"
    img = nib.Nifti1Image(array, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    nib.save(img, str(path))
    return path


def mask_label(folder: Path, label_id: str, mask: np.ndarray, affine: np.ndarray, **kw) -> LabelRecord:
    path = folder / f"{label_id}.nii.gz"
    path.write_bytes(nifti_mask_gz(mask, affine))
    return LabelRecord(label_id=label_id, kind="mask", mask_path=path, **kw)


def make_case(
    folder: Path,
    case_id: str,
    split: str,
    affine: np.ndarray,
    masks: list[tuple[str, np.ndarray, dict]],
    extra: list[LabelRecord] = (),
    header: dict | None = None,
    sop_uids: list[str] = (),
) -> CaseRecord:
    folder.mkdir(parents=True, exist_ok=True)
    path = write_image(folder, case_id, ct_array(), affine)
    image = ImageRecord(
        path=path,
        shape=list(SHAPE),
        spacing=[0.8, 0.8, 2.5],
        affine=affine,
        modality="CT",
        study_uid=f"2.25.{abs(hash(case_id)) % 10**12}1",
        series_uid=f"2.25.{abs(hash(case_id)) % 10**12}2",
        sop_uids=list(sop_uids),
        dicom_header=header,
    )
    labels = [mask_label(folder, f"{case_id}-{lid}", m, affine, **kw) for lid, m, kw in masks]
    return CaseRecord(
        case_id=case_id,
        patient_id=f"pseudo-{case_id}",
        study_id=f"study-{case_id}",
        split=split,
        image=image,
        report={
            "findings": "Two nodules in the right lower lobe. Basal atelectasis.",
            "impression": "Nodules.",
        },
        report_id=f"report-{case_id}",
        labels=[*labels, *extra],
    )


def findings(folder: Path, case_id: str, affine: np.ndarray) -> CaseRecord:
    """Two mask findings (nodules: two entities; atelectasis: one), a negative report-only finding and a
    box label that no 3D format here holds."""
    absent = LabelRecord(
        label_id=f"{case_id}-effusion",
        text="No pleural effusion.",
        kind="none",
        code="F3",
        category="2e",
        assertion="absent",
        source="weak",
        provenance={"labeler": "rules", "version": "2"},
    )
    box = LabelRecord(label_id=f"{case_id}-box", text="Rib fracture", kind="box", box=[1, 1, 1, 4, 4, 4])
    return make_case(
        folder,
        case_id,
        "train",
        affine,
        [
            (
                "nodules",
                NODULES,
                {"text": "Two nodules in the right lower lobe.", "category": "2d", "code": "F0"},
            ),
            (
                "atelectasis",
                ATELECTASIS,
                {
                    "text": "Basal atelectasis.",
                    "category": "2b",
                    "code": "F1",
                    "source": "model",
                    "provenance": {"source": "lung-seg", "model_version": "lungs v3"},
                },
            ),
        ],
        extra=[absent, box],
    )


def release(tmp_path: Path, affine: np.ndarray) -> list[CaseRecord]:
    src = tmp_path / "src"
    return [
        findings(src, "case-a", affine),
        make_case(src, "case-b", "val", affine, [], extra=[LabelRecord(label_id="case-b-n", text="Normal.")]),
        make_case(
            src, "case-c", "test", affine, [("nodules", NODULES, {"text": "Nodules.", "category": "2d"})]
        ),
    ]


def export(module, cases, out: Path, progress=None):
    sink = DirSink(out)
    try:
        return module.export(iter(cases), sink, META, progress)
    finally:
        sink.close()


def world(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    return (np.asarray(affine) @ np.c_[ijk, np.ones(len(ijk))].T).T[:, :3]


# --- ReXGroundingCT ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["axial", "flipped"])
def test_rexgroundingct_round_trip(tmp_path, kind):
    affine = make_affine(kind)
    cases = release(tmp_path, affine)
    out = tmp_path / "out"
    summary = export(rexgroundingct, cases, out)

    assert (summary.cases, summary.labels) == (3, 5)
    assert summary.skipped == ["case-a/case-a-box: kind 'box' is not supported by this format"]
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["name"] == "chest-findings" and dataset["version"] == 3
    assert [[e["name"] for e in dataset[s]] for s in ("train", "val", "test")] == [
        ["case-a.nii.gz"],
        ["case-b.nii.gz"],
        ["case-c.nii.gz"],
    ]
    entry = dataset["train"][0]
    assert entry["findings"] == {"0": "Two nodules in the right lower lobe.", "1": "Basal atelectasis."}
    assert entry["entity_counts"] == {"0": 2, "1": 1}
    assert entry["pixels"] == {"0": int(NODULES.sum()), "1": int(ATELECTASIS.sum())}
    assert entry["categories"] == {"0": "2d", "1": "2b"}
    assert entry["shape"] == list(SHAPE)
    assert entry["label_ids"] == {"0": "case-a-nodules", "1": "case-a-atelectasis"}
    assert entry["sources"] == {"0": "human", "1": "model"}
    np.testing.assert_allclose(entry["affine"], affine)

    image = nib.load(str(out / "images/case-a.nii.gz"))
    seg_img = nib.load(str(out / entry["segmentation"]))
    seg = np.asarray(seg_img.dataobj)
    assert seg.shape == (2, *SHAPE) and seg.dtype == np.uint8
    np.testing.assert_array_equal(np.asarray(image.dataobj), ct_array())
    np.testing.assert_allclose(image.affine, affine, atol=1e-4)
    np.testing.assert_allclose(seg_img.affine, affine, atol=1e-4)
    # channel 0: two entities, one per blob; channel 1: one
    assert set(np.unique(seg[0])) == {0, 1, 2} and set(np.unique(seg[1])) == {0, 1}
    np.testing.assert_array_equal(seg[0] > 0, NODULES)
    np.testing.assert_array_equal(seg[1] > 0, ATELECTASIS)
    first, second = blob(np.s_[2:5, 3:6, 1:3]), blob(np.s_[15:19, 12:15, 7:10])
    assert len(np.unique(seg[0][first])) == 1 and len(np.unique(seg[0][second])) == 1
    assert seg[0][first][0] != seg[0][second][0]
    # the same world points: channel voxels through the entry's affine = the source mask's voxels
    # through its own file's affine, and the image's value there is the value the voxel index tells
    source = nib.load(str(cases[0].labels[0].mask_path))
    ijk = np.argwhere(seg[0] > 0)
    np.testing.assert_allclose(
        world(entry["affine"], ijk), world(source.affine, np.argwhere(np.asarray(source.dataobj))), atol=1e-3
    )
    i, j, k = ijk.T
    np.testing.assert_array_equal(np.asarray(image.dataobj)[i, j, k], -1000 + i + 30 * j + 700 * k)

    # a case without mask labels: no segmentation file, F = 0
    empty = dataset["val"][0]
    assert empty["segmentation"] is None and empty["findings"] == {} and empty["entity_counts"] == {}
    assert not (out / "segmentations/case-b.nii.gz").exists()

    reports = json.loads((out / "reports_dataset.json").read_text())
    by_case = {c["case_id"]: c for c in reports["cases"]}
    assert by_case["case-a"]["report"]["impression"] == "Nodules."
    rows = {f["label_id"]: f for f in by_case["case-a"]["findings"]}
    assert set(rows) == {"case-a-nodules", "case-a-atelectasis", "case-a-effusion"}
    assert rows["case-a-effusion"] == {
        "label_id": "case-a-effusion",
        "text": "No pleural effusion.",
        "kind": "none",
        "code": "F3",
        "category": "2e",
        "location": "",
        "laterality": "",
        "assertion": "absent",
        "source": "weak",
        "provenance": {"labeler": "rules", "version": "2"},
        "channel": None,
    }
    assert rows["case-a-atelectasis"]["channel"] == 1
    assert [f["label_id"] for f in by_case["case-b"]["findings"]] == ["case-b-n"]
    assert summary.files == 3 + 2 + 2  # images, segmentations, the two JSON files


def test_rexgroundingct_many_entities_use_uint16(tmp_path):
    """More than 255 entities in a channel: uint16."""
    shape = (40, 40, 2)
    dots = np.zeros(shape, dtype=bool)
    dots[::2, ::2, 0] = True  # 400 isolated voxels
    affine = make_affine("axial")
    src = tmp_path / "src"
    src.mkdir()
    image = ImageRecord(
        path=write_image(src, "dots", np.zeros(shape, np.int16), affine),
        shape=list(shape),
        spacing=[0.8, 0.8, 2.5],
        affine=affine,
        modality="CT",
    )
    case = CaseRecord(
        "dots", "p", "s", "train", image, labels=[mask_label(src, "m", dots, affine, text="dots")]
    )
    export(rexgroundingct, [case], tmp_path / "out")
    entry = json.loads((tmp_path / "out/dataset.json").read_text())["train"][0]
    seg = np.asarray(nib.load(str(tmp_path / "out" / entry["segmentation"])).dataobj)
    assert entry["entity_counts"] == {"0": 400} and seg.dtype == np.uint16 and seg.max() == 400


def test_rexgroundingct_rejects_2d(tmp_path):
    affine = np.diag([-0.2, -0.2, 1.0, 1.0])
    image = ImageRecord(
        path=write_image(tmp_path, "cxr", np.zeros((30, 20), np.int16), affine),
        shape=[30, 20],
        spacing=[0.2, 0.2],
        affine=affine,
        modality="DX",
    )
    case = CaseRecord("cxr-1", "p", "s", "train", image)
    with pytest.raises(FormatError) as err:
        export(rexgroundingct, [case], tmp_path / "out")
    assert err.value.field == "cxr-1.image"


def test_mask_off_the_image_grid_is_refused(tmp_path):
    affine = make_affine("axial")
    case = make_case(tmp_path / "src", "case-x", "train", affine, [])
    shifted = affine.copy()
    shifted[:3, 3] += 5.0
    case.labels = [mask_label(tmp_path / "src", "off", NODULES, shifted, text="x")]
    with pytest.raises(FormatError) as err:
        export(rexgroundingct, [case], tmp_path / "out")
    assert err.value.field == "case-x/off.mask"


def test_image_files_are_gzipped_with_the_record_affine(tmp_path):
    """An uncompressed image is gzipped as it is; a file whose affine is not the record's is rewritten with
    the record's, the affine its masks and segmentations carry."""
    affine = make_affine("flipped")
    plain = make_case(tmp_path / "src", "plain", "train", affine, [])
    nib.save(nib.load(str(plain.image.path)), str(tmp_path / "src/plain.nii"))
    plain.image.path = tmp_path / "src/plain.nii"
    moved = make_case(tmp_path / "src", "moved", "train", affine, [("m", ATELECTASIS, {"text": "x"})])
    write_image(tmp_path / "src", "moved", ct_array(), make_affine("axial"))  # the file says otherwise
    out = tmp_path / "out"
    export(rexgroundingct, [plain, moved], out)
    for name in ("plain", "moved"):
        data = (out / f"images/{name}.nii.gz").read_bytes()
        assert data[:2] == b"\x1f\x8b"
        img = nib.load(str(out / f"images/{name}.nii.gz"))
        np.testing.assert_allclose(img.affine, affine, atol=1e-4)
        np.testing.assert_array_equal(np.asarray(img.dataobj), ct_array())
    np.testing.assert_allclose(nib.load(str(out / "segmentations/moved.nii.gz")).affine, affine, atol=1e-4)


# --- All formats: progress, laziness, skipped kinds ---------------------------------------------------------


@pytest.mark.parametrize("module", FORMATS, ids=lambda m: m.NAME)
def test_streams_cases_one_at_a_time(tmp_path, module):
    affine = make_affine("axial")
    calls: list[int] = []
    pulled: list[str] = []

    def cases():
        for n, split in enumerate(["train", "val", "test", "train"]):
            # the exporter has finished every earlier case before it asks for this one
            assert calls == list(range(1, n + 1))
            case = make_case(
                tmp_path / "src",
                f"c{n}",
                split,
                affine,
                [("m", ATELECTASIS, {"text": "Atelectasis.", "category": "2b"})],
                extra=[LabelRecord(label_id=f"c{n}-box", text="box", kind="box", box=[0, 0, 0, 1, 1, 1])],
            )
            pulled.append(case.case_id)
            yield case

    sink = DirSink(tmp_path / "out")
    summary = module.export(cases(), sink, META, calls.append)
    sink.close()
    assert calls == [1, 2, 3, 4] and pulled == ["c0", "c1", "c2", "c3"]
    assert summary.cases == 4 and summary.labels == 4
    assert summary.skipped == [f"c{n}/c{n}-box: kind 'box' is not supported by this format" for n in range(4)]
    assert summary.files == len(sink.files)
    assert not (tmp_path / "out/.scratch").exists()


@pytest.mark.parametrize("module", FORMATS, ids=lambda m: m.NAME)
def test_a_case_id_twice_is_refused(tmp_path, module):
    case = make_case(tmp_path / "src", "twice", "train", make_affine("axial"), [])
    with pytest.raises(FormatError) as err:
        export(module, [case, case], tmp_path / "out")
    assert err.value.field == "twice.case_id"


# --- MONAI ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["axial", "flipped"])
def test_monai_round_trip(tmp_path, kind):
    from monai.data import load_decathlon_datalist
    from monai.transforms import LoadImaged

    affine = make_affine(kind)
    out = tmp_path / "out"
    summary = export(monai_datalist, release(tmp_path, affine), out)
    assert summary.skipped == ["case-a/case-a-box: kind 'box' is not supported by this format"]

    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["labels"] == {"0": "background", "1": "2d", "2": "2b"}
    assert (dataset["numTraining"], dataset["numValidation"], dataset["numTest"]) == (1, 1, 1)
    assert dataset["tensorImageSize"] == "3D" and dataset["modality"] == {"0": "CT"}
    assert [s["label_id"] for s in dataset["cases"]["case-a"]["segments"]] == [
        "case-a-nodules",
        "case-a-atelectasis",
    ]
    assert [r["label_id"] for r in dataset["cases"]["case-a"]["report_only"]] == ["case-a-effusion"]

    training = load_decathlon_datalist(out / "dataset.json", is_segmentation=True, data_list_key="training")
    assert training[0]["image"] == str(out / "imagesTr/case-a.nii.gz")
    assert training[0]["label"] == str(out / "labelsTr/case-a.nii.gz")
    loader = LoadImaged(keys=["image", "label"])
    item = loader(training[0])
    image, label = item["image"], item["label"]
    np.testing.assert_allclose(np.asarray(image.affine), np.asarray(label.affine), atol=1e-5)
    assert tuple(label.shape) == SHAPE
    label = np.asarray(label)
    values = {name: int(v) for v, name in dataset["labels"].items()}
    np.testing.assert_array_equal(label == values["2d"], NODULES)
    np.testing.assert_array_equal(label == values["2b"], ATELECTASIS)
    assert set(np.unique(label)) == {0, 1, 2}
    np.testing.assert_array_equal(np.asarray(image), ct_array())

    for key in ("validation", "test"):
        items = load_decathlon_datalist(out / "dataset.json", is_segmentation=True, data_list_key=key)
        assert len(items) == 1 and Path(items[0]["label"]).is_file()
    empty = np.asarray(nib.load(str(out / "labelsTr/case-b.nii.gz")).dataobj)
    assert empty.shape == SHAPE and not empty.any()
    test_label = np.asarray(nib.load(str(out / "labelsTr/case-c.nii.gz")).dataobj)
    np.testing.assert_array_equal(test_label == values["2d"], NODULES)


def test_monai_overlap_later_label_wins(tmp_path):
    affine = make_affine("axial")
    overlap = blob(np.s_[12:20, 10:16, 6:11])  # overlaps the second nodule
    case = make_case(
        tmp_path / "src",
        "ov",
        "train",
        affine,
        [
            ("nodules", NODULES, {"text": "Nodules.", "category": "2d"}),
            ("consolidation", overlap, {"text": "Consolidation.", "category": "2b"}),
        ],
    )
    summary = export(monai_datalist, [case], tmp_path / "out")
    label = np.asarray(nib.load(str(tmp_path / "out/labelsTr/ov.nii.gz")).dataobj)
    np.testing.assert_array_equal(label == 2, overlap)
    np.testing.assert_array_equal(label == 1, NODULES & ~overlap)
    lost = int((NODULES & overlap).sum())
    assert summary.skipped == [
        f"ov/ov-nodules: {lost} voxels overlap ov-consolidation, which is later and wins in the label image"
    ]


def test_monai_2d_png_mask(tmp_path):
    from monai.data import load_decathlon_datalist

    affine = np.diag([-0.2, -0.25, 1.0, 1.0])
    pixels = np.arange(30 * 20, dtype=np.int16).reshape(30, 20)  # (X, Y)
    mask_rows_cols = np.zeros((20, 30), dtype=np.uint8)  # PNG (rows = Y, columns = X)
    mask_rows_cols[2:5, 10:18] = 255
    Image.fromarray(mask_rows_cols).save(tmp_path / "m.png")
    image = ImageRecord(
        path=write_image(tmp_path, "cxr", pixels, affine),
        shape=[30, 20],
        spacing=[0.2, 0.25],
        affine=affine,
        modality="DX",
    )
    label = LabelRecord(
        label_id="l1", text="Opacity.", kind="mask", code="Lung Opacity", mask_path=tmp_path / "m.png"
    )
    export(monai_datalist, [CaseRecord("cxr", "p", "s", "train", image, labels=[label])], tmp_path / "out")
    dataset = json.loads((tmp_path / "out/dataset.json").read_text())
    assert dataset["labels"] == {"0": "background", "1": "Lung Opacity"}
    assert dataset["tensorImageSize"] == "2D"
    item = load_decathlon_datalist(tmp_path / "out/dataset.json")[0]
    written = nib.load(item["label"])
    assert written.shape == (30, 20)
    np.testing.assert_allclose(written.affine, affine)
    expected = np.zeros((30, 20), dtype=bool)
    expected[10:18, 2:5] = True  # (X, Y)
    np.testing.assert_array_equal(np.asarray(written.dataobj) == 1, expected)


# --- DICOM SEG --------------------------------------------------------------------------------------------


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
        assert ds.SOPClassUID == dicom_seg.CT_IMAGE_STORAGE
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
    assert sources[0].SOPClassUID == dicom_seg.SECONDARY_CAPTURE_IMAGE_STORAGE and sources[0].Modality == "PT"
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
