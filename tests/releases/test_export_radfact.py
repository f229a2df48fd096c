"""RadFact exporter: synthetic cases and the release of real data, read back with the accesses RadFact's
own loader makes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from releases.formats import radfact
from releases.records import CaseRecord, DirSink, FormatError
from tests.releases.synth2d import META, X, Y, image_record, label, mask_png, rect

# -- a reader that makes RadFact's accesses -----------------------------------------------------------------


@dataclass(frozen=True)
class Box:
    """RadFact's ``NormalizedBox`` checks (src/radfact/data_utils/grounded_phrase_list.py ``GenericBox``):
    ``0 <= x_min <= x_max <= 1``, the same for y; built with ``**box`` (other keys are a TypeError)."""

    x_min: float
    y_min: float
    x_max: float
    y_max: float

    def __post_init__(self):
        if not (0 <= self.x_min <= self.x_max <= 1 and 0 <= self.y_min <= self.y_max <= 1):
            raise ValueError(f"invalid box {self}")


@dataclass(frozen=True)
class Phrase:
    text: str
    boxes: list[Box] | None


def read_radfact(path: Path) -> tuple[dict, dict]:
    """The accesses of RadFact's ``get_candidates_and_references_from_json`` (microsoft/RadFact,
    src/radfact/cli/run_radfact.py) and ``GroundedPhraseList.from_list_of_dicts`` /
    ``GroundedPhrase.from_dict``, written here: ``json.load``; per example ``example["example_id"]``,
    ``example["prediction"]``, ``example["target"]`` (other keys untouched); each phrase a dict whose keys
    are exactly ``{"text", "boxes"}``, ``text`` a str, ``boxes`` None or a non-empty list of boxes."""
    with open(path, encoding="utf-8") as f:
        examples = json.load(f)

    def phrases(parts):
        if not isinstance(parts, list):
            raise ValueError(f"expected a list, got {parts!r}")
        out = []
        for part in parts:
            assert isinstance(part, dict) and part.keys() == {"text", "boxes"}, part
            assert isinstance(part["text"], str)
            boxes = part["boxes"]
            if boxes is not None:
                assert isinstance(boxes, list) and len(boxes) > 0, "RadFact refuses [] (it wants null)"
                boxes = [Box(**box) for box in boxes]
            out.append(Phrase(part["text"], boxes))
        return out

    candidates = {ex["example_id"]: phrases(ex["prediction"]) for ex in examples}
    references = {ex["example_id"]: phrases(ex["target"]) for ex in examples}
    assert len(candidates) == len(examples)  # ids are unique: RadFact keys examples by them
    return candidates, references


# -- synthetic cases --------------------------------------------------------------------------------------

FINDINGS = "Opacity in the left upper zone. Two nodules are seen. Heart is enlarged. No pneumothorax."
IMPRESSION = "1. Left upper zone opacity. 2. No pneumothorax."


def span(sentence: str, section: str = "findings") -> dict:
    text = FINDINGS if section == "findings" else IMPRESSION
    start = text.index(sentence)
    return {"span": [section, start, start + len(sentence)]}


def test_grounded_reports(tmp_path, sink):
    image = image_record(tmp_path, "img")
    two_parts = rect(10, 20, 4, 12)
    two_parts[20, 12] = True  # touches the first part at a corner: same 8-connected component
    two_parts[30:40, 40:60] = True
    box = [8, 4, 24, 20]
    labels = [
        label("f1", "Opacity, left upper zone", kind="box", box=box, provenance=span("Opacity in the left")),
        label("f2", "Two nodules.", kind="mask", mask_path=mask_png(tmp_path, "m2", two_parts),
              provenance=span("Two nodules are seen.")),
        label("f3", "Heart is enlarged.", code="Cardiomegaly", provenance=span("Heart is enlarged.")),
        label("f4", "Sternotomy wires.", kind="box", box=[30, 0, 34, 48], code="Support Devices"),  # no span
        label("f5", "Emphysema.", assertion="absent", provenance=span("Heart is enlarged.")),  # rejected
        label("f6", "Left upper zone opacity.", kind="box", box=box,
              provenance=span("Left upper zone opacity.", "impression")),  # the same box on the impression
        label("p1", "Possible effusion.", kind="box", box=[0, 0, 64, 48], source="weak",
              code="Pleural Effusion"),
        label("p2", "pneumothorax", assertion="absent", source="weak", code="Pneumothorax",
              provenance=span("No pneumothorax.")),
        label("p3", "pneumothorax", assertion="absent", source="weak", code="Pneumothorax",
              provenance=span("No pneumothorax.", "impression")),  # Impression repeats it: one phrase
        label("p4", "Empty.", kind="mask", source="model",
              mask_path=mask_png(tmp_path, "m4", np.zeros((Y, X), bool))),
        label("p5", "effusion", kind="box", box=[0, 24, 32, 48], source="model", code="Pleural Effusion"),
        label("p6", "No mass", assertion="absent", source="weak", code="2b"),
        label("r1", "left_lung", kind="mask", source="model", code="left_lung", role="context",
              mask_path=mask_png(tmp_path, "lung", rect(0, 48, 32, 64))),
        label("p7", "Small nodule.", source="weak"),
        label("p8", "small  nodule", kind="box", box=[40, 30, 60, 40], source="model"),
        label("p9", "edema", assertion="uncertain", source="weak", code="Edema"),
    ]  # fmt: skip
    cases = [
        CaseRecord("a", "PA", "SA", "train", image, report={"findings": FINDINGS, "impression": IMPRESSION,
                                                             "indication": "Cough."}, labels=labels),
        CaseRecord("b", "PB", "SB", "test", image),
    ]  # fmt: skip
    done = []
    summary = radfact.export(iter(cases), sink, META, progress=done.append)
    assert done == [1, 2] and (summary.cases, summary.files) == (2, 1)
    assert summary.skipped == [
        "a/f5: absent finding (rejected in review): its sentence stays without boxes",
        "a/p4: empty mask",
        "a/p6: absent proposal of code '2b': its text does not state the assertion",
        "a/r1: context anatomy (left_lung), not a finding",
    ]
    assert summary.labels == len(labels) - 4  # f5, p4, p6, r1 left out

    path = sink.root / "radfact" / "grounded_reports.json"
    text = path.read_text()
    assert '"boxes": []' not in text and '"boxes": null' in text
    candidates, references = read_radfact(path)
    assert list(references) == ["a", "b"]
    assert [ex["split"] for ex in json.loads(text)] == ["train", "test"]  # beside the keys RadFact reads
    assert references["b"] == [] and candidates["b"] == []

    b1 = Box(8 / 64, 4 / 48, 24 / 64, 20 / 48)
    comp1, comp2 = Box(4 / 64, 10 / 48, 13 / 64, 21 / 48), Box(40 / 64, 30 / 48, 60 / 64, 40 / 48)
    assert references["a"] == [
        # every sentence of Findings then Impression (not the indication), negatives with null boxes
        Phrase("Opacity in the left upper zone.", [b1]),
        Phrase("Two nodules are seen.", [comp1, comp2]),
        Phrase("Heart is enlarged.", None),
        Phrase("No pneumothorax.", None),
        Phrase("Left upper zone opacity.", [b1]),
        Phrase("No pneumothorax.", None),
        # an accepted grounded finding without a report span: a phrase of its own
        Phrase("Sternotomy wires.", [Box(30 / 64, 0.0, 34 / 64, 1.0)]),
    ]
    assert candidates["a"] == [
        Phrase(
            "Possible effusion.", [Box(0.0, 0.0, 1.0, 1.0), Box(0.0, 0.5, 0.5, 1.0)]
        ),  # weak + model pooled
        Phrase("No pneumothorax.", None),
        Phrase("Small nodule.", [comp2]),  # the same text, normalised: one phrase
        Phrase("Possible edema.", None),
    ]


def test_a_finding_spanning_two_sentences_grounds_both(tmp_path, sink):
    image = image_record(tmp_path, "img")
    both = {"span": ["findings", 0, len("Opacity in the left upper zone. Two nodules are seen.")]}
    case = CaseRecord(
        "a", "P", "S", "val", image, report={"findings": FINDINGS},
        labels=[label("f1", "Opacity and nodules", kind="box", box=[0, 0, 32, 24], provenance=both)],
    )  # fmt: skip
    radfact.export([case], sink, META)
    _, references = read_radfact(sink.root / "radfact" / "grounded_reports.json")
    grounded = [p.text for p in references["a"] if p.boxes]
    assert grounded == ["Opacity in the left upper zone.", "Two nodules are seen."]


def test_empty_release_repeats_and_errors(tmp_path, sink):
    summary = radfact.export([], sink, META)
    assert json.loads((sink.root / "radfact" / "grounded_reports.json").read_text()) == []
    assert summary.cases == 0

    image = image_record(tmp_path, "img")
    again = DirSink(tmp_path / "again")
    case = CaseRecord("a", "P", "S", "train", image)
    summary = radfact.export([case, case], again, META)
    assert summary.cases == 1 and summary.skipped == [
        "a: the case appears twice in the release; written once"
    ]
    assert len(read_radfact(again.root / "radfact" / "grounded_reports.json")[0]) == 1

    ct = CaseRecord("ct-1", "P", "S", "train", image_record(tmp_path, "ct", shape=(8, 6, 4)))
    ct.image.modality = "CT"
    with pytest.raises(FormatError) as err:
        radfact.export([ct], DirSink(tmp_path / "ct"), META)
    assert err.value.field == "ct-1.image" and "--modality" in err.value.reason

    outside = CaseRecord("a", "P", "S", "train", image, labels=[label("f1", kind="box", box=[0, 0, 65, 10])])
    with pytest.raises(FormatError) as err:
        radfact.export([outside], DirSink(tmp_path / "outside"), META)
    assert err.value.field == "a/f1.box"


# -- the release of real data -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_real_release_reads_like_radfact(tmp_path, shared_data, make_user):
    from releases.errors import ReleaseError
    from releases.exporting import release_export_to
    from releases.models import ReleaseCase
    from releases.services import release_create
    from tests.releases.real import real_release

    real = real_release(shared_data, tmp_path, make_user)
    ct_case = ReleaseCase.objects.get(release=real.release, scan_id=real.ct.pk).case_id
    with pytest.raises(ReleaseError) as err:
        release_export_to(real.release, "radfact", DirSink(tmp_path / "mixed"))
    assert err.value.field == f"{ct_case}.image" and "--modality CR" in err.value.reason

    release = release_create(dataset=real.dataset, selection={"sources": "both", "modalities": ["CR", "DX"]})
    out = DirSink(tmp_path / "export")
    release_export_to(release, "radfact", out)
    out.close()
    candidates, references = read_radfact(out.root / "radfact" / "grounded_reports.json")
    cases = {c.scan_id: c.case_id for c in ReleaseCase.objects.filter(release=release)}
    assert set(references) == set(cases.values()) and real.ct.pk not in cases

    # report 1900 (frontal image): its Findings and Impression sentence by sentence, the sternotomy wires
    # grounded by the accepted box, the granulomas by the accepted mask's two components
    frontal = real.radiographs[0]
    width, height = (int(n) for n in frontal.shape[:2])
    w, h = width, height

    def box(x0, y0, x1, y1):  # pixels (max exclusive) -> RadFact's normalised box
        return Box(x0 / w, y0 / h, x1 / w, y1 / h)

    wires = box(w // 2 - 20, h // 4, w // 2 + 20, h // 2)
    granulomas = [
        box(w // 5, h // 3, w // 5 + 30, h // 3 + 30),
        box(3 * w // 4, h // 2, 3 * w // 4 + 20, h // 2 + 20),
    ]
    assert references[cases[frontal.pk]] == [
        Phrase("There are XXXX sternotomy XXXX identified.", [wires]),
        Phrase("The heart is within normal limits in size.", None),
        Phrase("The aorta is calcified and tortuous.", None),
        Phrase("There are scattered calcified granulomas throughout both lungs.", granulomas),
        Phrase("No focal infiltrate, pleural effusion, or pneumothorax.", None),
        Phrase("Mild degenerative changes of the thoracic spine.", None),
        Phrase("Stable appearance of the chest.", None),  # "1. " of the numbered impression left out
        Phrase("No acute process.", None),
    ]
    # the rules labeler's unreviewed negatives of the same report, each stated once
    assert candidates[cases[frontal.pk]] == [
        Phrase("No cardiomegaly.", None),
        Phrase("No lung opacity.", None),
        Phrase("No pleural effusion.", None),
        Phrase("No pneumothorax.", None),
    ]
    # report 3 (impression only): every sentence is a negative, none grounded
    (other,) = [cid for scan, cid in cases.items() if scan != frontal.pk]
    assert references[other][0] == Phrase(
        "No displaced rib fractures, pneumothorax, or pleural effusion identified.", None
    )
    assert all(p.boxes is None for p in references[other] + candidates[other])
    assert Phrase("No fracture.", None) in candidates[other]
