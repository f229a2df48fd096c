"""Radiograph exporters (FG-CXR, CheXpert, RadFact) on synthetic cases, read back with each format's own
readers (json, numpy, PIL, csv). No database."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from labeling.rules import chexpert_row
from labeling.types import CHEXPERT_OBSERVATIONS, ProposedFinding
from releases.formats import chexpert, fgcxr, radfact
from releases.records import (
    CaseRecord,
    DirSink,
    FormatError,
    GazeAnatomyRecord,
    ImageRecord,
    LabelRecord,
    ReleaseMeta,
)

X, Y = 64, 48  # image width (columns) and height (rows)
META = ReleaseMeta(name="cxr-test", version=1, description="synthetic", licence="CC-BY-4.0")


# -- synthetic cases ----------------------------------------------------------------------------------


def image_record(tmp_path: Path, name: str, shape=(X, Y)) -> ImageRecord:
    """An (X, Y) image whose value tells its position: x + 100 * y."""
    grid = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    data = (grid[0] + 100 * grid[1]).astype(np.float32)
    path = tmp_path / f"{name}.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return ImageRecord(
        path=path, shape=list(shape), spacing=[0.2] * len(shape), affine=np.eye(4), modality="DX"
    )


def mask_png(tmp_path: Path, name: str, mask: np.ndarray) -> Path:
    path = tmp_path / f"{name}.png"
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(path)
    return path


def rect(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """A (rows, columns) mask with rows y0:y1 and columns x0:x1 set."""
    m = np.zeros((Y, X), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def heatmap(cy: float, cx: float, scale: float) -> np.ndarray:
    yy, xx = np.mgrid[0:Y, 0:X]
    return (scale * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 50.0)).astype(np.float32)


def gaze(anatomy: str, reader: str, recording: str, heat: np.ndarray, mask: np.ndarray | None):
    return GazeAnatomyRecord(
        anatomy=anatomy,
        caption=f"{anatomy} is clear.",
        sentences=[f"{anatomy} is clear."],
        dwell_s=1.5,
        fixations=7,
        time_to_first_s=0.25 if reader == "r1" else None,
        dwell_share=0.4,
        reader=reader,
        recording_id=recording,
        load_heatmap=lambda: heat,
        load_mask=lambda: mask,
        load_focus=lambda: heat > np.quantile(heat, 0.8),
        provenance={"lag_s": 1.0},
    )


def label(label_id: str, text: str = "finding", **kw) -> LabelRecord:
    return LabelRecord(label_id=label_id, text=text, **kw)


@pytest.fixture
def sink(tmp_path):
    s = DirSink(tmp_path / "out")
    yield s
    s.close()


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "L"
        return np.asarray(im)


# -- FG-CXR -------------------------------------------------------------------------------------------


@pytest.fixture
def gaze_case(tmp_path):
    lung = rect(5, 40, 4, 30)
    heats = {
        "l1": heatmap(20, 15, 3.0),
        "l2": heatmap(25, 18, 0.5),
        "h1": heatmap(30, 36, 2.0),
    }
    finding_mask = rect(10, 14, 8, 12) | rect(30, 33, 50, 60)
    case = CaseRecord(
        case_id="cxr-1",
        patient_id="P1",
        study_id="S1",
        split="train",
        image=image_record(tmp_path, "cxr-1"),
        report={"findings": "Lungs clear. Heart normal."},
        report_id="R1",
        gaze=[
            gaze("left lung", "r1", "rec-1", heats["l1"], lung),
            gaze("left lung", "r2", "rec-2", heats["l2"], lung),
            gaze("heart", "r1", "rec-1", heats["h1"], None),
        ],
        labels=[
            label("finding-1", "nodule", kind="mask", mask_path=mask_png(tmp_path, "f1", finding_mask)),
            label("finding-2", "opacity", kind="box", box=[8, 4, 24, 20]),
            label("proposal-3", "cardiomegaly", kind="none", source="weak", code="Cardiomegaly"),
        ],
    )
    return case, heats, {"lung": lung, "finding": finding_mask}


def test_fgcxr_round_trip(tmp_path, sink, gaze_case):
    case, heats, masks = gaze_case
    no_gaze = CaseRecord("cxr-2", "P2", "S2", "test", image_record(tmp_path, "cxr-2"))
    done = []
    summary = fgcxr.export(iter([case, no_gaze]), sink, META, progress=done.append)

    assert done == [1, 2]
    assert summary.format == "fgcxr" and summary.cases == 1 and summary.labels == 3
    assert summary.skipped == ["cxr-2: no gaze recording"]
    root = sink.root / "fgcxr"
    assert summary.files == len(sink.files)
    assert not any(rel.startswith(".scratch") for rel, _, _ in sink.files)

    index = json.loads((root / "index.json").read_text())
    assert index["release"]["name"] == "cxr-test" and index["release"]["version"] == 1
    assert index["splits"] == {"train": ["cxr-1"]}
    [entry] = index["images"]
    assert entry["image"] == "cxr-1/cxr-1.png" and entry["split"] == "train" and entry["records"] == 3
    assert entry["readers"] == ["r1", "r2"]

    folder = root / "cxr-1"
    record = json.loads((root / entry["json"]).read_text())
    assert (record["width"], record["height"], record["split"]) == (X, Y, "train")
    assert record["report"] == case.report and record["patient_id"] == "P1"

    image = read_png(folder / record["image"])
    assert image.shape == (Y, X)  # rows x columns
    # the (X, Y) image x + 100 y, transposed: brightness follows the row mostly, the column a little
    source = np.asarray(nib.load(str(case.image.path)).dataobj).T
    assert np.corrcoef(image.ravel().astype(float), source.ravel())[0, 1] > 0.99
    assert image[0, 0] == 0 and image[-1, -1] == 255 and image[0, -1] < image[1, 0]

    anatomies = record["anatomies"]
    assert [a["anatomy"] for a in anatomies] == ["left lung", "left lung", "heart"]
    assert [a["recording_id"] for a in anatomies] == ["rec-1", "rec-2", "rec-1"]
    stems = [a["heatmap_png"] for a in anatomies]
    assert stems == [
        "left-lung__rec-1.heatmap.png",
        "left-lung__rec-2.heatmap.png",
        "heart__rec-1.heatmap.png",
    ]
    for a, heat in zip(anatomies, (heats["l1"], heats["l2"], heats["h1"])):
        assert a["caption"] and a["sentences"] and a["dwell_s"] == 1.5 and a["fixations"] == 7
        assert a["provenance"] == {"lag_s": 1.0}
        png = read_png(folder / a["heatmap_png"])
        assert png.shape == image.shape and png.max() == 255
        assert a["heatmap_max"] == pytest.approx(float(heat.max()))
        np.testing.assert_allclose(png / 255.0 * a["heatmap_max"], heat, atol=heat.max() / 510 + 1e-6)
        npy = np.load(folder / a["heatmap_npy"])
        assert npy.dtype == np.float32 and np.array_equal(npy, heat)
        focus = read_png(folder / a["focus_png"])
        assert np.array_equal(focus != 0, heat > np.quantile(heat, 0.8))
    assert anatomies[0]["time_to_first_s"] == 0.25 and anatomies[1]["time_to_first_s"] is None
    for a in anatomies[:2]:
        lung = read_png(folder / a["mask_png"])
        assert lung.shape == image.shape and np.array_equal(lung != 0, masks["lung"])
    assert anatomies[2]["mask_png"] is None

    findings = {f["label_id"]: f for f in record["findings"]}
    assert np.array_equal(read_png(folder / findings["finding-1"]["mask_png"]) != 0, masks["finding"])
    assert findings["finding-1"]["box"] is None
    assert findings["finding-2"]["box"] == [8, 4, 24, 20] and findings["finding-2"]["mask_png"] is None
    assert findings["proposal-3"]["source"] == "weak" and findings["proposal-3"]["box"] is None

    on_disk = {p.relative_to(sink.root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert on_disk == {rel for rel, _, _ in sink.files}


def test_fgcxr_unsupported_kind_is_skipped(sink, gaze_case):
    case, _, _ = gaze_case
    case.labels.append(label("finding-9", kind="polygon"))
    summary = fgcxr.export([case], sink, META)
    assert summary.skipped == ["cxr-1/finding-9: kind 'polygon' is not supported"]
    assert summary.labels == 3


def test_fgcxr_rejects_3d_and_misaligned_heatmaps(tmp_path, sink, gaze_case):
    case, _, _ = gaze_case
    ct = CaseRecord("ct-1", "P", "S", "train", image_record(tmp_path, "ct", shape=(8, 6, 4)), gaze=case.gaze)
    with pytest.raises(FormatError) as err:
        fgcxr.export([ct], sink, META)
    assert err.value.field == "ct-1.image"

    # a heatmap in (X, Y) order instead of (rows, columns) is refused, not silently transposed
    wrong = heatmap(10, 10, 1.0).T.copy()
    case.gaze = [gaze("heart", "r1", "rec-1", wrong, None)]
    with pytest.raises(FormatError, match="rows, columns"):
        fgcxr.export([case], sink, META)


# -- CheXpert -----------------------------------------------------------------------------------------


def read_csv(sink: DirSink) -> list[list[str]]:
    with open(sink.root / "chexpert" / "labels.csv", newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def test_chexpert_rows(tmp_path, sink):
    image = image_record(tmp_path, "img")
    labels_a = [
        label("p1", code="Cardiomegaly", source="weak"),
        label("p2", code="Cardiomegaly", source="weak", assertion="absent"),
        label("p3", code="Edema", source="weak", assertion="uncertain"),
        label("p4", code="Edema", source="model", assertion="absent"),
        label("p5", code="Pneumothorax", source="weak", assertion="absent"),
        label("p6", code="Pleural Effusion", source="weak"),  # overridden by the human label below
        label("f7", code="Pleural Effusion", source="human", assertion="absent", kind="mask"),
        label("f8", code="2b", kind="box", box=[0, 0, 4, 4]),  # not a CheXpert observation
        label("f9", code="Edema", kind="polygon"),
    ]
    cases = [
        CaseRecord("a", "PA", "SA", "train", image, labels=labels_a),
        CaseRecord(
            "b", "PB", "SB", "val", image, labels=[label("p1", code="Pneumothorax", assertion="absent")]
        ),
        CaseRecord("c", "PC", "SC", "test", image),
        CaseRecord("d", "PD", "SD", "test", image, labels=[label("p1", code="Support Devices")]),
    ]
    done = []
    summary = chexpert.export((c for c in cases), sink, META, progress=done.append)
    assert done == [1, 2, 3, 4]
    assert (summary.cases, summary.files, summary.labels) == (4, 1, 6 + 1 + 0 + 1)
    assert summary.skipped == [
        "a/f8: code '2b' is not a CheXpert observation",
        "a/f9: kind 'polygon' is not supported",
        "a/p6: weak label overridden by a human label of 'Pleural Effusion'",
    ]

    header, *rows = read_csv(sink)
    assert header == ["Path", "Split", "Patient", "Study", *CHEXPERT_OBSERVATIONS]
    # the observation columns are the platform labeler's (label_reports --out writes id + these)
    assert header[4:] == list(CHEXPERT_OBSERVATIONS) and len(header) == 4 + 14
    by_path = {row[0]: dict(zip(header, row)) for row in rows}
    assert list(by_path) == ["a.png", "b.png", "c.png", "d.png"]

    a = by_path["a.png"]
    assert (a["Split"], a["Patient"], a["Study"]) == ("train", "PA", "SA")
    assert a["Cardiomegaly"] == "1.0"  # present beats absent
    assert a["Edema"] == "-1.0"  # uncertain beats absent
    assert a["Pneumothorax"] == "0.0"
    assert a["Pleural Effusion"] == "0.0"  # the human label wins over the weak positive
    assert a["No Finding"] == "" and a["Fracture"] == ""
    assert by_path["b.png"]["No Finding"] == "1.0" and by_path["b.png"]["Pneumothorax"] == "0.0"
    assert all(by_path["c.png"][obs] == "" for obs in CHEXPERT_OBSERVATIONS)  # nothing known
    assert by_path["d.png"]["No Finding"] == "1.0" and by_path["d.png"]["Support Devices"] == "1.0"

    # same values as the platform labeler's own row folding on the same mentions
    kept = [lab for lab in labels_a if lab.label_id in {"p1", "p2", "p3", "p4", "p5", "f7"}]
    proposals = [ProposedFinding("x", "findings", 0, 1, lab.assertion, lab.code) for lab in kept]
    expected = chexpert_row(proposals)
    assert [a[o] for o in CHEXPERT_OBSERVATIONS] == [
        "" if expected[o] is None else str(expected[o]) for o in CHEXPERT_OBSERVATIONS
    ]


def test_chexpert_rejects_3d(tmp_path, sink):
    ct = CaseRecord("ct-1", "P", "S", "train", image_record(tmp_path, "ct", shape=(8, 6, 4)))
    with pytest.raises(FormatError) as err:
        chexpert.export([ct], sink, META)
    assert err.value.field == "ct-1.image"


# -- RadFact ------------------------------------------------------------------------------------------


def test_radfact_grounded_reports(tmp_path, sink):
    image = image_record(tmp_path, "img")
    two_parts = rect(10, 20, 4, 12)
    two_parts[20, 12] = True  # touches the first part at a corner: same 8-connected component
    two_parts[30:40, 40:60] = True
    labels = [
        label("f1", "Opacity in the left upper zone.", kind="box", box=[8, 4, 24, 20]),
        label("f2", "Two nodules.", kind="mask", mask_path=mask_png(tmp_path, "m2", two_parts)),
        label("f3", "Heart is enlarged.", kind="none", code="Cardiomegaly"),
        label("p4", "Possible effusion.", kind="box", box=[0, 0, 64, 48], source="weak"),
        label("p5", "No pneumothorax.", kind="none", assertion="absent", source="weak"),
        label("p6", "Empty.", kind="mask", mask_path=mask_png(tmp_path, "m6", np.zeros((Y, X), bool))),
    ]
    cases = [
        CaseRecord("a", "PA", "SA", "train", image, labels=labels),
        CaseRecord("b", "PB", "SB", "test", image),
    ]
    done = []
    summary = radfact.export(iter(cases), sink, META, progress=done.append)
    assert done == [1, 2] and (summary.cases, summary.labels, summary.files) == (2, 4, 1)
    assert summary.skipped == [
        "a/p5: assertion 'absent' (RadFact lists present findings)",
        "a/p6: empty mask",
    ]

    text = (sink.root / "radfact" / "grounded_reports.json").read_text()
    items = json.loads(text)
    assert [i["example_id"] for i in items] == ["a", "b"] and [i["split"] for i in items] == ["train", "test"]
    a, b = items
    assert b["target"] == [] and b["prediction"] == []
    assert [t["text"] for t in a["target"]] == [lab.text for lab in labels[:3]]
    box = a["target"][0]["boxes"]
    assert box == [
        pytest.approx({"x_min": 8 / 64, "y_min": 4 / 48, "x_max": 24 / 64, "y_max": 20 / 48}, abs=1e-12)
    ]
    assert a["target"][1]["boxes"] == [
        pytest.approx({"x_min": 4 / 64, "y_min": 10 / 48, "x_max": 13 / 64, "y_max": 21 / 48}),
        pytest.approx({"x_min": 40 / 64, "y_min": 30 / 48, "x_max": 60 / 64, "y_max": 40 / 48}),
    ]
    assert a["target"][2]["boxes"] is None and '"boxes": null' in text and '"boxes": []' not in text
    assert a["prediction"] == [
        {"text": "Possible effusion.", "boxes": [{"x_min": 0.0, "y_min": 0.0, "x_max": 1.0, "y_max": 1.0}]}
    ]
    for item in items:
        for phrase in item["target"] + item["prediction"]:
            for bx in phrase["boxes"] or []:
                assert all(0.0 <= v <= 1.0 for v in bx.values())
                assert bx["x_min"] < bx["x_max"] and bx["y_min"] < bx["y_max"]


def test_radfact_empty_release_and_errors(tmp_path, sink):
    summary = radfact.export([], sink, META)
    assert json.loads((sink.root / "radfact" / "grounded_reports.json").read_text()) == []
    assert summary.cases == 0

    ct = CaseRecord("ct-1", "P", "S", "train", image_record(tmp_path, "ct", shape=(8, 6, 4)))
    with pytest.raises(FormatError) as err:
        radfact.export([ct], sink, META)
    assert err.value.field == "ct-1.image"

    outside = CaseRecord("a", "P", "S", "train", image_record(tmp_path, "img"))
    outside.labels = [label("f1", kind="box", box=[0, 0, 65, 10])]
    with pytest.raises(FormatError) as err:
        radfact.export([outside], sink, META)
    assert err.value.field == "a/f1.box"


# -- all formats: one lazy pass -----------------------------------------------------------------------


@pytest.mark.parametrize("module", [fgcxr, chexpert, radfact], ids=lambda m: m.NAME)
def test_cases_are_read_once_lazily(tmp_path, module, gaze_case):
    case, _, _ = gaze_case
    events = []

    def stream():
        for i in range(3):
            events.append(f"yield {i + 1}")
            yield case

    out = DirSink(tmp_path / module.NAME)
    module.export(stream(), out, META, progress=lambda n: events.append(f"done {n}"))
    out.close()
    assert events == ["yield 1", "done 1", "yield 2", "done 2", "yield 3", "done 3"]
    assert module.LABEL_KINDS == ("mask", "box", "none")
    assert not (tmp_path / module.NAME / ".scratch").exists()
    assert out.files and all(rel.startswith(f"{module.NAME}/") for rel, _, _ in out.files)
