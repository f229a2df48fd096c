"""RadFact exporter on synthetic cases, read back with json."""

import json

import numpy as np
import pytest

from releases.formats import radfact
from releases.records import (
    CaseRecord,
    FormatError,
)
from tests.releases.synth2d import META, X, Y, image_record, label, mask_png, rect

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
