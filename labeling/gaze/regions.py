"""Region sets of the gaze labels: today's anatomy masks, or FG-CXR's seven regions (pure: numpy).

A gaze run labels a recording per *region*; ``GazeParams.regions`` picks the set:

- ``anatomy`` (the default): one region per anatomy mask the recording has, by the mask's name
  (``left_lung``, ``right_lung``, ``mediastinum``, ``heart`` ...), sentences matched by
  ``labeling.gaze.anatomy.assign``. The masks are the recording's stored masks (the dataset's PNGs or
  uploaded ones); an anatomy model's mask fills in an organ that has no stored mask.
- ``fgcxr``: the seven regions of FG-CXR (``fgcxr/constants.py`` of UARK-AICV/FG-CXR, in that order):
  ``heart, left, upper left, lower left, right, upper right, lower right``, built from whatever anatomy
  the recording has (``fgcxr_masks``) and matched by ``fgcxr_regions_named``.

Left and right are the patient's, as in the sentences: ``left`` is the patient's left lung, on the
image's right in a PA radiograph (``labeling.gaze.anatomy``'s note).

Anatomy sources, best first for each organ (``ORGAN_SOURCES``):

1. a stored mask of the organ's name (``left_lung``, ``right_lung``, ``heart``);
2. an anatomy model's mask, passed as ``model/<organ>`` (``labeling.gaze.sources`` reads the newest
   proposals of a registered model of task ``anatomy`` on the recording's scan);
3. EGD-CXR's anatomical bounding box (``bounding_boxes.csv``: ``dicom_id, bbox_name, x1, x2, y1, y2`` in
   that column order; stored at import as ``{"name", "box": [x1, y1, x2, y2]}``): ``left lung`` /
   ``right lung`` (else the union of that side's upper, mid and lower lung zone boxes), ``cardiac
   silhouette`` for the heart. The bounds are inclusive, as the dataset's own ``validation.py`` counts a
   fixation inside a box when ``x1 <= x <= x2 and y1 <= y <= y2``;
4. for the heart only, the mediastinum mask (EGD-CXR's ``mediastanum.png`` holds the heart).

Upper and lower: FG-CXR's published code (``fgcxr/prepare.py``, ``fgcxr/data.py`` and the historical
``heatmap_predictor`` data code) reads region heatmaps that were already made and holds no code that cuts
a lung; the cut is therefore this module's: each lung mask is cut by the horizontal line halfway down its
own vertical extent (``split="extent"``: halfway between the top edge of its first row and the bottom
edge of its last; a row whose centre lies on the line goes to the lower half), or where half of its
pixels lie above (``split="area"``, rows counted as evenly filled). Upper and lower are disjoint and
their union is the lung.

What a recording lacks is said, never skipped: a region that cannot be built is named in the problems
with the sources that were looked for.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

from labeling.gaze import anatomy as an

REGION_SETS = ("anatomy", "fgcxr")
FGCXR_REGIONS = ("heart", "left", "upper left", "lower left", "right", "upper right", "lower right")
TOP_REGIONS = ("heart", "left", "right")  # the non-overlapping ones a sentence's gaze can pick
SPLITS = ("extent", "area")
ORGANS = ("left_lung", "right_lung", "heart")
MODEL_PREFIX = "model/"

# EGD-CXR bounding box names (lower case, "_"/"-" as spaces) -> organ; zone boxes make a lung without one.
BOX_ORGANS = {
    "left lung": "left_lung",
    "right lung": "right_lung",
    "cardiac silhouette": "heart",
    "heart": "heart",
}
BOX_ZONES = {
    "left_lung": ("left upper lung zone", "left mid lung zone", "left lower lung zone"),
    "right_lung": ("right upper lung zone", "right mid lung zone", "right lower lung zone"),
}
# Label names an anatomy model may use for an organ (normalised: lower case, "_"/"-" as spaces).
ORGAN_LABELS = {
    "left_lung": {"left lung", "lung left", "l lung"},
    "right_lung": {"right lung", "lung right", "r lung"},
    "heart": {"heart", "cardiac silhouette", "cardiac"},
}


def _norm(name: str) -> str:
    return " ".join(re.sub(r"[_\-]+", " ", str(name).lower()).split())


def organ_of(label: str) -> str:
    """The organ (``left_lung``, ``right_lung``, ``heart``) an anatomy model's label names, or ``""``."""
    label = _norm(label)
    return next((organ for organ, names in ORGAN_LABELS.items() if label in names), "")


