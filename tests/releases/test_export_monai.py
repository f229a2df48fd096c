"""MONAI / Decathlon exporter on synthetic cases, read back with nibabel and json."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from releases.formats import monai_datalist
from releases.records import CaseRecord, ImageRecord, LabelRecord
from tests.releases.synth3d import (
    ATELECTASIS,
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
