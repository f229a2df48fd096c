"""ReXGroundingCT exporter: synthetic cases read back with nibabel and json, and a release of the real CT
read the way code written for the published dataset reads it (see docs/exports/rexgroundingct.md)."""

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from releases.formats import rexgroundingct
from releases.records import CaseRecord, DirSink, FormatError, ImageRecord
from tests.releases.synth3d import (
    ATELECTASIS,
    NODULES,
    SHAPE,
    blob,
    ct_array,
    export,
    make_affine,
    make_case,
    mask_label,
    release,
    world,
    write_image,
)

ENTRY_KEYS = ["name", "findings", "entity_counts", "shape", "pixels", "categories", "protocol"]
LUNG = blob(np.s_[1:12, 1:19, 0:12])


def _cases(tmp_path, affine):
    """The synthetic release: case-a (train) with a reviewed nodules mask, a model atelectasis mask, a weak
    negative and a box; case-b (val) report-only; case-c (test) reviewed nodules and a context lung."""
    cases = release(tmp_path, affine)
    cases[0].numbering = {"patient": 17, "study": 2, "scan": 3}
    cases[2].labels.append(
        mask_label(
            tmp_path / "src",
            "case-c-lung",
            LUNG,
            affine,
            text="left_lung",
            code="left_lung",
            source="model",
            role="context",
        )  # fmt: skip
    )
    return cases


