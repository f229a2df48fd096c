"""Which region proposals a finding starts from and which it shows as context (issue 16 item 3).

A finding's *start* is the region proposal whose mask becomes its version 1 (what the annotator corrects);
its *context* are the anatomy proposals of the place it is in, which the review screen shows as layers
beside the finding's own mask. The start is the first rule that finds one:

1. ``linked``: a proposal made for the finding's finding proposal (gaze sentences name theirs).
2. ``seed``: a ``pet-suv`` lesion grown from the SUVmax and slice the finding's sentence states.
3. ``text``: a text-grounded proposal (a grounding model's) of the finding's own sentence.
4. ``code``: a proposal of the finding's code (an anatomy proposal too: its code was set to the
   finding's on purpose), or a lesion label that names it (``LABEL_CODES``: a
   ``nodule`` label for a ReXGroundingCT ``2d`` or CheXpert ``Lung Lesion`` finding, ``pleural_effusion``
   for ``2e`` / ``Pleural Effusion`` ...).
5. ``organ``: the finding is an organ's size (``Cardiomegaly``: the heart): that organ's anatomy proposal.
6. ``overlap``: a lesion proposal (a label that names no other kind of finding) overlapping the finding's
   context, e.g. a model's ``lesion`` mask inside the right lung for "mass in the right upper lobe".

*Anatomy* proposals start a finding only by its exact code (4) or as the organ it is about (5), never by
a label or overlap: the ``lungs`` generator's, an anatomy model's
(``ModelVersion.task == "anatomy"``), and any other model's proposal whose label names an organ
(``organ_of``: left and right lung, the five lobes in their usual spellings (``lung_upper_lobe_right``,
``right upper lobe``), heart, mediastinum, trachea and airways, aorta, ...). Gaze and PET proposals are
always findings' regions.

*Place*: the side (right, left, bilateral) from the finding's laterality or location, else from its
sentence; the zone (upper, middle, lower; apex = upper, base = lower; the lingula is the left upper lobe's,
in the middle) from its location. The organ it lies in: the lungs for ReXGroundingCT lung and pleura
findings (region ``L`` or a ``1x``/``2x`` category) and CheXpert's lung observations, the heart for
cardiac ones (``CHEXPERT_ORGANS``, ``REX_REGION_ORGANS``). *Context*: the anatomy proposals of that
place: the named lobe where a model proposed lobes, and the side's lung; both lungs when the side is
bilateral or not said.

With a side and the two lungs to tell it by, the candidates of rules 3, 4 and 6 are cut to their
connected components on that side (a component is on the right when its centroid, in mm, lies nearer the
right lung's centroid along the line between the two lungs' centroids, so it works without knowing the
image's orientation, on a CT and on a radiograph; with one lung only, the components that touch its
bounding box); with a zone, to the components in that zone (the centroid's height within that lung's
extent: upper, middle, lower third; superior is the affine's +z on a CT, the image's top on a radiograph)
when any lies there (for rule 6 always: a lesion that names no finding must lie in the finding's zone).
A candidate with no component left is not the finding's. A start cut to some of its components is stored
as its own mask; the proposal stays its source (``Annotation.region_proposal``).

Everything here reads; ``annotation.services.findings_from_proposals`` stores. Masks are read once per
call (``Matcher`` caches them per proposal, cropped to the proposal's box for the component analysis).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from labeling.models import RegionProposal
from labeling.rules.attributes import laterality as text_laterality
from labeling.rules.attributes import location as text_location
from studies.masks import mask_read as read_mask  # the codec: (X, Y[, Z])

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
_REX_CATEGORY = re.compile(r"^[12][a-h]$")


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
    elif _REX_CATEGORY.match(code or "") or (schema == "rexgroundingct" and code):
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


# --- masks and components -----------------------------------------------------------------------------


@dataclass
class Component:
    index: int  # label number in the candidate's component image (1..n)
    size: int  # voxels
    centroid: np.ndarray  # mm (3,)
    height: float  # along the superior axis, mm
    lo: np.ndarray  # bounding box in voxels, inclusive
    hi: np.ndarray


@dataclass
class Analysed:
    """A candidate's mask split into connected components (within the proposal's box)."""

    labels: np.ndarray  # int32 component image of the crop
    offset: tuple[int, ...]
    components: list[Component]


@dataclass
class Start:
    """A finding's start: the proposal, the rule that chose it, and the mask when it was cut to some of
    the proposal's components (``None``: the proposal's mask as it is)."""

    candidate: Candidate
    rule: str
    mask: np.ndarray | None = None
    kept: int = 0  # components kept (when cut)
    of: int = 0  # components of the proposal


@dataclass
class Matched:
    start: Start | None
    context: list[Candidate]
    place: Place

    def summary(self) -> dict[str, Any]:
        """What the finding's ``created`` history event records about it."""
        out: dict[str, Any] = {"context": [c.id for c in self.context], "place": self.place.__dict__}
        if self.start is not None:
            out["start"] = {"proposal": self.start.candidate.id, "rule": self.start.rule}
            if self.start.mask is not None:
                out["start"]["components"] = [self.start.kept, self.start.of]
        return out


