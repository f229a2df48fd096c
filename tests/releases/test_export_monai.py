"""MONAI / Decathlon exporter: synthetic cases read back with nibabel and MONAI, and the release of real data
read the way MONAI reads a Decathlon datalist (``monai.data.load_decathlon_datalist`` + ``LoadImaged``)."""

import dataclasses
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from releases.formats import monai_datalist
from releases.records import CaseRecord, DirSink, FormatError, ImageRecord, LabelRecord
from tests.releases.synth3d import (
    ATELECTASIS,
    META,
    NODULES,
    SHAPE,
    blob,
    ct_array,
    export,
    make_affine,
    make_case,
    release,
    write_image,
)

KEYS = ("training", "validation", "test")


def _voxels(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


@pytest.mark.parametrize("kind", ["axial", "flipped"])
def test_monai_round_trip(tmp_path, kind):
    from monai.auto3dseg.utils import datafold_read
    from monai.data import DataLoader, Dataset, load_decathlon_datalist
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

    affine = make_affine(kind)
    out = tmp_path / "out"
    summary = export(monai_datalist, release(tmp_path, affine), out)
    assert summary.skipped == ["case-a/case-a-box: kind 'box' is not supported by this format"]

    dataset = json.loads((out / "dataset.json").read_text())
    # no class table in META: numbered as first met (the release service always gives a table)
    assert dataset["labels"] == {"0": "background", "1": "2d", "2": "2b"}
    assert (dataset["numTraining"], dataset["numValidation"], dataset["numTest"]) == (1, 1, 1)
    assert dataset["tensorImageSize"] == "3D" and dataset["modality"] == {"0": "CT"}
    segments = dataset["cases"]["case-a"]["segments"]
    assert [(s["label_id"], s["value"], s["file"]) for s in segments] == [
        ("case-a-nodules", 1, "labelsTr/case-a.nii.gz"),
        ("case-a-atelectasis", 2, "labelsTr_unreviewed/case-a.nii.gz"),  # a model's mask, not reviewed
    ]
    assert [r["label_id"] for r in dataset["cases"]["case-a"]["report_only"]] == ["case-a-effusion"]

    # the test split in imagesTs/labelsTs; every item the same keys (one case has an unreviewed mask)
    assert dataset["test"] == [
        {
            "image": "imagesTs/case-c.nii.gz",
            "label": "labelsTs/case-c.nii.gz",
            "unreviewed": "labelsTs_unreviewed/case-c.nii.gz",
            "case_id": "case-c",
        }
    ]
    assert dataset["testing"] == dataset["test"]  # Auto3DSeg predicts the images of "testing"
    testing, _ = datafold_read(str(out / "dataset.json"), str(out), fold=-1, key="testing")
    assert [t["image"] for t in testing] == [str(out / "imagesTs/case-c.nii.gz")]
    items = {}
    for key in KEYS:
        loaded = load_decathlon_datalist(out / "dataset.json", is_segmentation=True, data_list_key=key)
        assert len(loaded) == 1 and set(loaded[0]) == {"image", "label", "unreviewed", "case_id"}
        items[loaded[0]["case_id"]] = loaded[0]
    assert items["case-a"]["image"] == str(out / "imagesTr/case-a.nii.gz")
    assert items["case-b"]["label"] == str(out / "labelsTr/case-b.nii.gz")  # validation: a training case
    assert items["case-c"]["unreviewed"] == str(out / "labelsTs_unreviewed/case-c.nii.gz")

    load = Compose(
        [
            LoadImaged(keys=["image", "label", "unreviewed"]),
            EnsureChannelFirstd(keys=["image", "label", "unreviewed"]),
        ]
    )
    item = load(items["case-a"])
    image, label, unreviewed = item["image"], item["label"], item["unreviewed"]
    np.testing.assert_allclose(np.asarray(image.affine), np.asarray(label.affine), atol=1e-5)
    np.testing.assert_allclose(np.asarray(image.affine), affine, atol=1e-4)
    assert tuple(label.shape) == (1, *SHAPE)
    np.testing.assert_array_equal(
        np.asarray(label)[0], NODULES.astype(np.uint8)
    )  # the model's mask is not here
    np.testing.assert_array_equal(np.asarray(unreviewed)[0], 2 * ATELECTASIS.astype(np.uint8))
    np.testing.assert_array_equal(np.asarray(image)[0], ct_array())
    assert not _voxels(out / "labelsTr/case-b.nii.gz").any()
    assert not _voxels(out / "labelsTr_unreviewed/case-b.nii.gz").any()  # all background, for the same keys
    assert not _voxels(out / "labelsTs_unreviewed/case-c.nii.gz").any()
    np.testing.assert_array_equal(_voxels(out / "labelsTs/case-c.nii.gz"), NODULES.astype(np.uint8))
    assert not (out / "labelsTr_context").exists()  # no case has a context mask: no key, no files

    # MONAI's default collation takes a batch's keys from its first item: a batch of all three works
    batches = list(DataLoader(Dataset(list(items.values()), transform=load), batch_size=3))
    assert len(batches) == 1 and sorted(batches[0]["case_id"]) == ["case-a", "case-b", "case-c"]
    assert tuple(batches[0]["label"].shape) == (3, 1, *SHAPE)


def test_monai_values_from_the_class_table(tmp_path):
    affine = make_affine("axial")
    cases = release(tmp_path, affine)
    meta = dataclasses.replace(META, classes={1: "1f", 2: "2b", 3: "2d", 4: "left_lung"})
    sink = DirSink(tmp_path / "out")
    try:
        monai_datalist.export(iter(cases), sink, meta)
    finally:
        sink.close()
    out = tmp_path / "out"
    dataset = json.loads((out / "dataset.json").read_text())
    # the whole table, classes this release does not use too: a class has one value in every version
    assert dataset["labels"] == {"0": "background", "1": "1f", "2": "2b", "3": "2d", "4": "left_lung"}
    np.testing.assert_array_equal(_voxels(out / "labelsTr/case-a.nii.gz"), 3 * NODULES.astype(np.uint8))
    np.testing.assert_array_equal(
        _voxels(out / "labelsTr_unreviewed/case-a.nii.gz"), 2 * ATELECTASIS.astype(np.uint8)
    )
    np.testing.assert_array_equal(_voxels(out / "labelsTs/case-c.nii.gz"), 3 * NODULES.astype(np.uint8))

    # a class the table lacks: refused, naming the case and the label
    stray = make_case(
        tmp_path / "src2", "stray", "train", affine, [("gg", ATELECTASIS, {"text": "GGO.", "category": "2c"})]
    )
    sink = DirSink(tmp_path / "out2")
    try:
        with pytest.raises(FormatError) as err:
            monai_datalist.export(iter([stray]), sink, meta)
    finally:
        sink.close()
    assert (
        err.value.field == "stray/stray-gg" and "'2c' is not in the release's class table" in err.value.reason
    )


def test_monai_accepted_masks_win_and_context_apart(tmp_path):
    """A model's finding mask and a generator's lung overlapping an accepted nodule change no voxel of it;
    two accepted masks overlapping: the later wins, reported."""
    affine = make_affine("axial")
    lung = blob(np.s_[10:24, 0:20, 0:12])  # holds the second nodule entirely
    model = blob(np.s_[14:20, 11:16, 6:11])
    overlap = blob(np.s_[12:20, 10:16, 6:11])  # an accepted consolidation over the second nodule
    case = make_case(
        tmp_path / "src",
        "ov",
        "train",
        affine,
        [
            ("nodules", NODULES, {"text": "Nodules.", "category": "2d"}),
            (
                "lung",
                lung,
                {"text": "right lung", "code": "right_lung", "source": "model", "role": "context"},
            ),
            ("model", model, {"text": "Nodule?", "category": "2d", "source": "model"}),
            ("consolidation", overlap, {"text": "Consolidation.", "category": "2b"}),
        ],
    )
    plain = make_case(tmp_path / "src", "plain", "val", affine, [])
    meta = dataclasses.replace(META, classes={1: "2b", 2: "2d", 3: "right_lung"})
    sink = DirSink(tmp_path / "out")
    try:
        summary = monai_datalist.export(iter([case, plain]), sink, meta)
    finally:
        sink.close()
    out = tmp_path / "out"
    label = _voxels(out / "labelsTr/ov.nii.gz")
    np.testing.assert_array_equal(label == 1, overlap)
    np.testing.assert_array_equal(label == 2, NODULES & ~overlap)
    assert set(np.unique(label)) == {0, 1, 2}  # no right_lung (3) in the finding label image
    lost = int((NODULES & overlap).sum())
    assert summary.skipped == [
        f"ov/ov-nodules: {lost} voxels overlap ov-consolidation, which is later and wins in the label image"
    ]
    np.testing.assert_array_equal(_voxels(out / "labelsTr_context/ov.nii.gz"), 3 * lung.astype(np.uint8))
    np.testing.assert_array_equal(_voxels(out / "labelsTr_unreviewed/ov.nii.gz"), 2 * model.astype(np.uint8))
    assert not _voxels(out / "labelsTr_context/plain.nii.gz").any()
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["validation"] == [
        {
            "image": "imagesTr/plain.nii.gz",
            "label": "labelsTr/plain.nii.gz",
            "unreviewed": "labelsTr_unreviewed/plain.nii.gz",
            "context": "labelsTr_context/plain.nii.gz",
            "case_id": "plain",
        }
    ]
    roles = {s["label_id"]: (s["role"], s["source"], s["file"]) for s in dataset["cases"]["ov"]["segments"]}
    assert roles["ov-lung"] == ("context", "model", "labelsTr_context/ov.nii.gz")
    assert roles["ov-model"] == ("finding", "model", "labelsTr_unreviewed/ov.nii.gz")


def test_monai_empty_test_split(tmp_path):
    """MSD writes ``"test": []`` when there are no test images; MONAI's loader cannot read an empty test list
    (``load_decathlon_datalist`` looks at ``expected_data[0]`` to tell strings from dicts). The other lists,
    ``testing`` (the same items) too, load empty."""
    from monai.data import load_decathlon_datalist

    affine = make_affine("axial")
    cases = [
        make_case(
            tmp_path / "src",
            "only",
            "train",
            affine,
            [("n", NODULES, {"text": "Nodules.", "category": "2d"})],
        )
    ]
    export(monai_datalist, cases, tmp_path / "out")
    path = tmp_path / "out/dataset.json"
    dataset = json.loads(path.read_text())
    assert (dataset["numTraining"], dataset["numValidation"], dataset["numTest"]) == (1, 0, 0)
    assert dataset["validation"] == [] and dataset["test"] == []
    assert load_decathlon_datalist(path, data_list_key="validation") == []
    assert dataset["testing"] == [] and load_decathlon_datalist(path, data_list_key="testing") == []
    # MONAI 1.6.1: an IndexError. If this stops raising, update docs/exports/monai.md.
    with pytest.raises(IndexError):
        load_decathlon_datalist(path, data_list_key="test")


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
    assert dataset["tensorImageSize"] == "2D" and dataset["modality"] == {"0": "DX"}
    item = load_decathlon_datalist(tmp_path / "out/dataset.json")[0]
    written = nib.load(item["label"])
    assert written.shape == (30, 20)
    np.testing.assert_allclose(written.affine, affine)
    expected = np.zeros((30, 20), dtype=bool)
    expected[10:18, 2:5] = True  # (X, Y)
    np.testing.assert_array_equal(np.asarray(written.dataobj) == 1, expected)


def _on_grid(case, label) -> np.ndarray:
    """The label's mask on the image array's grid, read on its own: ``load_mask`` gives (X, Y[, Z]) for
    NIfTI and PNG masks alike (studies/masks.py)."""
    mask = label.load_mask()
    assert mask.shape == tuple(case.image.shape), f"{label.label_id}: {mask.shape} off the image grid"
    return mask


@pytest.mark.django_db
def test_monai_real_release_reads_with_monai(tmp_path, shared_data, make_user):
    """The real CT (an accepted mass that the lungs generator's right_lung proposal overlaps, an accepted
    effusion) and real radiographs, exported and read as MONAI reads a Decathlon datalist: every item of
    every list through ``LoadImaged`` + ``EnsureChannelFirstd``; each label file equals what the case's
    masks give with the class table's values; the accepted mass keeps every voxel; the lungs only in the
    context file."""
    from monai.data import load_decathlon_datalist
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

    from releases.exporting import _meta, release_cases
    from tests.releases.real import real_release

    real = real_release(shared_data, tmp_path, make_user)
    meta = _meta(real.release)
    out = tmp_path / "out"
    sink = DirSink(out)
    try:
        summary = monai_datalist.export(release_cases(real.release), sink, meta)
    finally:
        sink.close()
    path = out / "dataset.json"
    dataset = json.loads(path.read_text())
    value = {name: v for v, name in meta.classes.items()}
    assert dataset["labels"] == {"0": "background", **{str(v): n for v, n in sorted(meta.classes.items())}}
    assert dataset["tensorImageSize"] == "mixed"
    modalities = {real.ct.modality, *(scan.modality for scan in real.radiographs)}
    assert len(modalities) == 2 and dataset["modality"] == {"0": "/".join(sorted(modalities))}
    assert any("kind 'box' is not supported" in s for s in summary.skipped)  # the sternotomy wires

    loaded = {}
    for key in KEYS:
        if dataset[key]:
            for item in load_decathlon_datalist(path, is_segmentation=True, data_list_key=key):
                loaded[item["case_id"]] = item
        assert (
            len(dataset[key])
            == dataset[{"training": "numTraining", "validation": "numValidation"}.get(key, "numTest")]
        )
    assert len(load_decathlon_datalist(path, data_list_key="testing")) == dataset["numTest"]
    keys = ["image", "label", "context"]  # the lungs generator ran on the CT: every item has a context file
    assert all(set(item) == {*keys, "case_id"} for item in loaded.values())
    load = Compose([LoadImaged(keys=keys), EnsureChannelFirstd(keys=keys)])

    checked, grounded_2d = 0, 0
    for case in release_cases(real.release):
        item = load(loaded.pop(case.case_id))
        expected = {k: np.zeros(tuple(case.image.shape), dtype=np.uint16) for k in ("label", "context")}
        for label in case.labels:
            if label.kind == "mask":
                into = "context" if label.role == "context" else "label" if label.source == "human" else None
                assert into is not None, f"{label.label_id}: no unreviewed mask expected in this release"
                expected[into][_on_grid(case, label)] = value[label.category or label.code or "finding"]
        for k in ("image", *expected):
            np.testing.assert_allclose(np.asarray(item[k].affine), case.image.affine, atol=1e-4)
        for k, array in expected.items():
            assert tuple(item[k].shape) == (1, *case.image.shape)
            np.testing.assert_array_equal(np.asarray(item[k])[0], array, err_msg=f"{case.case_id} {k}")
        np.testing.assert_array_equal(np.asarray(item["image"])[0], case.image.load())
        if case.image.ndim == 3:
            label, context = np.asarray(item["label"])[0], np.asarray(item["context"])[0]
            assert (label[real.mass] == value["2d"]).all()  # every voxel of the accepted mass
            assert (context[real.mass] == value["right_lung"]).any()  # which the right lung overlaps
            assert not np.isin(label, [value["left_lung"], value["right_lung"]]).any()
            assert {value["left_lung"], value["right_lung"]} <= set(np.unique(context).tolist())
        else:
            grounded_2d += int(expected["label"].any())  # the granulomas mask on the frontal radiograph
        checked += 1
    assert checked == sum(len(dataset[key]) for key in KEYS) >= 3 and grounded_2d == 1 and not loaded
