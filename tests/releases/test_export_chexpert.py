"""CheXpert exporter on synthetic cases, read back with csv."""

import csv

import pytest

from labeling.rules import chexpert_row
from labeling.types import CHEXPERT_OBSERVATIONS, ProposedFinding
from releases.formats import chexpert
from releases.records import (
    CaseRecord,
    DirSink,
    FormatError,
)
from tests.releases.synth2d import META, image_record, label

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
