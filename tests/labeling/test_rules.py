"""The offline rules labeler: sentences, negation/uncertainty scope, attributes, CT and PET schemas."""

import csv

import pytest

from labeling.rules import RULES_VERSION, chexpert_row, rules_label
from labeling.types import CHEXPERT_OBSERVATIONS, ProposedFinding


def label(text: str, schema: str = "chexpert", section: str = "findings") -> list[ProposedFinding]:
    sections = {section: text}
    out = rules_label(sections, schema=schema)
    for p in out:  # every span is the exact sentence text
        sentence = sections[p.section][p.start : p.end]
        assert sentence and sentence == sentence.strip()
        assert p.phrase.lower() in sentence.lower() or schema == "rexgroundingct"
    return out


def by_code(props):
    return {p.code: p for p in props}


def test_version_and_unknown_schema():
    assert RULES_VERSION
    with pytest.raises(ValueError):
        rules_label({"findings": "x"}, schema="nope")


def test_negated_list():
    got = by_code(label("No pneumothorax or pleural effusion."))
    assert got["Pneumothorax"].assertion == "absent"
    assert got["Pleural Effusion"].assertion == "absent"


@pytest.mark.parametrize(
    "text,code,assertion",
    [
        ("Cannot exclude pneumonia.", "Pneumonia", "uncertain"),
        ("Possible atelectasis at the left base.", "Atelectasis", "uncertain"),
        ("Pneumonia cannot be excluded.", "Pneumonia", "uncertain"),
        ("The previously seen left pleural effusion has resolved.", "Pleural Effusion", "absent"),
        ("Resolved right lower lobe pneumonia.", "Pneumonia", "absent"),
        ("The lungs are free of focal consolidation.", "Consolidation", "absent"),
        ("No evidence of pneumothorax.", "Pneumothorax", "absent"),
        ("Lungs are clear without infiltrate.", "Lung Opacity", "absent"),
        ("There is no focal air space opacity to suggest a pneumonia.", "Pneumonia", "absent"),
        ("Heart size is normal.", "Cardiomegaly", "absent"),
        ("Stable cardiomegaly.", "Cardiomegaly", "present"),
        ("No change in mild cardiomegaly.", "Cardiomegaly", "present"),
        ("There is XXXX opacity in the left base, likely atelectasis.", "Atelectasis", "uncertain"),
        ("XXXX XXXX pneumothorax is not seen.", "Pneumothorax", "absent"),
        ("Left-sided XXXX pacemaker in place.", "Support Devices", "present"),
    ],
)
def test_assertions(text, code, assertion):
    assert by_code(label(text))[code].assertion == assertion


def test_scope_ends_at_but():
    got = by_code(label("No pneumothorax, but there is a small right pleural effusion."))
    assert got["Pneumothorax"].assertion == "absent"
    assert got["Pleural Effusion"].assertion == "present"
    assert got["Pleural Effusion"].laterality == "right"


def test_size_laterality_lobe():
    p = by_code(label("1.2 cm nodule in the right upper lobe."))["Lung Lesion"]
    assert (p.assertion, p.size_mm, p.laterality, p.location) == (
        "present",
        12.0,
        "right",
        "right upper lobe",
    )


def test_history_sections_ignored_and_offsets():
    sections = {
        "indication": "Pneumonia?",
        "findings": "Heart normal.  Small left effusion.",
        "impression": "X.",
    }
    props = rules_label(sections, schema="chexpert")
    assert {p.section for p in props} == {"findings"}
    p = by_code(props)["Pleural Effusion"]
    assert sections["findings"][p.start : p.end] == "Small left effusion."


def test_chexpert_row_precedence_and_no_finding():
    row = chexpert_row(
        label("No acute fracture. Old healed right rib fractures. Possible effusion. No effusion.")
    )
    assert set(row) == set(CHEXPERT_OBSERVATIONS)
    assert row["Fracture"] == 1.0 and row["Pleural Effusion"] == -1.0 and row["No Finding"] is None
    row = chexpert_row(label("No pneumothorax. Left subclavian pacemaker."))
    assert row["Pneumothorax"] == 0.0 and row["Support Devices"] == 1.0 and row["No Finding"] == 1.0
    assert row["Edema"] is None


