"""The words proposals and findings are matched by: organ names, the finding codes a model label names,
the organ a finding of a code lies in (``annotation/proposals/__init__.py`` explains the rules)."""

from __future__ import annotations

import re

SIDES = ("right", "left")
PARTS = ("upper", "middle", "lower")
LOBES = {  # (side, part) -> organ key of a lobe
    ("right", "upper"): "right_upper_lobe",
    ("right", "middle"): "right_middle_lobe",
    ("right", "lower"): "right_lower_lobe",
    ("left", "upper"): "left_upper_lobe",
    ("left", "lower"): "left_lower_lobe",
}
# Sources whose proposals are findings' regions whatever their label says (a gaze region is named after the
# anatomy its sentence talks about, a PET lesion after its SUVmax).
LESION_SOURCES = ("gaze", "pet-suv")
LUNG_KEYS = ("right_lung", "left_lung", "lungs", *LOBES.values())

# Organ names a label may use (normalised: lower case, "_"/"-" as spaces) -> organ key. Lungs and lobes are
# read from their words (``_lung_organ``); these are the rest.
ORGANS = {
    "heart": "heart", "cardiac silhouette": "heart", "cardiac": "heart", "heart myocardium": "heart",
    "mediastinum": "mediastinum", "trachea": "trachea", "airway": "airway", "airways": "airway",
    "bronchi": "airway", "bronchus": "airway", "main bronchi": "airway", "aorta": "aorta",
    "aortic knob": "aorta", "esophagus": "esophagus", "pulmonary artery": "pulmonary_artery",
    "liver": "liver", "spleen": "spleen", "stomach": "stomach", "body": "body", "ribs": "ribs",
    "spine": "spine", "vertebrae": "spine", "sternum": "sternum", "diaphragm": "diaphragm",
    "thyroid": "thyroid", "thyroid gland": "thyroid",
}  # fmt: skip

# Model labels (normalised) that name a kind of finding -> the finding codes they name (ReXGroundingCT
# categories and CheXpert observations). A label here is a lesion that belongs to findings of these codes.
LABEL_CODES: dict[str, frozenset[str]] = {
    name: frozenset(codes)
    for names, codes in (
        (("nodule", "nodules", "lung nodule", "lung nodules", "pulmonary nodule", "mass", "lung mass",
          "tumor", "tumour", "lung tumor", "lung tumour", "lesion", "lung lesion", "lung cancer",
          "neoplasm"), ("2d", "Lung Lesion")),
        (("effusion", "pleural effusion", "pleural fluid", "hydrothorax"), ("2e", "Pleural Effusion")),
        (("pneumothorax",), ("2g", "Pneumothorax")),
        (("consolidation",), ("2b", "Consolidation")),
        (("atelectasis", "collapse"), ("2b", "2a", "Atelectasis")),
        (("ground glass", "ground glass opacity", "ggo"), ("2c", "Lung Opacity")),
        (("opacity", "lung opacity", "infiltrate"), ("2h", "2b", "2c", "Lung Opacity")),
        (("pneumonia", "infection"), ("2h", "2b", "Pneumonia", "Consolidation")),
        (("emphysema", "bulla", "bullae"), ("1c",)),
        (("bronchiectasis",), ("1b",)),
        (("honeycombing", "fibrosis"), ("2f", "1f")),
        (("edema", "pulmonary edema"), ("Edema",)),
        (("cardiomegaly",), ("Cardiomegaly",)),
        (("fracture", "rib fracture"), ("Fracture",)),
    )
    for name in names
}  # fmt: skip

# The organ a finding of a code lies in (None: not told by its code).
CHEXPERT_ORGANS = {
    "Cardiomegaly": "heart", "Enlarged Cardiomediastinum": "mediastinum", "Lung Lesion": "lungs",
    "Lung Opacity": "lungs", "Edema": "lungs", "Consolidation": "lungs", "Pneumonia": "lungs",
    "Atelectasis": "lungs", "Pneumothorax": "lungs", "Pleural Effusion": "lungs", "Pleural Other": "lungs",
}  # fmt: skip
REX_REGION_ORGANS = {"L": "lungs", "H": "heart", "M": "mediastinum"}
# Findings whose grounding is the organ itself: its anatomy proposal is their start (rule ``organ``).
ORGAN_FINDINGS = {"Cardiomegaly": "heart", "Enlarged Cardiomediastinum": "mediastinum"}
REX_CATEGORY = re.compile(r"^[12][a-h]$")


def norm(name: str) -> str:
    """A label as compared here: lower case, ``_``/``-`` as spaces, single spaces."""
    return " ".join(re.sub(r"[_\-]+", " ", str(name).lower()).split())


def _lung_organ(words: list[str]) -> str:
    """``right_lung``, ``left_upper_lobe``, ``lungs`` ... for a label made of lung words only; "" else."""
    allowed = {"lung", "lungs", "lobe", "lobes", "of", "the", "l", "r", "lt", "rt", "side", "pulmonary"}
    allowed |= set(SIDES) | set(PARTS) | {"mid", "lingula"}
    if not words or any(w not in allowed for w in words):
        return ""
    if not ({"lung", "lungs", "lobe", "lingula"} & set(words)):
        return ""
    side = next((s for w in words for s in SIDES if w == s or w in {s[0], s[0] + "t"}), "")
    part = next((("middle" if w == "mid" else w) for w in words if w in PARTS or w == "mid"), "")
    if "lingula" in words:
        return "left_upper_lobe"
    if part and side and (side, part) in LOBES:
        return LOBES[(side, part)]
    if side and not part:
        return f"{side}_lung"
    if not side and not part:
        return "lungs"
    return ""


def organ_of(label: str) -> str:
    """The organ key a proposal's label names (``right_lung``, ``right_upper_lobe``, ``heart`` ...), or
    ""."""
    name = norm(label)
    if name in ORGANS:
        return ORGANS[name]
    return _lung_organ(name.split())


def label_codes(label: str) -> frozenset[str]:
    """The finding codes a model label names (``LABEL_CODES``), empty when it names none."""
    return LABEL_CODES.get(norm(label), frozenset())
