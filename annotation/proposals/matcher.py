"""Which proposal a finding starts from (the rules, cut to the finding's side and zone) and the anatomy
layers the review screen shows (``annotation/proposals/__init__.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from annotation.proposals.names import LOBES, LUNG_KEYS, ORGAN_FINDINGS, SIDES, norm
from annotation.proposals.place import Candidate, Place, candidates_of, context_of, place_of
from labeling.models import RegionProposal
from studies.masks import mask_read as read_mask  # the codec: (X, Y[, Z])

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