# ------------------------------------------------------------------------------------------ masks


def box_mask(box: Iterable[float], width: int, height: int) -> np.ndarray:
    """The pixels of an ``[x1, y1, x2, y2]`` box with inclusive bounds (EGD-CXR's reading), clipped to the
    image; a box given with its corners swapped is read the right way round."""
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, x2 = sorted((x1, x2))
    y1, y2 = sorted((y1, y2))
    mask = np.zeros((height, width), dtype=bool)
    c0, c1 = max(int(np.ceil(x1)), 0), min(int(np.floor(x2)), width - 1)
    r0, r1 = max(int(np.ceil(y1)), 0), min(int(np.floor(y2)), height - 1)
    if c0 <= c1 and r0 <= r1:
        mask[r0 : r1 + 1, c0 : c1 + 1] = True
    return mask


def split_upper_lower(mask: np.ndarray, how: str = "extent") -> tuple[np.ndarray, np.ndarray]:
    """``(upper, lower)`` halves of a mask (module docstring): disjoint, their union the mask."""
    if how not in SPLITS:
        raise ValueError(f"split: {how!r} is not one of {', '.join(SPLITS)}")
    counts = mask.sum(axis=1)
    rows = np.flatnonzero(counts)
    upper_rows = np.zeros(mask.shape[0], dtype=bool)
    if rows.size:
        if how == "extent":
            # row r's centre r + 0.5 above the line (r0 + r1 + 1) / 2  <=>  2 r < r0 + r1
            upper_rows[: rows[0] + (rows[-1] - rows[0] + 1) // 2] = True
        else:
            half = counts.sum() / 2.0
            before = np.concatenate([[0], np.cumsum(counts)[:-1]])
            c = int(np.flatnonzero(before + counts >= half)[0])  # the row holding the cut
            cut = c + (half - before[c]) / counts[c]  # rows spread evenly over their height
            upper_rows[:c] = True
            upper_rows[c] = c + 0.5 < cut
    upper = mask & upper_rows[:, None]
    return upper, mask & ~upper


def _box_of(
    boxes: list[dict], names: Iterable[str], width: int, height: int
) -> tuple[np.ndarray | None, str]:
    wanted = set(names)
    found = [b for b in boxes if _norm(b.get("name", "")) in wanted]
    if not found:
        return None, ""
    mask = np.logical_or.reduce([box_mask(b["box"], width, height) for b in found])
    return mask, ", ".join(sorted({repr(_norm(b["name"])) for b in found}))


def organ_masks(
    masks: dict[str, np.ndarray], boxes: list[dict] | None, width: int, height: int
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Each organ's mask from the best source that has it (module docstring) and where it came from."""
    boxes = list(boxes or [])
    out: dict[str, np.ndarray] = {}
    source: dict[str, str] = {}
    for organ in ORGANS:
        if organ in masks:
            out[organ], source[organ] = masks[organ], f"mask {organ}"
        elif MODEL_PREFIX + organ in masks:
            out[organ], source[organ] = masks[MODEL_PREFIX + organ], f"anatomy model {organ}"
        else:
            names = [n for n, o in BOX_ORGANS.items() if o == organ]
            mask, which = _box_of(boxes, names, width, height)
            if mask is None and organ in BOX_ZONES:
                mask, which = _box_of(boxes, BOX_ZONES[organ], width, height)
            if mask is not None and mask.any():
                out[organ], source[organ] = mask, f"bounding box {which}"
            elif organ == "heart" and "mediastinum" in masks:
                out[organ], source[organ] = masks["mediastinum"], "mask mediastinum"
    return out, source


def fgcxr_masks(
    masks: dict[str, np.ndarray], boxes: list[dict] | None, width: int, height: int, *, split: str = "extent"
) -> tuple[dict[str, np.ndarray], list[str]]:
    """FG-CXR's regions (in ``FGCXR_REGIONS`` order) that the recording's anatomy allows, and what is
    weak or missing, as problems."""
    organs, source = organ_masks(masks, boxes, width, height)
    out: dict[str, np.ndarray] = {}
    problems: list[str] = []
    if not organs:
        return {}, [
            "regions fgcxr: the recording has no anatomy (no left_lung, right_lung or heart mask, no "
            "anatomy model's mask on its scan, no EGD-CXR bounding boxes): no region records; upload "
            "masks or run an anatomy model on its scan"
        ]
    for side in ("left", "right"):
        lung = organs.get(f"{side}_lung")
        if lung is None:
            continue
        upper, lower = split_upper_lower(lung, split)
        out[side], out[f"upper {side}"], out[f"lower {side}"] = lung, upper, lower
    if "heart" in organs:
        out["heart"] = organs["heart"]
    missing = [r for r in FGCXR_REGIONS if r not in out]
    if missing:
        looked = {
            "heart": "heart or mediastinum mask, anatomy model heart, 'cardiac silhouette' box",
            "left": "left_lung mask, anatomy model left_lung, 'left lung' or left lung zone boxes",
            "right": "right_lung mask, anatomy model right_lung, 'right lung' or right lung zone boxes",
        }
        lacking = [r for r in TOP_REGIONS if r in missing]
        problems.append(
            f"regions fgcxr: no {', '.join(missing)} ("
            + "; ".join(f"{r}: no {looked[r]}" for r in lacking)
            + ")"
        )
    weak = [f"{organ} from {how}" for organ, how in source.items() if how != f"mask {organ}"]
    if weak:
        problems.append(f"regions fgcxr: {'; '.join(weak)} (coarser than an organ mask)")
    return {r: out[r] for r in FGCXR_REGIONS if r in out}, problems


def region_masks(
    region_set: str,
    masks: dict[str, np.ndarray],
    boxes: list[dict] | None,
    width: int,
    height: int,
    *,
    split: str = "extent",
) -> tuple[dict[str, np.ndarray], list[str]]:
    """The masks a run labels per region (module docstring) and the problems of building them."""
    if region_set == "fgcxr":
        return fgcxr_masks(masks, boxes, width, height, split=split)
    if region_set != "anatomy":
        raise ValueError(f"regions: {region_set!r} is not one of {', '.join(REGION_SETS)}")
    out = {name: mask for name, mask in masks.items() if not name.startswith(MODEL_PREFIX)}
    for name, mask in masks.items():
        if name.startswith(MODEL_PREFIX) and name[len(MODEL_PREFIX) :] not in out:
            out[name[len(MODEL_PREFIX) :]] = mask
    if not out:
        return {}, [
            "anatomy: the recording has no anatomy masks (none stored, no anatomy model's mask on its "
            "scan): no anatomy records"
        ]
    return out, []


# ------------------------------------------------------------------------------------------ sentences

# Words of a sentence (lower case; hyphens and slashes split words).
_WORD = re.compile(r"[a-z]+")
_CLAUSE = re.compile(r"[,;:()]|\b(?:and|or|with|but|while|without|as well as|whereas)\b")
_HEART = re.compile(
    r"\b(?:heart|cardiac|cardio\w*|cardiomegaly|pericardi\w*|mediastin\w*|cardiomediastinal|aort\w*|knob|"
    r"ventric\w*|atri(?:um|al|a))\b"
)
# After a side word, these make it not a lung's side ("left heart border", "right ij catheter").
_NOT_LUNG = {
    "heart", "cardiac", "ventricle", "ventricular", "atrium", "atrial", "border", "ij", "jugular",
    "subclavian", "picc", "clavicle", "clavicular", "shoulder", "humerus", "humeral", "arm", "neck",
    "breast", "mastectomy", "axilla", "axillary", "scapula", "quadrant", "abdomen", "kidney", "femoral",
    "brachiocephalic", "internal", "external", "extremity",
}  # fmt: skip
_UPPER = {"upper", "apex", "apical", "apices", "apicolateral", "superior", "suprahilar"}
_LOWER = {
    "lower", "base", "bases", "basilar", "basal", "basally", "inferior", "infrahilar", "costophrenic",
    "hemidiaphragm", "hemidiaphragms", "diaphragm", "retrocardiac", "subpulmonic",
}  # fmt: skip
_MID = {"mid", "middle", "midlung", "lingula", "lingular", "hilum", "hilar", "perihilar", "hila"}
# Zone words that speak of a lung by themselves; "upper"/"lower"/"superior"/"inferior" need a lung noun
# or a side near them ("lower thoracic spine" is no lung).
_ZONE_ITSELF = (_UPPER | _LOWER | _MID) - {"upper", "lower", "superior", "inferior", "mid", "middle"}
_LUNG_NOUNS = {
    "lung", "lungs", "lobe", "lobes", "zone", "zones", "field", "fields", "hemithoraces", "pleural",
    "pleura", "lungfield", "lungfields", "pulmonary",
} | _ZONE_ITSELF  # fmt: skip
_SIDED_NOUNS = {"chest", "hemithorax", "side", "sided"}  # lung nouns only with a side ("left chest")
_LEFT_ITSELF = {"retrocardiac", "lingula", "lingular"}
_BOTH = {"bilateral", "bilaterally", "both", "bibasilar", "bibasal", "biapical", "hemithoraces"}
# A finding of the lungs as a whole, named with no side ("pulmonary edema", "lung volumes").
_DIFFUSE = re.compile(
    r"\b(?:pulmonary\s+(?:vascular|vasculature|edema|congestion)|vascular\s+congestion|interstitial|"
    r"emphysema\w*|hyperinflat\w*|hyperexpan\w*|lung\s+volumes?)\b"
)


def _clause_regions(words: list[str], inherited: set[str]) -> tuple[set[str], set[str], set[str]]:
    """(sides, zones, lung_words) of one clause: sides ``left``/``right``, zones ``upper``/``lower``."""
    sides: set[str] = set()
    side_at: list[int] = []
    for i, w in enumerate(words):
        if w in ("left", "right"):
            after = words[i + 1 : i + 4]
            if w == "left" and after[:1] in (["in"], ["unchanged"], ["intact"]):
                continue  # "left in place"
            if any(a in _NOT_LUNG for a in after[:2]):
                continue
            sides.add(w)
            side_at.append(i)
        elif w in _BOTH or w.startswith("bibasil") or w.startswith("biapic"):
            sides.update(("left", "right"))
            side_at.append(i)
        elif w in _LEFT_ITSELF:
            side_at.append(i)
    lung_at = [i for i, w in enumerate(words) if w in _LUNG_NOUNS or w in _SIDED_NOUNS]
    zones: set[str] = set()
    for i, w in enumerate(words):
        near = any(abs(i - j) <= 3 for j in lung_at + side_at if j != i)
        if w in _UPPER and (w in _ZONE_ITSELF or near):
            zones.add("upper")
        elif (w in _LOWER and (w in _ZONE_ITSELF or near)) or w.startswith("bibasil"):
            zones.add("lower")
        elif w.startswith("biapic"):
            zones.add("upper")
    if set(words) & _LEFT_ITSELF and not sides:
        sides.add("left")  # behind the heart, the lingula: the left lung
    lungish = set(words) & (_LUNG_NOUNS | _BOTH)
    if not sides and (zones or lungish):
        if inherited and zones and words[0] in _UPPER | _LOWER | _MID:
            sides = set(inherited)  # "left upper and lower lobes": the side carries over
        else:
            sides = {"left", "right"}
    return sides, zones, lungish


def fgcxr_regions_named(text: str) -> list[str]:
    """The FG-CXR regions a sentence names (``FGCXR_REGIONS`` order), from its words alone:

    - the heart: heart, cardiac, cardiomegaly, pericardial, (cardio)mediastinal, aorta/aortic knob;
    - a side: ``left``/``right`` (not when a heart part or a line follows: "left heart border", "right
      IJ catheter"), both sides for ``bilateral(ly)``, ``both``, ``bi-`` words, and a lung noun named
      with no side ("the lungs", "lung volumes", "the bases", "pleural effusion" without a side);
    - a zone: upper (upper, apex, apical, apices, superior) or lower (lower, base(s), basilar, basal,
      costophrenic, hemidiaphragm, retrocardiac, infrahilar); mid zones and the hila name the side only;
      retrocardiac and the lingula name the left lung (retrocardiac its lower half). A zone with a side
      names ``"<zone> <side>"`` (``"upper left"``), in either word order ("left upper lobe", "upper
      left lung"); a side alone names the side (``"left"``); a zone alone, the zone of both sides ("the
      bases", "upper lobes"), except that a clause that starts with a zone word carries on the side of
      the clause before it ("left upper and lower lobes");
    - diffuse lung findings without a side (pulmonary edema, vascular congestion, interstitial,
      emphysema, hyperinflation, lung volumes) name both lungs.

    Negation does not matter ("no left effusion" is about the left lung). ``[]``: no region named."""
    low = text.lower().replace("-", " ").replace("/", " ")
    named: set[str] = set()
    if _HEART.search(low):
        named.add("heart")
    inherited: set[str] = set()
    pieces = _CLAUSE.split(low)
    for piece in pieces:
        words = _WORD.findall(piece)
        if not words:
            continue
        sides, zones, _ = _clause_regions(words, inherited)
        for side in sides:
            if zones:
                named.update(f"{zone} {side}" for zone in zones)
            else:
                named.add(side)
        inherited = sides if sides and len(sides) == 1 else set()
    if (_DIFFUSE.search(low) or "cardiopulmonary" in low) and not (named - {"heart"}):
        named.update(("left", "right"))
    return [r for r in FGCXR_REGIONS if r in named]


def assign(
    region_set: str, text: str, shares: dict[str, float], *, min_share: float
) -> tuple[list[str], str]:
    """The regions a sentence belongs to and why (``"words"``, ``"gaze"`` or ``""``).

    ``anatomy``: ``labeling.gaze.anatomy.assign``. ``fgcxr``: the regions it names that the recording has
    (``fgcxr_regions_named``); a sentence naming none goes to the one of ``heart``, ``left``, ``right``
    holding the largest share of its gaze time when that share is at least ``min_share`` (the halves are
    inside their lung, so they are not candidates of their own)."""
    if region_set != "fgcxr":
        return an.assign(text, shares, min_share=min_share)
    named = [r for r in fgcxr_regions_named(text) if r in shares]
    if named:
        return named, "words"
    candidates = [r for r in TOP_REGIONS if r in shares]
    if candidates:
        best = max(candidates, key=lambda r: shares[r])
        if shares[best] >= min_share:
            return [best], "gaze"
    return [], ""


def finding_regions(finding: dict, sentence: dict, masks: dict[str, np.ndarray]) -> list[str]:
    """The FG-CXR regions a finding of a sentence lies in (only regions that exist; ``[]``: unknown):
    the sentence's named regions on the finding's side (its laterality), else that side; both lungs'
    named regions or both lungs for a bilateral finding; the heart for a heart finding; else the regions
    its sentence names."""
    from labeling.gaze.labels import HEART_CODES

    side = finding.get("laterality", "")
    by_words = list(sentence.get("anatomies", [])) if sentence.get("assigned_by") == "words" else []
    wanted: list[str] = []
    if side in ("left", "right"):
        wanted = [r for r in by_words if r.endswith(side)] or [side]
    elif side == "bilateral":
        wanted = [r for r in by_words if r != "heart"] or ["left", "right"]
    elif finding.get("code") in HEART_CODES:
        wanted = ["heart"]
    else:
        wanted = by_words
    return [r for r in wanted if r in masks]