@pytest.mark.parametrize("kind", ["axial", "flipped"])
def test_rexgroundingct_round_trip(tmp_path, kind):
    affine = make_affine(kind)
    cases = _cases(tmp_path, affine)
    out = tmp_path / "out"
    summary = export(rexgroundingct, cases, out)

    assert (summary.cases, summary.labels) == (3, 6)
    assert summary.skipped == ["case-a/case-a-box: kind 'box' is not supported by this format"]
    dataset = json.loads((out / "dataset.json").read_text())
    assert list(dataset) == ["train", "val", "test"]  # the published top level, nothing else
    # names: case-a from its frozen numbering, the others numbered here (patients in case order)
    assert [[e["name"] for e in dataset[s]] for s in ("train", "val", "test")] == [
        ["train_17_b_3.nii.gz"],
        ["val_1_a_1.nii.gz"],
        ["test_2_a_1.nii.gz"],
    ]
    for split in dataset.values():
        assert all(list(entry) == ENTRY_KEYS for entry in split)
    entry = dataset["train"][0]
    # only the reviewed (human) mask is a finding; the model's atelectasis is not
    assert entry["findings"] == {"0": "Two nodules in the right lower lobe."}
    assert entry["entity_counts"] == {"0": 2}
    assert entry["pixels"] == {"0": int(NODULES.sum())}
    assert entry["categories"] == {"0": "2d"}
    assert entry["shape"] == list(SHAPE) and entry["protocol"] == "groundlab-review"

    name = entry["name"]
    image = nib.load(str(out / "dataset/train/train_17/train_17_b" / name))
    seg_img = nib.load(str(out / "segmentations" / name))
    seg = np.asarray(seg_img.dataobj)
    assert seg.shape == (1, *SHAPE) and seg.dtype == np.uint8
    np.testing.assert_array_equal(np.asarray(image.dataobj), ct_array())
    np.testing.assert_allclose(image.affine, affine, atol=1e-4)
    np.testing.assert_allclose(seg_img.affine, affine, atol=1e-4)
    # two entities, one per blob, each one value
    assert set(np.unique(seg[0])) == {0, 1, 2}
    np.testing.assert_array_equal(seg[0] > 0, NODULES)
    first, second = blob(np.s_[2:5, 3:6, 1:3]), blob(np.s_[15:19, 12:15, 7:10])
    assert len(np.unique(seg[0][first])) == 1 and len(np.unique(seg[0][second])) == 1
    assert seg[0][first][0] != seg[0][second][0]
    # the same world points: channel voxels through the image's affine = the source mask's voxels through
    # its own file's affine, and the image's value there is the value the voxel index tells
    source = nib.load(str(cases[0].labels[0].mask_path))
    ijk = np.argwhere(seg[0] > 0)
    np.testing.assert_allclose(
        world(image.affine, ijk), world(source.affine, np.argwhere(np.asarray(source.dataobj))), atol=1e-3
    )
    i, j, k = ijk.T
    np.testing.assert_array_equal(np.asarray(image.dataobj)[i, j, k], -1000 + i + 30 * j + 700 * k)

    # the unreviewed model mask: its own folder, same layout
    unreviewed = np.asarray(nib.load(str(out / "segmentations_unreviewed" / name)).dataobj)
    assert unreviewed.shape == (1, *SHAPE)
    np.testing.assert_array_equal(unreviewed[0] > 0, ATELECTASIS)
    assert not (out / "segmentations_context" / name).exists()

    # a case without findings: one all-zero channel, empty findings
    empty = dataset["val"][0]
    assert empty["findings"] == {} and empty["entity_counts"] == {} and empty["pixels"] == {}
    zeros = nib.load(str(out / "segmentations/val_1_a_1.nii.gz"))
    assert zeros.shape == (1, *SHAPE) and not np.asarray(zeros.dataobj).any()
    assert (out / "dataset/val/val_1/val_1_a/val_1_a_1.nii.gz").exists()

    # case-c: the context lung is not a finding; its mask is in the context folder
    assert dataset["test"][0]["findings"] == {"0": "Nodules."}
    lung = np.asarray(nib.load(str(out / "segmentations_context/test_2_a_1.nii.gz")).dataobj)
    np.testing.assert_array_equal(lung[0] > 0, LUNG)

    reports = json.loads((out / "reports_dataset.json").read_text())
    assert list(reports) == ["train", "val", "test"]
    rep = reports["train"][0]
    assert rep["name"] == name
    assert rep["findings"] == {
        "0": "Two nodules in the right lower lobe.",
        "1": "Basal atelectasis.",
        "2": "No pleural effusion.",
    }
    assert rep["categories"] == {"0": "2d", "1": "2b", "2": "2e"}
    assert reports["val"][0] == {
        "name": "val_1_a_1.nii.gz",
        "findings": {"0": "Normal."},
        "categories": {"0": ""},
    }
    assert reports["test"][0]["findings"] == {"0": "Nodules.", "1": "left_lung"}

    side = json.loads((out / "dataset_platform.json").read_text())
    assert list(side) == ["release", "cases"]
    assert side["release"]["name"] == "chest-findings" and side["release"]["version"] == 3
    assert side["release"]["naming"] == ["export", "release"]
    assert set(side["cases"]) == {"train_17_b_3.nii.gz", "val_1_a_1.nii.gz", "test_2_a_1.nii.gz"}
    a = side["cases"][name]
    assert (a["case_id"], a["split"], a["numbered"]) == ("case-a", "train", "release")
    assert a["numbering"] == {"patient": 17, "study": 2, "scan": 3}
    assert a["image"] == "dataset/train/train_17/train_17_b/train_17_b_3.nii.gz"
    assert a["segmentation"] == f"segmentations/{name}"
    np.testing.assert_allclose(a["affine"], affine)
    assert a["report"]["impression"] == "Nodules." and a["report_id"] == "report-case-a"
    assert a["findings"]["0"]["label_id"] == "case-a-nodules" and a["findings"]["0"]["source"] == "human"
    assert a["unreviewed"]["file"] == f"segmentations_unreviewed/{name}"
    assert a["unreviewed"]["channels"]["0"]["label_id"] == "case-a-atelectasis"
    assert a["unreviewed"]["channels"]["0"]["source"] == "model"
    assert a["unreviewed"]["channels"]["0"]["pixels"] == int(ATELECTASIS.sum())
    assert a["context"] is None
    assert a["labels"]["2"] == {
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
        "role": "finding",
        "file": None,
        "channel": None,
    }
    assert (a["labels"]["1"]["file"], a["labels"]["1"]["channel"]) == (f"segmentations_unreviewed/{name}", 0)
    c = side["cases"]["test_2_a_1.nii.gz"]
    assert c["numbered"] == "export" and c["context"]["channels"]["0"]["code"] == "left_lung"
    assert c["labels"]["1"]["role"] == "context"
    # 3 images, 3 finding files, 1 unreviewed, 1 context, the three JSON files
    assert summary.files == 3 + 3 + 1 + 1 + 3 == len(list(p for p in out.rglob("*") if p.is_file()))