@dataclass
class ScanGeometry:
    affine: np.ndarray
    ndim: int
    shape: tuple[int, ...]
    lungs: dict[str, tuple[np.ndarray, float, float, np.ndarray, np.ndarray]] = field(default_factory=dict)
    # side -> (centroid mm, lowest and highest height mm, bbox lo, bbox hi in voxels)


class Matcher:
    """Matches findings to the proposals of their scans; reads each mask at most once."""

    def __init__(self) -> None:
        self._masks: dict[int, np.ndarray] = {}
        self._analysed: dict[int, Analysed] = {}
        self._geometry: dict[int, ScanGeometry] = {}
        self._candidates: dict[int, list[Candidate]] = {}

    # -- reading

    def candidates(self, scan) -> list[Candidate]:
        if scan.pk not in self._candidates:
            rows = RegionProposal.objects.filter(scan=scan).select_related("model_version").order_by("id")
            self._candidates[scan.pk] = candidates_of(rows)
        return self._candidates[scan.pk]

    def mask(self, c: Candidate) -> np.ndarray:
        if c.id not in self._masks:
            self._masks[c.id] = read_mask(c.proposal.mask.name)
        return self._masks[c.id]

    def _world(self, geometry: ScanGeometry, voxels: np.ndarray) -> np.ndarray:
        """(N, ndim) voxel coordinates -> (N, 3) mm by the scan's affine (a radiograph's: its 2D part)."""
        a = geometry.affine if geometry.affine.shape == (4, 4) else np.eye(4)
        out = np.empty((len(voxels), 3))
        out[:] = a[:3, 3]
        for k in range(voxels.shape[1]):  # multiply-adds: a matrix product of (N, 4) by (4, 4) was slower
            out += voxels[:, k, None].astype(np.float64) * a[:3, k]
        return out

    def _height(self, geometry: ScanGeometry, voxels: np.ndarray) -> np.ndarray:
        if geometry.ndim == 2:
            return -voxels[:, 1].astype(np.float64)  # the top of a radiograph is superior
        return self._world(geometry, voxels)[:, 2]

    def geometry(self, scan) -> ScanGeometry:
        if scan.pk in self._geometry:
            return self._geometry[scan.pk]
        affine = np.asarray(scan.affine, dtype=np.float64) if scan.affine else np.eye(4)
        g = ScanGeometry(affine=affine, ndim=int(scan.ndim), shape=tuple(int(s) for s in scan.shape))
        by_organ: dict[str, list[Candidate]] = {}
        for c in sorted(self.candidates(scan), key=lambda c: -c.id):
            if c.organ in LUNG_KEYS:
                by_organ.setdefault(c.organ, []).append(c)
        for side in SIDES:
            parts = by_organ.get(f"{side}_lung", [])[:1] or [
                by_organ[k][0] for (s, _), k in LOBES.items() if s == side and k in by_organ
            ]
            if not parts:
                continue
            samples, lows, highs = [], [], []
            for c in parts:
                m = self.mask(c)
                if m.shape != g.shape:
                    continue
                lo, hi = _box(c, m)
                crop = m[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
                # Centroid and extent from a grid of at most ~64 samples per axis (a 512x512x300 lung:
                # ~0.1 s, not ~10 s); the bounding box is the proposal's own.
                stride = np.array([max(1, n // 64) for n in crop.shape])
                found = np.argwhere(crop[tuple(slice(None, None, int(k)) for k in stride)])
                if len(found):
                    samples.append(found * stride + lo)
                    lows.append(np.asarray(lo))
                    highs.append(np.asarray(hi) - 1)
            if not samples:
                continue
            sample = np.concatenate(samples)
            heights = self._height(g, sample)
            g.lungs[side] = (
                self._world(g, sample).mean(axis=0),
                float(heights.min()),
                float(heights.max()),
                np.min(lows, axis=0),
                np.max(highs, axis=0),
            )
        self._geometry[scan.pk] = g
        return g

    def analysed(self, c: Candidate, g: ScanGeometry) -> Analysed | None:
        if c.id in self._analysed:
            return self._analysed[c.id]
        from scipy import ndimage

        mask = self.mask(c)
        if mask.shape != g.shape:
            return None
        lo, hi = _box(c, mask)
        crop = mask[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
        labels, count = ndimage.label(crop)
        components = []
        for index, found in enumerate(ndimage.find_objects(labels), start=1):
            if found is None:
                continue
            local = np.argwhere(labels[found] == index) + [s.start for s in found]
            voxels = local + lo
            world = self._world(g, voxels)
            heights = self._height(g, voxels)
            components.append(
                Component(
                    index=index,
                    size=len(voxels),
                    centroid=world.mean(axis=0),
                    height=float(heights.mean()),
                    lo=voxels.min(axis=0),
                    hi=voxels.max(axis=0),
                )
            )
        out = Analysed(labels=labels.astype(np.int32), offset=tuple(lo), components=components)
        self._analysed[c.id] = out
        return out

    # -- deciding

    def _on_side(self, comp: Component, side: str, g: ScanGeometry) -> bool:
        if side not in SIDES:
            return True
        if "right" in g.lungs and "left" in g.lungs:
            right, left = g.lungs["right"][0], g.lungs["left"][0]
            axis = left - right
            t = float(np.dot(comp.centroid - right, axis) / max(float(np.dot(axis, axis)), 1e-9))
            return t < 0.5 if side == "right" else t >= 0.5
        if side in g.lungs:  # one lung only: components touching its bounding box
            lo, hi = g.lungs[side][3], g.lungs[side][4]
            return bool(np.all(comp.hi >= lo) and np.all(comp.lo <= hi))
        return True  # nothing to tell the side by

    def _in_zone(self, comp: Component, place: Place, g: ScanGeometry) -> bool:
        sides = [place.side] if place.side in SIDES else list(SIDES)
        for side in sides:
            if side not in g.lungs:
                continue
            low, high = g.lungs[side][1], g.lungs[side][2]
            if high <= low:
                continue
            frac = (comp.height - low) / (high - low)
            if {"upper": frac >= 2 / 3, "middle": 1 / 3 <= frac < 2 / 3, "lower": frac < 1 / 3}[place.part]:
                return True
        return False

    def _kept(
        self, c: Candidate, place: Place, g: ScanGeometry, context_mask: np.ndarray | None
    ) -> tuple[list[int], int] | None:
        """The component numbers of ``c`` that fit the place, and how many it has; None when none fits.
        With ``context_mask`` (rule ``overlap``: a lesion that names no finding) they must touch it and lie
        in the zone; otherwise the zone is a preference."""
        analysed = self.analysed(c, g)
        if analysed is None or not analysed.components:
            return None
        comps = [k for k in analysed.components if self._on_side(k, place.side, g)]
        if context_mask is not None:
            crop = context_mask[
                tuple(slice(o, o + s) for o, s in zip(analysed.offset, analysed.labels.shape, strict=True))
            ]
            touching = set(np.unique(analysed.labels[crop & (analysed.labels > 0)]).tolist())
            comps = [k for k in comps if k.index in touching]
        if place.part and g.lungs:
            zoned = [k for k in comps if self._in_zone(k, place, g)]
            comps = zoned if context_mask is not None else zoned or comps
        if not comps:
            return None
        return [k.index for k in comps], len(analysed.components)

    def _cut(self, c: Candidate, indexes: list[int], g: ScanGeometry) -> np.ndarray:
        analysed = self._analysed[c.id]
        out = np.zeros(g.shape, bool)
        window = tuple(slice(o, o + s) for o, s in zip(analysed.offset, analysed.labels.shape, strict=True))
        out[window] = np.isin(analysed.labels, indexes)
        return out

    def _placed(
        self, pool: list[Candidate], rule: str, place: Place, g: ScanGeometry, context_mask=None
    ) -> Start | None:
        """The best candidate of ``pool`` that fits the place: the most confident, then the largest."""
        best: tuple[tuple, Start] | None = None
        for c in pool:
            if place.side in SIDES or place.part or context_mask is not None:
                fit = self._kept(c, place, g, context_mask)
                if fit is None:
                    continue
                indexes, total = fit
                start = Start(c, rule)
                if len(indexes) < total:
                    start = Start(c, rule, mask=self._cut(c, indexes, g), kept=len(indexes), of=total)
                sizes = {k.index: k.size for k in self._analysed[c.id].components}
                voxels = sum(sizes[i] for i in indexes)
            else:
                start, voxels = Start(c, rule), c.proposal.pixels
            key = (c.proposal.confidence or 0.0, voxels, c.id)
            if best is None or key > best[0]:
                best = (key, start)
        return best[1] if best else None

    def match(self, finding, *, finding_proposal=None) -> Matched:
        """The start and context of ``finding`` (a ``Finding``, saved or not) among its scan's proposals."""
        fp = finding_proposal if finding_proposal is not None else finding.finding_proposal
        extra = (fp.extra if fp is not None else {}) or {}
        place = place_of(finding, fp)
        if finding.scan is None:
            return Matched(None, [], place)
        candidates = self.candidates(finding.scan)
        context = context_of(place, candidates)
        lesions = [c for c in candidates if not c.organ]
        start = None
        if fp is not None:
            linked = [c for c in candidates if c.proposal.finding_id == fp.pk]
            if linked:
                start = Start(max(linked, key=lambda c: c.id), "linked")
            if start is None and finding.code == "suv" and "suvmax" in extra:
                seeded = [
                    c for c in lesions
                    if c.proposal.source == "pet-suv"
                    and _same(c.proposal.params.get("suvmax"), extra.get("suvmax"))
                    and _same(c.proposal.params.get("slice"), extra.get("slice"))
                ]  # fmt: skip
                if seeded:
                    start = Start(max(seeded, key=lambda c: c.id), "seed")
        if start is not None:
            return Matched(start, context, place)
        g = self.geometry(finding.scan)
        if start is None:
            sentence = norm(finding.text)
            texted = [c for c in lesions if c.proposal.text and norm(c.proposal.text) == sentence]
            texted = [c for c in texted if c.proposal.source != "pet-suv"]
            start = self._placed(texted, "text", place, g) if texted else None
        if start is None and finding.code:
            code = finding.code
            coded = [
                c for c in candidates  # an anatomy proposal too, when its code is the finding's
                if c.proposal.code == code
                or not c.organ and (norm(c.proposal.code) == norm(code) or code in c.codes)
            ]  # fmt: skip
            start = self._placed(coded, "code", place, g) if coded else None
        if start is None and finding.code in ORGAN_FINDINGS:
            organ = ORGAN_FINDINGS[finding.code]
            organs = [c for c in candidates if c.organ == organ]
            if organs:
                start = Start(max(organs, key=lambda c: c.id), "organ")
        if start is None and context:
            loose = [c for c in lesions if not c.codes or (finding.code and finding.code in c.codes)]
            loose = [c for c in loose if c.proposal.source != "gaze" and not c.proposal.finding_id]
            if loose:
                union = np.zeros(g.shape, bool)
                for c in context:
                    m = self.mask(c)
                    if m.shape == g.shape:
                        union |= m
                start = self._placed(loose, "overlap", place, g, context_mask=union)
        return Matched(start, context, place)


def _box(c: Candidate, mask: np.ndarray) -> tuple[list[int], list[int]]:
    """The proposal's box (min, max exclusive) on its mask's grid; the whole grid without one."""
    box, n = c.proposal.box or [], mask.ndim
    if len(box) != 2 * n:
        return [0] * n, list(mask.shape)
    lo = [max(0, int(box[i])) for i in range(n)]
    hi = [min(mask.shape[i], int(box[n + i])) for i in range(n)]
    return lo, hi


def _same(a, b) -> bool:
    try:
        return a is not None and b is not None and abs(float(a) - float(b)) < 1e-6
    except (TypeError, ValueError):
        return False


def finding_layers(finding, proposals) -> dict[str, Any]:
    """What the review screen shows beside a finding (no mask is read): ``layers``, the anatomy proposals
    of its scan (``context``: of the finding's place, shown at first), and ``start``, the proposal its
    version 1 came from and the rule that chose it (from its history), or None."""
    candidates = candidates_of(proposals)
    place = place_of(finding)
    context = [c.id for c in context_of(place, candidates)]
    layers = [
        {
            "id": c.id,
            "label": c.proposal.label or c.proposal.code,
            "organ": c.organ,
            "source": c.proposal.source,
            "context": c.id in context,
        }
        for c in candidates
        if c.organ
    ]
    layers.sort(key=lambda layer: context.index(layer["id"]) if layer["context"] else len(context))
    start = None
    for event in finding.history.filter(action__in=["created", "proposal_attached"]).order_by("-id"):
        if isinstance(event.after, dict) and isinstance(event.after.get("start"), dict):
            start = event.after["start"]
            break
    return {"layers": layers, "context": context, "start": start, "place": place.__dict__}
