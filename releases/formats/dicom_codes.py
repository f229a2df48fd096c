"""Coded meaning of DICOM SEG segments: a label's ReXGroundingCT category, CheXpert observation or anatomy
code -> Segmented Property Category / Type (and laterality modifier, anatomic region).

Guarantees: every code here is pydicom's (``pydicom.sr.codedict.codes``, generated from DICOM PS3.16), so
none is invented; a class without an exact concept there gets ``FALLBACK`` (Morphologically Abnormal
Structure / Lesion, ``exact`` False) and the exporter keeps the finding's words in SegmentDescription.
Categories come from CID 7150 (Segmentation Property Category); types from CID 7151 (Segmentation Property
Type: anatomy from CID 7192 / 7155, lesions from CID 7159) or, where CID 7151 has no such concept, from
the chest CT findings of CID 6102 / 6104 (DCM 1121xx), which the extensible CID 7151 admits. Laterality
is a Segmented Property Type Modifier from CID 244 (SCT Left / Right), as DICOM codes left and right
organs ("Lung" + "Left", not a "Left lung" concept).

Where a class joins two concepts (ReXGroundingCT 2d nodule/mass, 2e pleural effusion/thickening) the
label's text picks one when it names it; otherwise the fallback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

FINDING_CATEGORY = codes.SCT.MorphologicallyAbnormalStructure  # CID 7150
ANATOMY_CATEGORY = codes.SCT.AnatomicalStructure  # CID 7150


@dataclass(frozen=True)
class SegmentCodes:
    """What a segment is: category and type, with an optional type modifier and anatomic region."""

    category: Code
    type: Code
    modifier: Code | None = None  # Segmented Property Type Modifier (laterality)
    region: Code | None = None  # Anatomic Region (where a finding lies)
    exact: bool = True  # False: no concept for the class; the text in SegmentDescription says what
    name: str = ""  # a display name (anatomy: the segment label of a context segment)


FALLBACK = SegmentCodes(FINDING_CATEGORY, codes.SCT.Lesion, exact=False)
GENERIC_ANATOMY = SegmentCodes(ANATOMY_CATEGORY, codes.SCT.AnatomicalStructure, exact=False)


def _finding(type_: Code, region: Code | None = None) -> SegmentCodes:
    return SegmentCodes(FINDING_CATEGORY, type_, region=region)


def _organ(type_: Code, name: str, side: Code | None = None) -> SegmentCodes:
    return SegmentCodes(ANATOMY_CATEGORY, type_, modifier=side, name=name)


# A rule: (pattern the label text must match, or None for any text; the codes). The first that matches
# wins; none: FALLBACK. An empty tuple: no exact concept in DICOM for this class.
Rules = tuple[tuple[str | None, SegmentCodes], ...]

# ReXGroundingCT categories (the dataset's lung and pleura finding classes), with the names they stand for.
REXGROUNDINGCT: dict[str, tuple[str, Rules]] = {
    "1a": ("bronchial wall thickening", ()),
    "1b": ("bronchiectasis", ()),
    "1c": ("emphysema", ()),
    "1d": ("septal thickening", ()),
    "1e": ("micronodules", ((None, _finding(codes.DCM.Micronodule)),)),
    "1f": ("other (airways, interstitium)", ()),
    "2a": ("linear opacity", ()),
    "2b": ("atelectasis / consolidation", ()),
    "2c": ("ground-glass opacity", ((None, _finding(codes.DCM.GroundGlassOpacity)),)),
    "2d": (
        "nodule / mass",
        ((r"\bmass(?:es)?\b", _finding(codes.SCT.Mass)), (r"\bnodules?\b", _finding(codes.SCT.Nodule))),
    ),
    "2e": ("pleural effusion / thickening", ((r"\beffusions?\b", _finding(codes.SCT.PleuralEffusion)),)),
    "2f": ("honeycombing", ((None, _finding(codes.DCM.HoneycombPattern)),)),
    "2g": ("pneumothorax", ((None, _finding(codes.SCT.Pneumothorax)),)),
    "2h": ("other (parenchyma, pleura)", ()),
}

# CheXpert observations (radiograph finding classes).
CHEXPERT: dict[str, Rules] = {
    "No Finding": (),
    "Enlarged Cardiomediastinum": (),
    "Cardiomegaly": ((None, _finding(codes.SCT.Cardiomegaly)),),
    "Lung Lesion": ((None, _finding(codes.SCT.Lesion, codes.SCT.Lung)),),
    "Lung Opacity": ((None, _finding(codes.DCM.Opacity, codes.SCT.Lung)),),
    "Edema": ((None, _finding(codes.SCT.PulmonaryEdema)),),
    "Consolidation": (),
    "Pneumonia": (),
    "Atelectasis": (),
    "Pneumothorax": ((None, _finding(codes.SCT.Pneumothorax)),),
    "Pleural Effusion": ((None, _finding(codes.SCT.PleuralEffusion)),),
    "Pleural Other": (),
    "Fracture": (),
    "Support Devices": (),
}

LEFT, RIGHT = codes.SCT.Left, codes.SCT.Right
# Anatomy codes of generators and models (``releases.labels.ANATOMY_CODES``).
ANATOMY: dict[str, SegmentCodes] = {
    "lung": _organ(codes.SCT.Lung, "Lung"),
    "lungs": _organ(codes.SCT.Lung, "Lungs"),
    "left_lung": _organ(codes.SCT.Lung, "Left lung", LEFT),
    "right_lung": _organ(codes.SCT.Lung, "Right lung", RIGHT),
    "lung_upper_lobe_left": _organ(codes.SCT.UpperLobeOfLung, "Upper lobe of left lung", LEFT),
    "lung_lower_lobe_left": _organ(codes.SCT.LowerLobeOfLung, "Lower lobe of left lung", LEFT),
    "lung_upper_lobe_right": _organ(codes.SCT.UpperLobeOfLung, "Upper lobe of right lung", RIGHT),
    "lung_middle_lobe_right": _organ(codes.SCT.MiddleLobeOfRightLung, "Middle lobe of right lung"),
    "lung_lower_lobe_right": _organ(codes.SCT.LowerLobeOfLung, "Lower lobe of right lung", RIGHT),
    "heart": _organ(codes.SCT.Heart, "Heart"),
    "mediastinum": _organ(codes.SCT.Mediastinum, "Mediastinum"),
    "aortic_knob": _organ(codes.SCT.AorticArch, "Aortic arch (aortic knob)"),
    "aorta": _organ(codes.SCT.Aorta, "Aorta"),
    "trachea": _organ(codes.SCT.Trachea, "Trachea"),
    "airway": _organ(codes.SCT.AirwayStructure, "Airway"),
    "airways": _organ(codes.SCT.AirwayStructure, "Airways"),
    "esophagus": _organ(codes.SCT.Esophagus, "Esophagus"),
    "liver": _organ(codes.SCT.Liver, "Liver"),
    "spleen": _organ(codes.SCT.Spleen, "Spleen"),
    "kidney": _organ(codes.SCT.Kidney, "Kidney"),
    "left_kidney": _organ(codes.SCT.Kidney, "Left kidney", LEFT),
    "right_kidney": _organ(codes.SCT.Kidney, "Right kidney", RIGHT),
    "stomach": _organ(codes.SCT.Stomach, "Stomach"),
    "pancreas": _organ(codes.SCT.Pancreas, "Pancreas"),
    "spine": _organ(codes.SCT.Spine, "Spine"),
    "vertebrae": _organ(codes.SCT.Vertebra, "Vertebrae"),
    "rib": _organ(codes.SCT.Rib, "Rib"),
    "ribs": _organ(codes.SCT.Rib, "Ribs"),
    "body": _organ(codes.SCT.EntireBody, "Body"),
}


def _apply(rules: Rules, text: str) -> SegmentCodes:
    for pattern, coded in rules:
        if pattern is None or re.search(pattern, text, re.I):
            return coded
    return FALLBACK


def segment_codes(*, code: str, category: str, text: str, role: str = "finding") -> SegmentCodes:
    """The coded meaning of a mask label: an anatomy code (a context label's, or one released as a finding
    class) gives an anatomical segment, a ReXGroundingCT category or a CheXpert observation a finding's
    codes; anything else, or a class without an exact concept, ``FALLBACK`` (a context label whose anatomy
    is not in the table: ``GENERIC_ANATOMY``)."""
    key = (code or "").strip().lower()
    if key in ANATOMY:
        return ANATOMY[key]
    if role == "context":
        return GENERIC_ANATOMY
    if category in REXGROUNDINGCT:
        return _apply(REXGROUNDINGCT[category][1], text)
    if code in CHEXPERT:
        return _apply(CHEXPERT[code], text)
    return FALLBACK


def all_codes() -> list[Code]:
    """Every code the tables use (for the test that each is pydicom's)."""
    coded = [FALLBACK, GENERIC_ANATOMY, *ANATOMY.values()]
    coded += [c for _, rules in REXGROUNDINGCT.values() for _, c in rules]
    coded += [c for rules in CHEXPERT.values() for _, c in rules]
    out = []
    for c in coded:
        out += [c.category, c.type] + [x for x in (c.modifier, c.region) if x is not None]
    return out