@pytest.mark.parametrize(
    "text", ["", "   ", "x" * 2_000_000, "Pas d'épanchement pleural. 肺炎なし。", "\udcff\x00."]
)
def test_bad_input_never_crashes(text):
    assert isinstance(rules_label({"findings": text}, schema="chexpert"), list)
    assert isinstance(rules_label({"findings": text}, schema="rexgroundingct"), list)
    assert isinstance(rules_label({"findings": text}, schema="petct"), list)


def test_bytes_and_odd_values():
    assert rules_label({"findings": b"\xff\xfe no effusion", "impression": None}, schema="chexpert")
    assert rules_label({}, schema="chexpert") == []


def test_huge_report_is_fast():
    import time

    text = "No pneumothorax or pleural effusion. Mild cardiomegaly. " * 5000
    t0 = time.perf_counter()
    rules_label({"findings": text}, schema="chexpert")
    assert time.perf_counter() - t0 < 10


def test_ct_categories_and_codes():
    sections = {
        "findings": "Bilateral ground-glass opacities. No pleural effusion.",
        "impression": "Emphysema.",
    }
    props = rules_label(sections, schema="rexgroundingct")
    ggo = next(p for p in props if p.code == "2c")
    assert ggo.assertion == "present" and ggo.extra["region"] == "L" and ggo.extra["source_codes"] == ["F0"]
    assert ggo.extra["abnormal"] is True and ggo.laterality == "bilateral"
    eff = next(p for p in props if "effusion" in p.phrase.lower())
    assert (
        eff.assertion == "absent" and eff.extra["abnormal"] is False and eff.extra["source_codes"] == ["F1"]
    )
    emph = next(p for p in props if p.code == "1c")
    assert emph.extra["source_codes"] == ["I0"]
    for p in props:
        assert sections[p.section][p.start : p.end] in sections[p.section]


def test_ct_regions_and_prior():
    props = rules_label(
        {
            "findings": "Stable 5 mm nodule in the left lower lobe. Small hiatal hernia. Old rib fracture.",
        },
        schema="rexgroundingct",
    )
    nod = next(p for p in props if p.code == "2d")
    assert nod.size_mm == 5.0 and nod.extra["refers_to_prior"] is True and nod.location == "left lower lobe"
    regions = {p.extra["region"] for p in props}
    assert {"L", "A", "B"} <= regions


def test_pet_seeds():
    text = (
        "Hypermetabolic right hilar node with SUVmax 7.2 on image 143. Small left node SUVmax 1.9, image 80. "
        "Two nodes with SUVmax 4.1 and SUVmax 5.0 on image 99."
    )
    props = label(text, schema="petct")
    assert len(props) == 1
    p = props[0]
    assert p.code == "suv" and p.extra == {"suvmax": 7.2, "slice": 143} and p.laterality == "right"


def test_real_iu_sentences(shared_data):
    path = shared_data / "reports" / "iu_reports_dev.csv"
    with open(path, encoding="utf-8", newline="") as fh:
        rows = {r["uid"]: r for r in csv.DictReader(fh)}
    r = rows["3"]  # "No displaced rib fractures, pneumothorax, or pleural effusion identified."
    row = chexpert_row(rules_label({"impression": r["impression"]}, schema="chexpert"))
    assert row["Fracture"] == 0.0 and row["Pneumothorax"] == 0.0 and row["Pleural Effusion"] == 0.0
    assert row["No Finding"] == 1.0
    r = rows["10"]  # "... without evidence of focal airspace disease, pleural effusion, or pneumothorax."
    row = chexpert_row(rules_label({"findings": r["findings"]}, schema="chexpert"))
    assert row["Lung Opacity"] == 0.0 and row["Pleural Effusion"] == 0.0 and row["Pneumothorax"] == 0.0
    for r in list(rows.values())[:300]:  # spans are exact on real text
        sections = {k: r[k] for k in ("indication", "comparison", "findings", "impression")}
        for p in rules_label(sections, schema="chexpert"):
            assert p.section in ("findings", "impression")
            assert sections[p.section][p.start : p.end].strip() == sections[p.section][p.start : p.end]
            assert p.phrase in sections[p.section][p.start : p.end]


