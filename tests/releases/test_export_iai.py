"""I-AI exporter on synthetic cases, read back with a reader written here (``iai_dataset``, ``read_dicoms``,
``read_gt_heatmap``, ``read_gt_mask``) that makes the accesses of ``UARK-AICV/IAI`` 9900c59
``iai/data/datasets/register_tiai_e2e_v2.py`` (``Tiai_gaze_function``, ``register_all_tiai``),
``iai/data/dataset_mappers/TIAI_gaze_dataset_mapper_e2e_v2.py`` (``__call__``) and ``iai/utils/misc.py``,
restated, not copied."""

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from PIL import Image

from releases.formats import iai
from releases.records import CaseRecord, DirSink, FormatError, GazeAnatomyRecord, ImageRecord
from tests.releases.synth2d import META, X, Y, heatmap, image_record, label, read_png, rect

INPUT = 224  # BiomedCLIP's input size: preprocess_heatmap = Resize([224, 224]) + ToTensor

# -- the authors' accesses, restated ------------------------------------------------------------------

MASK_COLUMN = {
    "c": "mask (cardiomegaly)",
    "l": "mask (left lung)",
    "r": "mask (right lung)",
}  # map_type_namecol
LABEL_COLUMN = {"c": "severity", "l": "has finding", "r": "has finding"}  # map_type_label
MAPPING = {0: 0, 1: 1, 2: 1, 3: 1, 4: 1}


def iai_dataset(csv_path: Path, mimic_cxr_path: str) -> list[dict]:
    """``Tiai_gaze_function`` over ``pandas.read_csv``: per row its ``_type``; the ``mask (…)`` column of that
    type, the ``heatmap (…)`` and ``sentence (…)`` columns named alike; ``image_dcm`` =
    ``os.path.join(mimic_cxr_path, row["path"])``; the label ``MAPPING[int(row[label column])]``; the
    ``reflacx_id``; ``heatmap_type`` the type upper-cased (the mapper caches rows under
    ``<reflacx_id>_<heatmap_type>``)."""
    items = []
    for _, row in pd.read_csv(csv_path).iterrows():
        _type = row["_type"]
        name_col = MASK_COLUMN.get(_type, "")
        items.append(
            {
                "image_dcm": os.path.join(mimic_cxr_path, row["path"]),
                "gt_heatmap_path": row[name_col.replace("mask", "heatmap")],
                "gt_mask_path": row[name_col],
                "reflacx_id": row["reflacx_id"],
                "heatmap_type": _type.upper(),
                "sentence": row[name_col.replace("mask", "sentence")],
                "label": MAPPING[int(row[LABEL_COLUMN[_type]])],
            }
        )
    return items


def read_dicoms(path: str) -> np.ndarray:
    """``misc.read_dicoms``: SimpleITK's array divided by its maximum, the slice axis moved last and
    repeated to three channels, times 255 as uint8 (an RGB image)."""
    image = sitk.GetArrayFromImage(sitk.ReadImage(path))
    image = image / np.max(image)
    image = np.moveaxis(image, 0, -1).repeat(3, axis=-1)
    return np.asarray(Image.fromarray((image * 255).astype(np.uint8)))


def to_input(path: str) -> np.ndarray:
    """``Image.open(path).convert('L')`` through ``preprocess_heatmap``: PIL's bilinear resize to 224 x 224,
    values / 255."""
    return (
        np.asarray(Image.open(path).convert("L").resize((INPUT, INPUT), Image.BILINEAR), np.float32) / 255.0
    )


