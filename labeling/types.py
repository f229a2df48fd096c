"""Typed payloads of report labelers (no database): what a labeler proposes for one report."""

from dataclasses import dataclass, field
from typing import Literal

Assertion = Literal["present", "absent", "uncertain"]
SCHEMAS = ("chexpert", "rexgroundingct", "petct")

CHEXPERT_OBSERVATIONS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Lesion", "Lung Opacity", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices",
)  # fmt: skip


@dataclass
class ProposedFinding:
    """One finding in one report, tied to its exact words.

    ``section`` is the report section the sentence came from (findings, impression, ...) and
    ``start``/``end`` are character offsets of the whole sentence(s) inside that section's text
    (``text[start:end]`` is the sentence). ``code`` is the label-schema code: a CheXpert observation name,
    a ReXGroundingCT category (``1a``…``1f``, ``2a``…``2h``), or ``suv`` for a PET/CT lesion seed.
    ``extra`` holds schema-specific fields: ReXGroundingCT ``region`` (L/H/M/C/N/B/A), ``source_codes``
    (``["F0", "I1"]``), ``abnormal`` and ``refers_to_prior`` (bools); PET/CT ``suvmax`` and ``slice``.
    """

    phrase: str
    section: str
    start: int
    end: int
    assertion: Assertion
    code: str
    laterality: str = ""  # left, right, bilateral or ""
    location: str = ""  # anatomical location, e.g. "right upper lobe"
    size_mm: float | None = None
    extra: dict = field(default_factory=dict)