def test_names_without_frozen_numbering_are_stable_and_follow_patients_and_studies(tmp_path):
    """A release frozen before numbering: patients numbered by first appearance, a patient's second study
    gets letter b, a study's second scan number 2; the same cases give the same names again."""
    affine = make_affine("axial")
    src = tmp_path / "src"
    cases = [make_case(src, f"c{n}", "train", affine, []) for n in range(4)]
    cases[1].patient_id = cases[2].patient_id = cases[0].patient_id  # one patient, c2 a second study
    cases[1].study_id = cases[0].study_id  # c1: the first study's second scan
    names = []
    for run in ("one", "two"):
        export(rexgroundingct, cases, tmp_path / run)
        data = json.loads((tmp_path / run / "dataset.json").read_text())
        names.append([e["name"] for e in data["train"]])
    assert (
        names[0]
        == names[1]
        == [
            "train_1_a_1.nii.gz",
            "train_1_a_2.nii.gz",
            "train_1_b_1.nii.gz",
            "train_2_a_1.nii.gz",
        ]
    )
    assert [rexgroundingct.study_letters(n) for n in (1, 2, 26, 27, 28, 52, 53)] == [
        "a", "b", "z", "aa", "ab", "az", "ba",
    ]  # fmt: skip


def test_a_name_twice_a_split_outside_the_published_ones_and_partial_numbering_are_refused(tmp_path):
    affine = make_affine("axial")
    src = tmp_path / "src"
    one, two = make_case(src, "one", "train", affine, []), make_case(src, "two", "train", affine, [])
    one.numbering = two.numbering = {"patient": 5, "study": 1, "scan": 1}
    with pytest.raises(FormatError) as err:
        export(rexgroundingct, [one, two], tmp_path / "a")
    assert err.value.field == "two.name" and "train_5_a_1.nii.gz" in err.value.reason
    odd = make_case(src, "odd", "holdout", affine, [])
    with pytest.raises(FormatError) as err:
        export(rexgroundingct, [odd], tmp_path / "b")
    assert err.value.field == "odd.split"
    one.numbering = {"patient": 5}
    with pytest.raises(FormatError) as err:
        export(rexgroundingct, [one], tmp_path / "c")
    assert err.value.field == "one.numbering"


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
    seg = np.asarray(nib.load(str(tmp_path / "out/segmentations" / entry["name"])).dataobj)
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
    for name in ("train_1_a_1.nii.gz", "train_2_a_1.nii.gz"):
        path = out / rexgroundingct.image_path(name)
        assert path.read_bytes()[:2] == b"\x1f\x8b"
        img = nib.load(str(path))
        np.testing.assert_allclose(img.affine, affine, atol=1e-4)
        np.testing.assert_array_equal(np.asarray(img.dataobj), ct_array())
    seg = nib.load(str(out / "segmentations/train_2_a_1.nii.gz"))
    np.testing.assert_allclose(seg.affine, affine, atol=1e-4)


# --- The real CT, read as code written for the published dataset reads it -------------------------------


def _ct_rate_path(root: Path, name: str) -> Path:
    """The image of ``name`` where CT-RATE keeps it, derived from the name alone as the authors'
    ``format_data_for_upload.process_volume`` (rajpurkarlab/ReXGroundingCT) does: patient folder = the
    first two ``_`` parts, study folder = the first three, under ``dataset/<split prefix>/``."""
    stem = name.split(".")[0]
    parts = stem.split("_")
    return root / "dataset" / parts[0] / "_".join(parts[:2]) / "_".join(parts[:3]) / name


