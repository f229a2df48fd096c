"""What the label codes mean, in words: one table for every screen and export that shows a code.

ReXGroundingCT categories are short codes (``2d``) that read like something else ("2-D"); CheXpert
observations are their own names; ``suv`` is a PET/CT lesion seed. ``code_name`` gives the words a person
reads beside the code."""

from __future__ import annotations

from labeling.types import CHEXPERT_OBSERVATIONS

# ReXGroundingCT's 14 categories of lung and pleura findings (docs/formats.md): 1a..1f typically non-focal,
# 2a..2h typically focal; the names the platform's labelers use (labeling/prompts/rexgroundingct_v1.md).
REX_CATEGORIES: dict[str, str] = {
    "1a": "bronchial wall thickening",
    "1b": "bronchiectasis",
    "1c": "emphysema",
    "1d": "septal thickening",
    "1e": "micronodules",
    "1f": "other non-focal finding",
    "2a": "linear opacity",
    "2b": "atelectasis / consolidation",
    "2c": "ground-glass opacity",
    "2d": "nodule / mass",
    "2e": "pleural effusion / thickening",
    "2f": "honeycombing",
    "2g": "pneumothorax",
    "2h": "other focal finding",
}

OTHER_NAMES: dict[str, str] = {"suv": "PET lesion (SUVmax seed)"}


def code_name(code: str) -> str:
    """The words for ``code``: a ReXGroundingCT category's name, a CheXpert observation in lower case,
    ``suv``'s meaning; "" for an empty code, the code itself when it is none of these."""
    if not code:
        return ""
    if code in REX_CATEGORIES:
        return REX_CATEGORIES[code]
    if code in CHEXPERT_OBSERVATIONS:
        return code.lower()
    return OTHER_NAMES.get(code, code)
