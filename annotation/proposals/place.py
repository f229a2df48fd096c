"""A finding's place (organ, side, zone, lobe) and the scan's proposals as the matcher sees them, with the
anatomy of a place as context."""

from __future__ import annotations

import re
from dataclasses import dataclass

from annotation.proposals.names import (
    CHEXPERT_ORGANS,
    LESION_SOURCES,
    LOBES,
    REX_CATEGORY,
    REX_REGION_ORGANS,
    SIDES,
    label_codes,
    norm,
    organ_of,
)
from labeling.models import RegionProposal
from labeling.rules.attributes import laterality as text_laterality
from labeling.rules.attributes import location as text_location

# --- the finding's place ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Place:
    """Where a finding is: ``organ`` (``lungs``, ``heart``, ``mediastinum`` or ""), ``side`` (``right``,
    ``left``, ``bilateral`` or ""), ``part`` (``upper``, ``middle``, ``lower`` or "") and ``lobe`` (an
    organ key, or "")."""

    organ: str = ""
    side: str = ""
    part: str = ""
    lobe: str = ""


def _zone(location: str) -> tuple[str, str]:
    """(part, lobe) of a location as ``labeling.rules.attributes.location`` writes it."""
    loc = location.lower()
    if "lingula" in loc:
        return "middle", "left_upper_lobe"
    m = re.match(r"^(right|left)?\s*(upper|middle|lower) lobe$", loc)
    if m:
        side = m.group(1) or ("right" if m.group(2) == "middle" else "")
        return m.group(2), LOBES.get((side, m.group(2)), "")
    if re.search(r"\b(apex|upper lung|upper zone|upper lobes)\b", loc):
        return "upper", ""
    if re.search(r"\b(base|lower lung|lower zone|costophrenic)\b", loc):
        return "lower", ""
    if re.search(r"\bmid lung\b", loc):
        return "middle", ""
    return "", ""


def finding_place(
    *, code: str, text: str, laterality: str = "", location: str = "", region: str = "", schema: str = ""
) -> Place:
    """The place of a finding from its code, laterality, location and (for a manual finding, which has
    none) its sentence; ``region``: a ReXGroundingCT finding proposal's region letter."""
    location = location or text_location(text)
    side = laterality if laterality in ("right", "left", "bilateral") else ""
    if not side:
        side = next((s for s in ("bilateral", *SIDES) if location.lower().startswith(s)), "")
    if not side and "lingula" in location.lower():
        side = "left"
    if not side:
        side = text_laterality(text)
    part, lobe = _zone(location)
    if lobe and side not in ("", lobe.split("_")[0]):
        lobe = ""  # "left ... right upper lobe": the clause's side wins
    organ = ""
    if region:
        organ = REX_REGION_ORGANS.get(region, "")
    elif code in CHEXPERT_ORGANS:
        organ = CHEXPERT_ORGANS[code]
    elif REX_CATEGORY.match(code or "") or (schema == "rexgroundingct" and code):
        organ = "lungs"
    elif organ_of(code):
        organ = organ_of(code)
    if not organ and (lobe or part or re.search(r"\b(lungs?|lobes?|pleura\w*|pulmonary)\b", text, re.I)):
        organ = "lungs"
    return Place(organ=organ, side=side, part=part, lobe=lobe)


def place_of(finding, finding_proposal=None) -> Place:
    """``finding_place`` of a ``Finding`` (its finding proposal's region letter on a ReXGroundingCT one)."""
    fp = finding_proposal if finding_proposal is not None else finding.finding_proposal
    extra = (fp.extra if fp is not None else {}) or {}
    schema = finding.project.label_schema
    return finding_place(
        code=finding.code,
        text=finding.text,
        laterality=finding.laterality,
        location=finding.location,
        region=str(extra.get("region", "")) if schema == "rexgroundingct" else "",
        schema=schema,
    )


# --- proposals as the matcher sees them ---------------------------------------------------------------


@dataclass
class Candidate:
    """A region proposal of the scan, classified: ``organ`` for anatomy, else a lesion with ``codes``."""

    proposal: RegionProposal
    organ: str = ""
    codes: frozenset[str] = frozenset()

    @property
    def id(self) -> int:
        return self.proposal.pk


def candidates_of(proposals) -> list[Candidate]:
    """The usable proposals (not superseded by a later run of their generator), classified."""
    out = []
    for p in proposals:
        if (p.params or {}).get("superseded"):
            continue
        if p.source in LESION_SOURCES:
            out.append(Candidate(p, codes=label_codes(p.label) | label_codes(p.code)))
            continue
        anatomy_model = p.source == "model" and p.model_version_id and _model_task(p) == "anatomy"
        organ = organ_of(p.label) or organ_of(p.code)
        if not organ and (p.source == "lungs" or anatomy_model):
            organ = norm(p.label or p.code).replace(" ", "_") or "anatomy"
        out.append(Candidate(p, organ=organ, codes=label_codes(p.label) | label_codes(p.code)))
    return out


def _model_task(p: RegionProposal) -> str:
    version = getattr(p, "model_version", None)
    return getattr(version, "task", "") or ""


def context_of(place: Place, candidates: list[Candidate]) -> list[Candidate]:
    """The anatomy proposals of ``place``, most specific first (module docstring). Newest of each organ."""
    anatomy: dict[str, Candidate] = {}
    for c in sorted(candidates, key=lambda c: -c.id):
        if c.organ and c.organ not in anatomy:
            anatomy[c.organ] = c
    keys: list[str] = []
    if place.organ == "lungs":
        sides = [place.side] if place.side in SIDES else list(SIDES)
        if place.lobe:
            keys.append(place.lobe)
        elif place.part:
            keys += [LOBES[(s, place.part)] for s in sides if (s, place.part) in LOBES]
        keys += [f"{s}_lung" for s in sides]
        keys.append("lungs")
    elif place.organ == "heart":
        keys += ["heart"]
    elif place.organ == "mediastinum":
        keys += ["mediastinum", "heart"]
    found = [anatomy[k] for k in dict.fromkeys(keys) if k in anatomy]
    if place.organ == "lungs" and any(c.organ.endswith("_lung") for c in found):
        found = [c for c in found if c.organ != "lungs"]
    return found