def row_of(text: str) -> dict:
    return chexpert_row(label(text))


@pytest.mark.parametrize(
    "text,code,value",
    [
        # support devices: no bare "sternotomy" (CheXpert lists devices, not operations); new device words
        ("Postoperative changes of sternotomy and CABG.", "Support Devices", None),
        ("Intact median sternotomy wires.", "Support Devices", 1.0),
        ("Bilateral breast prostheses are noted.", "Support Devices", None),
        ("A spinal cord stimulator is seen.", "Support Devices", 1.0),
        ("VP shunt tubing courses over the right chest.", "Support Devices", 1.0),
        ("Prior anterior cervical fusion.", "Support Devices", 1.0),
        ("The right chest port tip is visualized in the mid SVC.", "Support Devices", 1.0),
        ("Left chest catheter with tip in the right atrium.", "Support Devices", 1.0),
        # lung lesion: nodules attributed to bone / artifact / granuloma are not lung lesions
        (
            "Nodular density overlying the left 4th rib represents a healing rib fracture.",
            "Lung Lesion",
            None,
        ),
        ("Nodular opacity projecting over the right 9th rib likely reflects granuloma.", "Lung Lesion", None),
        (
            "Nodular opacity over the upper lungs may represent overlying telemetry leads.",
            "Lung Lesion",
            None,
        ),
        ("Nodular densities projecting over the right anterior fifth and sixth ribs.", "Lung Lesion", -1.0),
        ("Mixed nodular interstitial opacities in both lungs.", "Lung Lesion", 1.0),
        ("A 1 cm nodule is seen in the right upper lobe.", "Lung Lesion", 1.0),
        ("CT can be performed to identify a small nodule.", "Lung Lesion", -1.0),
        # fracture: hyphenated fracture-dislocation; "age-indeterminate" is not a hedge
        ("Fracture-dislocation of the right shoulder.", "Fracture", 1.0),
        ("An age-indeterminate compression fracture of a lower thoracic vertebra.", "Fracture", 1.0),
        # pneumonia: a clinical-correlation request is not a finding
        ("Correlate clinically for symptoms of infection.", "Pneumonia", -1.0),
        # "X may represent Y": Y is the hedged one, X is seen (CheXpert's dobj-of-represent rule)
        ("Small nodular opacity in the left upper lobe may represent early infiltrate.", "Lung Lesion", 1.0),
        ("Opacity may represent atelectasis.", "Atelectasis", -1.0),
        # a negation or hedge does not reach past "with <size/side> ..."
        ("No cardiomegaly with bilateral small pleural effusions.", "Pleural Effusion", 1.0),
        ("No cardiomegaly with bilateral small pleural effusions.", "Cardiomegaly", 0.0),
        ("Probable effusions with mild basilar atelectasis.", "Atelectasis", 1.0),
        ("No pneumothorax with no effusion.", "Pleural Effusion", 0.0),
        # rules-1.2: bare "compatible with" / "representing" assert the finding; a modal still hedges it
        ("Streaky basilar opacity compatible with subsegmental atelectasis.", "Atelectasis", 1.0),
        ("Basilar opacity may be compatible with atelectasis.", "Atelectasis", -1.0),
        ("Air-fluid level in the left hemithorax representing a hydropneumothorax.", "Pneumothorax", 1.0),
        ("Patchy opacity possibly representing pneumonia.", "Pneumonia", -1.0),
        ("Lower lobe opacity, likely representing aspiration pneumonia.", "Pneumonia", -1.0),
        ("Linear opacity could represent atelectasis.", "Atelectasis", -1.0),
    ],
)
def test_issue3_rules(text, code, value):
    assert row_of(text)[code] == value