def read_gt_heatmap(path: str) -> tuple[np.ndarray, np.ndarray]:
    """``misc.read_gt_heatmap``: the resized map, its intense focus above the distinct value at index
    ``len(unique) // 5``."""
    heat = to_input(path)
    threshold = np.unique(heat)[len(np.unique(heat)) // 5]
    return heat > threshold, heat


def read_gt_mask(path: str) -> np.ndarray:
    """``misc.read_gt_mask``: the resized mask above 40 / 255."""
    return to_input(path) > 40 / 255


# -- synthetic cases ----------------------------------------------------------------------------------

RIGHT = rect(6, 40, 4, 28)
LEFT = rect(6, 42, 36, 60)
HEART = rect(26, 44, 22, 42)
PROVENANCE = {"gaze_run": 3, "params": {"preset": "iai", "regions": "anatomy"}}


def record(anatomy, recording, heat, mask, caption=""):
    return GazeAnatomyRecord(
        anatomy=anatomy,
        caption=caption,
        sentences=[caption] if caption else [],
        dwell_s=1.0,
        fixations=4,
        time_to_first_s=None,
        dwell_share=0.3,
        reader="r1",
        recording_id=recording,
        load_heatmap=lambda: heat,
        load_mask=lambda: mask,
        load_focus=lambda: heat > 0,
        provenance={**PROVENANCE, "record": f"{recording}/{anatomy}"},
    )


def anatomy_set(recording, names=("heart", "left_lung", "right_lung"), masks=True):
    parts = {"heart": HEART, "left": LEFT, "left_lung": LEFT, "right": RIGHT, "right_lung": RIGHT}
    centres = {
        "heart": (34, 32),
        "left": (24, 48),
        "left_lung": (24, 48),
        "right": (22, 16),
        "right_lung": (22, 16),
    }
    captions = {"heart": "Heart size is normal.", "left_lung": "Small left effusion.", "left": "Left base."}
    return [
        record(
            n,
            recording,
            heatmap(*centres.get(n, (20, 20)), 2.0),
            parts.get(n) if masks else None,
            captions.get(n, ""),
        )
        for n in names
    ]


def float_image(tmp_path: Path, name: str) -> ImageRecord:
    """A float image with negative values: the DICOM gets them mapped onto 0..65535."""
    data = (np.linspace(-1.5, 2.5, X * Y).reshape(X, Y)).astype(np.float32)
    path = tmp_path / f"{name}.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return ImageRecord(path=path, shape=[X, Y], spacing=[0.2, 0.2], affine=np.eye(4), modality="DX")


def test_iai_loads_as_the_authors_code_reads_it(tmp_path, sink, monkeypatch):
    labels = [
        label("finding-1", "cardiomegaly", code="Cardiomegaly"),
        label("finding-2", "left effusion", code="Pleural Effusion", laterality="left"),
        label(
            "finding-3", "no right pneumothorax", code="Pneumothorax", laterality="right", assertion="absent"
        ),
    ]
    case = CaseRecord("cxr-1", "P1", "S1", "train", image_record(tmp_path, "cxr-1"), labels=labels,
                      gaze=anatomy_set("P102R1"))  # fmt: skip
    # FG-CXR's region set gives heart, left and right (the other four regions are not I-AI's)
    fg = ["heart", "left", "upper left", "lower left", "right", "upper right", "lower right"]
    again = CaseRecord(
        "cxr-2", "P2", "S2", "test", float_image(tmp_path, "cxr-2"), gaze=anatomy_set("P102R1", fg)
    )
    no_right = CaseRecord("cxr-3", "P3", "S3", "train", image_record(tmp_path, "cxr-3"),
                          gaze=anatomy_set("P9", ("heart", "left_lung")))  # fmt: skip
    no_mask = CaseRecord("cxr-4", "P4", "S4", "train", image_record(tmp_path, "cxr-4"),
                         gaze=anatomy_set("P8", masks=False))  # fmt: skip
    done = []
    summary = iai.export(iter([case, again, no_right, no_mask]), sink, META, progress=done.append)

    assert done == [1, 2, 3, 4] and summary.format == "iai" and summary.cases == 2
    assert summary.skipped == [
        "cxr-3/P9: lacks what I-AI's three types need: no right_lung or right record (its records: heart, "
        "left_lung); label it with a gaze run whose records have anatomy masks (regions anatomy or fgcxr)",
        "cxr-4/P8: no anatomy mask for its heart record (I-AI's mask (cardiomegaly) column); label it with a "
        "gaze run whose records have anatomy masks (regions anatomy or fgcxr)",
    ]
    root = sink.root / "iai"
    on_disk = {p.relative_to(sink.root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert on_disk == {rel for rel, _, _ in sink.files} and summary.files == len(sink.files)
    # the images of skipped recordings are not written
    assert sorted(p.name for p in (root / "images").iterdir()) == ["cxr-1.dcm", "cxr-2.dcm"]

    # register_all_tiai reads three CSVs; run where the paths are relative to, mimic_cxr_path "."
    monkeypatch.chdir(root)
    train, dev, test = (iai_dataset(Path(name), ".") for name in ("train.csv", "dev.csv", "test.csv"))
    assert dev == [] and list(pd.read_csv("dev.csv").columns) == list(iai.COLUMNS)
    assert [(d["reflacx_id"], d["heatmap_type"]) for d in train] == [
        ("P102R1", "C"),
        ("P102R1", "L"),
        ("P102R1", "R"),
    ]
    assert [(d["reflacx_id"], d["heatmap_type"]) for d in test] == [("P102R1-2", t) for t in "CLR"]
    keys = [f"{d['reflacx_id']}_{d['heatmap_type']}" for d in train + test]
    assert len(set(keys)) == len(keys)  # the mapper's cache keys
    assert [d["label"] for d in train] == [1, 1, 0]  # cardiomegaly; the left has a finding, the right not
    assert [d["label"] for d in test] == [0, 0, 0]
    assert train[0]["sentence"] == "Heart size is normal." and train[1]["sentence"] == "Small left effusion."

    # the mapper: read_dicoms on image_dcm, read_gt_heatmap and read_gt_mask on the row's files
    source = np.asarray(nib.load(str(case.image.path)).dataobj).T
    rgb = read_dicoms(train[0]["image_dcm"])
    assert rgb.shape == (Y, X, 3) and np.array_equal(
        rgb[..., 0], (source / source.max() * 255).astype(np.uint8)
    )
    by_type = {"C": ("heart", HEART), "L": ("left_lung", LEFT), "R": ("right_lung", RIGHT)}
    records = {r.anatomy: r for r in case.gaze}
    for item in train:
        anatomy, mask = by_type[item["heatmap_type"]]
        heat = records[anatomy].load_heatmap()
        png = read_png(Path(item["gt_heatmap_path"]))
        assert png.shape == (Y, X) and png.max() == 255
        np.testing.assert_allclose(png / 255.0 * heat.max(), heat, atol=heat.max() / 510 + 1e-6)
        focus, resized = read_gt_heatmap(item["gt_heatmap_path"])
        assert resized.shape == (INPUT, INPUT) and focus[np.unravel_index(resized.argmax(), resized.shape)]
        assert 0 < focus.mean() < 1
        assert np.array_equal(read_png(Path(item["gt_mask_path"])) != 0, mask)
        gt_mask = read_gt_mask(item["gt_mask_path"])
        rows, cols = np.nonzero(gt_mask)
        ys, xs = np.nonzero(mask)
        # the resized mask covers the mask's box, scaled to 224
        assert abs(rows.min() - ys.min() * INPUT / Y) <= 5 and abs(cols.max() - xs.max() * INPUT / X) <= 5

    # a float image with negative values: mapped onto 0..65535, said in definitions.json
    rgb = read_dicoms(test[0]["image_dcm"])
    values = np.asarray(nib.load(str(again.image.path)).dataobj).T
    expected = ((values - values.min()) / (values.max() - values.min()) * 255).astype(np.uint8)
    assert np.abs(rgb[..., 0].astype(int) - expected).max() <= 1
    definitions = json.loads(Path("definitions.json").read_text())
    assert definitions["images"] == {"images/cxr-2.dcm": {"rescaled_from": [-1.5, 2.5]}}
    assert definitions["definitions"] == {"gaze_run-3": {"gaze_run": 3, "params": PROVENANCE["params"]}}
    entry = definitions["heatmaps"]["heatmaps/P102R1_l.png"]
    assert entry["anatomy"] == "left_lung" and entry["definition"] == "gaze_run-3"
    assert entry["heatmap_max"] == pytest.approx(float(records["left_lung"].load_heatmap().max()))
    assert definitions["heatmaps"]["heatmaps/P102R1-2_r.png"]["anatomy"] == "right"
    assert set(definitions["labels"]) == {"severity", "has finding"}

    # the DICOM itself: a Secondary Capture pydicom reads, the same bytes when written again
    import pydicom

    ds = pydicom.dcmread(train[0]["image_dcm"])
    assert ds.SOPClassUID == iai.SC_CLASS and ds.PatientID == "P1" and ds.pixel_array.shape == (Y, X)
    assert np.array_equal(ds.pixel_array, source.astype(np.uint16))
    again_out = DirSink(tmp_path / "again")
    iai.export([case], again_out, META)
    assert (tmp_path / "again" / "iai" / "images" / "cxr-1.dcm").read_bytes() == Path(
        train[0]["image_dcm"]
    ).read_bytes()


def test_iai_names_what_is_missing(tmp_path, sink):
    bare = CaseRecord("cxr-5", "P5", "S5", "train", image_record(tmp_path, "cxr-5"))
    bare.gaze_lacking = [{"recording_id": "P300R7", "problems": ["regions: no anatomy for heart"]}]
    with pytest.raises(FormatError) as err:
        iai.export([bare], sink, META)
    assert err.value.field == "iai"
    assert (
        "cxr-5/P300R7: no gaze anatomy records (regions: no anatomy for heart); label it with a gaze run"
        in (str(err.value))
    )
    with pytest.raises(FormatError, match="no radiograph of the release has a gaze recording"):
        iai.export([CaseRecord("cxr-6", "P6", "S6", "train", bare.image)], DirSink(tmp_path / "b"), META)
    ct = CaseRecord(
        "ct", "P", "S", "train", image_record(tmp_path, "ct", shape=(8, 6, 4)), gaze=anatomy_set("R")
    )
    with pytest.raises(FormatError) as err:
        iai.export([ct], DirSink(tmp_path / "c"), META)
    assert err.value.field == "ct.image"
