"""FG-CXR exporter on synthetic cases (and every radiograph format's lazy pass), read back with json,
numpy and PIL."""

import json

import nibabel as nib
import numpy as np
import pytest

from releases.formats import chexpert, fgcxr, radfact
from releases.records import (
    CaseRecord,
    DirSink,
    FormatError,
)
from tests.releases.synth2d import META, X, Y, gaze, heatmap, image_record, label, mask_png, read_png, rect

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
