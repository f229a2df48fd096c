"""ReXGroundingCT exporter on synthetic cases, read back with nibabel and json."""

import json

import nibabel as nib
import numpy as np
import pytest

from releases.formats import rexgroundingct
from releases.records import CaseRecord, FormatError, ImageRecord
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