@pytest.mark.django_db
def test_real_ct_release_loads_as_published_code_reads_it(tmp_path, shared_data, make_user):
    from releases.exporting import release_export_to
    from releases.freeze import release_create
    from tests.releases.real import real_release

    real = real_release(shared_data, tmp_path / "src", make_user)
    # ReXGroundingCT holds CT only: a version of the dataset with its CT (the radiographs have boxes)
    ct_only = release_create(dataset=real.dataset, selection={"sources": "both", "modalities": ["CT"]})
    out = tmp_path / "out"
    sink = DirSink(out)
    try:
        summary = release_export_to(ct_only, "rexgroundingct", sink)
    finally:
        sink.close()
    assert summary.cases == 1

    # The reader: the accesses of the published dataset's users (Joacodef/rexgroundingct-pipeline
    # scripts/exp_004_hu_radiodensity.py and exp_003, HengjieLiu/rexgroundingct run_voxtell_val_inference
    # and download_ct_rate_challenge_subset): data[split] lists, item["name"], segmentations/<name> opened
    # with nibabel as (F, H, W, D), channel int(key) for each key of findings / categories, the CT by name.
    data = json.loads((out / "dataset.json").read_text())
    assert set(data) == {"train", "val", "test"}
    items = [(split, item) for split in ("train", "val", "test") for item in data[split]]
    assert len(items) == 1
    split, item = items[0]
    assert list(item) == ENTRY_KEYS
    name = item["name"]
    patient = real.ct.study.patient_id
    assert re.fullmatch(rf"{split}_{patient}_a_1\.nii\.gz", name)
    seg_img = nib.load(str(out / "segmentations" / name))
    img = nib.load(str(_ct_rate_path(out, name)))
    seg = np.asanyarray(seg_img.dataobj)
    ct = np.asanyarray(img.dataobj)
    assert seg.ndim == 4 and ct.shape == seg.shape[1:] and list(seg.shape[1:]) == item["shape"]
    assert item["shape"] == [int(n) for n in real.ct.shape]
    np.testing.assert_allclose(seg_img.affine, img.affine, atol=1e-4)
    np.testing.assert_allclose(img.affine, np.asarray(real.ct.affine, dtype=float), atol=1e-3)
    assert seg.shape[0] == len(item["findings"]) == 2  # the reviewed mass and effusion, nothing else
    assert sorted(item["categories"].values()) == ["2d", "2e"]
    assert item["protocol"] == "groundlab-review"
    for key, text in item["findings"].items():
        channel = seg[int(key)]
        assert int(np.count_nonzero(channel)) == item["pixels"][key] > 0
        assert len(np.unique(channel)) - 1 == item["entity_counts"][key] == 1
        assert np.issubdtype(channel.dtype, np.integer)
        if item["categories"][key] == "2d":
            assert "mass" in text.lower()
            np.testing.assert_array_equal(channel > 0, real.mass)
            assert float(ct[channel > 0].mean()) > -1000  # HU inside the body
    # the CT is the scan's stored array
    np.testing.assert_array_equal(ct, np.asanyarray(nib.load(real.ct.file.path).dataobj))

    # not findings: the lungs generator's context masks and the weak labels
    side = json.loads((out / "dataset_platform.json").read_text())["cases"][name]
    assert side["numbered"] == "release" and side["numbering"]["patient"] == patient
    codes = {c["code"] for c in side["context"]["channels"].values()}
    assert codes == {"left_lung", "right_lung"}
    context = np.asanyarray(nib.load(str(out / side["context"]["file"])).dataobj)
    assert context.shape == (2, *seg.shape[1:]) and context.any(axis=(1, 2, 3)).all()
    weak = [row for row in side["labels"].values() if row["source"] == "weak"]
    assert weak and all(row["file"] is None for row in weak)
    assert all(row["source"] == "human" for row in side["findings"].values())
    reports = json.loads((out / "reports_dataset.json").read_text())
    rep = reports[split][0]
    assert rep["name"] == name and len(rep["findings"]) == len(side["labels"]) > len(item["findings"])
    assert all(rep["findings"][k] == item["findings"][k] for k in item["findings"])
    assert {"README.md", "manifest.json", "SHA256SUMS"} <= {p.name for p in out.iterdir()}
