"""Gaze labels of one recording: heatmaps, sentences, anatomy records and region proposals (pure).

``gaze_labels(recording, masks, params, findings_of)`` does the whole per-recording computation without a
database, so the project job, the synchronous API, the CLI and the benchmark share it:

1. checks the recording (``recording_problems``): what makes it unusable raises ``Unusable`` with the
   reason; what only weakens it (fixations off the image or the shown rectangle, zero or negative
   durations, transcript problems) is listed in ``problems``;
2. the whole-recording heatmap;
3. sentences (``labeling.gaze.sentences``), each with its window (``[start - lead, end]``, its start
   capped at the previous sentence's by ``window_cap``: ``labeling.gaze.definitions``), the fixations in
   it, its gaze share per anatomy, its anatomies (``labeling.gaze.anatomy.assign``), the findings it
   states (``findings_of(text)``, e.g. the rules labeler) and its heatmap;
4. per anatomy mask: dwell and fixation count (the platform's or EGD-CXR's definition), time to first
   fixation, the sentences assigned to it (its
   caption), its heatmap (the fixations during those sentences; with no sentence, the fixations inside
   the mask) and its intense-focus mask (the platform's percentile or I-AI's threshold);
5. per present finding of a sentence: the intense focus of the sentence heatmap, restricted to the
   finding's anatomy when it is known and has a mask, as a mask and box proposal.

Every heatmap is described by a ``MapSpec`` (windows, an optional anatomy filter) so that the exact
float32 array can be computed again from the stored recording (``compute_map``, ~0.1 s); what is kept
is the definition, the map's peak and its fixation count (image files of every map would cost more to
encode than the maps cost to compute, and several MB per recording).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from labeling.gaze import anatomy as an
from labeling.gaze import regions as rg
from labeling.gaze.definitions import DWELL, FOCUS, WINDOW_CAPS, egd_dwell, focus_mask, sentence_windows
from labeling.gaze.heatmaps import EGD_FPOGV, METHODS, NORMALISE, heatmap
from labeling.gaze.presets import DEFAULT as DEFAULT_PRESET
from labeling.gaze.presets import preset_values
from labeling.gaze.sentences import transcript_sentences

HEART_CODES = {"Cardiomegaly", "Enlarged Cardiomediastinum"}
# The EGD-CXR map before issue 15: the valid fixations' x/y, the image's own size, image row 0 counted.
LEGACY_EGD = {"egd_fpogv": "valid", "egd_pad_even": False, "egd_keep_row0": True}
NOT_REGIONS = {"No Finding"}


class Unusable(ValueError):
    """The recording cannot give labels; the message says why (field first)."""


@dataclass
class GazeParams:
    """The definition a run labels with; ``labeling.gaze.presets`` names sets of these values after their
    source (``preset``; defaults: ``platform``), ``labeling.gaze.definitions`` and
    ``labeling.gaze.heatmaps`` define them.

    ``method``: ``auto`` (the recording's own: reflacx or egd), ``reflacx``, ``egd`` or ``custom`` (with
    ``sigma_px`` or ``sigma_deg``, ``duration_weighting``, ``normalise``); ``normalise``: of every map
    (None: the method's own), ``sentence_normalise``: of sentence maps (None: as ``normalise``);
    ``lead_s``: how long before a sentence's first word its gaze starts, ``window_cap``: ``none`` or
    ``previous_start`` (not before the previous sentence's start); ``focus``: ``percentile`` (with
    ``percentile``) or ``iai`` (with ``focus_resize``: None or the model input size, e.g. 224);
    ``min_share``: gaze share that assigns a sentence naming no anatomy; ``dwell``: ``platform`` or
    ``egd``; ``egd_fpogv``, ``egd_pad_even``, ``egd_keep_row0``: EGD-CXR map edge cases; ``regions``: the
    region set (``anatomy``: one per anatomy mask; ``fgcxr``: FG-CXR's seven regions,
    ``labeling.gaze.regions``)."""

    preset: str = DEFAULT_PRESET
    method: str = "auto"
    lead_s: float = 2.0
    window_cap: str = "none"
    percentile: float = 20.0
    focus: str = "percentile"
    focus_resize: int | None = None
    min_share: float = 0.5
    sigma_px: float | None = None
    sigma_deg: float | None = None
    duration_weighting: bool = True
    normalise: str | None = None
    sentence_normalise: str | None = None
    dwell: str = "platform"
    egd_fpogv: str = "all"
    egd_pad_even: bool = True
    egd_keep_row0: bool = False
    regions: str = "anatomy"

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> GazeParams:
        """The preset ``raw["preset"]`` names (default ``platform``) with the other values of ``raw`` over
        it; ValueError naming the field."""
        raw = dict(raw or {})
        known = set(cls.__dataclass_fields__)
        if unknown := sorted(set(raw) - known):
            raise ValueError(f"{unknown[0]}: unknown gaze parameter (known: {', '.join(sorted(known))})")
        name = raw.pop("preset", None) or DEFAULT_PRESET
        if not isinstance(name, str):
            raise ValueError(f"preset: expected a preset name, got {name!r}")
        params = cls(**{**preset_values(name), **raw, "preset": name})
        params.check()
        return params

    @classmethod
    def from_stored(cls, stored: dict[str, Any] | None) -> GazeParams:
        """A run's stored params; those stored before presets existed (no ``preset``) keep the EGD-CXR map
        they were made with (``LEGACY_EGD``), so their stored heatmaps compute again to the same arrays."""
        raw = dict(stored or {})
        if "preset" not in raw:
            raw = {**LEGACY_EGD, **raw}
        return cls.from_dict(raw)

    def check(self) -> None:
        preset_values(self.preset)
        if self.method not in ("auto", *METHODS):
            raise ValueError(f"method: {self.method!r} is not one of auto, {', '.join(METHODS)}")
        if self.regions not in rg.REGION_SETS:
            raise ValueError(f"regions: {self.regions!r} is not one of {', '.join(rg.REGION_SETS)}")
        for name in ("normalise", "sentence_normalise"):
            value = getattr(self, name)
            if value is not None and value not in NORMALISE:
                raise ValueError(f"{name}: {value!r} is not one of {', '.join(NORMALISE)}")
        for name, low, high in (("lead_s", 0, 60), ("percentile", 0, 100), ("min_share", 0, 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
                raise ValueError(f"{name}: must be a number from {low} to {high}, got {value!r}")
        for name, allowed in (
            ("window_cap", WINDOW_CAPS), ("focus", FOCUS), ("dwell", DWELL), ("egd_fpogv", EGD_FPOGV),
        ):  # fmt: skip
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: {getattr(self, name)!r} is not one of {', '.join(allowed)}")
        for name in ("duration_weighting", "egd_pad_even", "egd_keep_row0"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: must be true or false, got {getattr(self, name)!r}")
        size = self.focus_resize
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= 4096):
            raise ValueError(f"focus_resize: must be null or a pixel count from 1 to 4096, got {size!r}")
        if size is not None and self.focus != "iai":
            raise ValueError("focus_resize: only for focus iai")
        if self.method == "custom" and (self.sigma_px is None) == (self.sigma_deg is None):
            raise ValueError("sigma_px/sigma_deg: method custom needs exactly one of them")
        if self.method != "custom" and (self.sigma_px is not None or self.sigma_deg is not None):
            raise ValueError("sigma_px/sigma_deg: only for method custom")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def method_for(self, source_format: str) -> str:
        if self.method != "auto":
            return self.method
        return "egd" if source_format == "egd" else "reflacx"

    def heatmap_kwargs(self, source_format: str, kind: str = "") -> dict[str, Any]:
        """``heatmaps.heatmap`` keyword arguments for a map of ``kind`` (``sentence`` uses
        ``sentence_normalise``)."""
        method = self.method_for(source_format)
        normalise = self.normalise
        if kind == "sentence" and self.sentence_normalise is not None:
            normalise = self.sentence_normalise
        kwargs: dict[str, Any] = {"method": method, "normalise": normalise}
        if method == "custom":
            kwargs.update(
                sigma_px=self.sigma_px, sigma_deg=self.sigma_deg, duration_weighting=self.duration_weighting
            )
        if method == "egd":
            kwargs.update(
                egd_fpogv=self.egd_fpogv, egd_pad_even=self.egd_pad_even, egd_keep_row0=self.egd_keep_row0
            )
        return kwargs

    def focus_of(self, heatmap: np.ndarray) -> np.ndarray:
        """The intense-focus mask of a heatmap by this definition."""
        return focus_mask(heatmap, self.focus, self.percentile, self.focus_resize)


@dataclass
class RecordingInput:
    external_id: str
    source_format: str
    width: int
    height: int
    fixations: dict
    transcript: list[dict] = field(default_factory=list)
    expected_size: tuple[int, int] | None = None  # (width, height) of the linked scan
    boxes: list[dict] = field(default_factory=list)  # anatomical boxes {"name", "box": [x1, y1, x2, y2]}


@dataclass
class MapSpec:
    """How a heatmap is made from the recording: the fixations inside ``windows`` (None = all), only
    those inside the mask ``mask`` when set."""

    kind: str  # recording, sentence, anatomy
    windows: list[tuple[float, float]] | None = None
    mask: str = ""
    sentence_index: int | None = None
    anatomy: str = ""


@dataclass
class MapOut:
    spec: MapSpec
    peak: float
    fixation_count: int


@dataclass
class RecordingLabels:
    problems: list[str]
    transcript_text: str
    maps: list[MapOut]
    sentences: list[dict[str, Any]]
    anatomy: list[dict[str, Any]]  # with "map": index into maps, "focus": bool mask
    proposals: list[dict[str, Any]]  # with "mask": bool mask, "box", "code", "sentence_index" ...


def recording_problems(rec: RecordingInput, params: GazeParams) -> list[str]:
    """What weakens the recording; raises ``Unusable`` for what makes it unusable."""
    if rec.expected_size is not None and tuple(rec.expected_size) != (rec.width, rec.height):
        w, h = rec.expected_size
        raise Unusable(
            f"image_width/image_height: the recording says {rec.width}x{rec.height} px "
            f"but its scan is {w}x{h}"
        )
    fix = rec.fixations or {}
    n = len(fix.get("x", []))
    if n == 0:
        raise Unusable("fixations: the recording has no fixations")
    rows, cols, on = an.fixation_pixels(fix, rec.width, rec.height)
    if not on.any():
        raise Unusable(f"fixations: none of the {n} fixations lies on the {rec.width}x{rec.height} image")
    problems = []
    if (off := int((~on).sum())) > 0:
        problems.append(f"fixations: {off} of {n} lie off the image (they add nothing inside it)")
    duration = np.asarray(fix["end"], dtype=np.float64) - np.asarray(fix["start"], dtype=np.float64)
    if (zero := int((duration == 0).sum())) > 0:
        problems.append(f"fixations: {zero} have zero duration (left out where duration weights the heatmap)")
    if (negative := int((duration < 0).sum())) > 0:
        problems.append(
            f"fixations: {negative} end before they start (left out where duration weights the heatmap; "
            "dwell counts them as 0)"
        )
    method = params.method_for(rec.source_format)
    if method == "egd" and rec.source_format == "egd" and not fix.get("egd_rows"):
        problems.append(
            "fixations: only the valid fixations were kept (imported by an earlier version): the EGD-CXR "
            "map counts their pixels, not every fixations.csv row as the dataset's script does; import "
            "the recording again for the exact map"
        )
    needs_angle = method == "reflacx" or (method == "custom" and params.sigma_deg is not None)
    if needs_angle and (len(fix.get("ang_res_x") or []) != n or len(fix.get("ang_res_y") or []) != n):
        raise Unusable(
            f"ang_res_x/ang_res_y: method {method} needs the angular resolution of every fixation and the "
            f"{rec.source_format} recording has none; use method egd, or custom with sigma_px"
        )
    rects = fix.get("shown_rect")
    if rects is not None and len(rects) == n and n:
        r = np.asarray(rects, dtype=np.float64)
        x, y = np.asarray(fix["x"], dtype=np.float64), np.asarray(fix["y"], dtype=np.float64)
        outside = on & ((x < r[:, 0]) | (x >= r[:, 2]) | (y < r[:, 1]) | (y >= r[:, 3]))
        if (count := int(outside.sum())) > 0:
            problems.append(f"shown_rect: {count} fixations lie outside the part of the image shown")
    return problems


def compute_map(
    rec: RecordingInput, spec: MapSpec, masks: dict[str, np.ndarray], params: GazeParams
) -> np.ndarray:
    """The exact float32 heatmap that ``spec`` describes."""
    return _map(rec, spec, masks, params)[0]


def _map(rec, spec, masks, params) -> tuple[np.ndarray, int]:
    fix = rec.fixations
    kwargs = params.heatmap_kwargs(rec.source_format, spec.kind)
    if kwargs["method"] == "reflacx" or (kwargs["method"] == "custom" and params.duration_weighting):
        # A fixation without positive duration weighs nothing (said in ``problems``); the heatmap
        # function rejects it, so it is left out here.
        s, e = np.asarray(fix["start"], dtype=np.float64), np.asarray(fix["end"], dtype=np.float64)
        if not np.all(e > s):
            fix = _subset(fix, np.flatnonzero(e > s))
    if spec.mask:
        rows, cols, on = an.fixation_pixels(fix, rec.width, rec.height)
        keep = np.flatnonzero(on & masks[spec.mask][rows, cols])
        fix = _subset(fix, keep)
    if spec.windows is not None:
        fix = an.clip_to_windows(fix, spec.windows)
    count = len(fix.get("x", []))
    out = heatmap(fix, width=rec.width, height=rec.height, **kwargs)
    return out, count


def _subset(fix: dict, index: np.ndarray) -> dict:
    """The fixations ``index``; ``egd_rows`` (every row of the whole recording) is left out."""
    n = len(fix.get("x", []))
    return {
        k: [v[i] for i in index] if isinstance(v, list) and len(v) == n else v
        for k, v in fix.items()
        if k != "egd_rows"
    }


def gaze_labels(
    rec: RecordingInput,
    masks: dict[str, np.ndarray],
    params: GazeParams,
    findings_of: Callable[[str], list[dict[str, Any]]] | None = None,
) -> RecordingLabels:
    """All gaze labels of one recording (module docstring). Raises ``Unusable``."""
    problems = recording_problems(rec, params)
    for name, mask in masks.items():
        if mask.shape != (rec.height, rec.width):
            raise Unusable(
                f"anatomy mask {name}: {mask.shape[1]}x{mask.shape[0]} px, "
                f"the image is {rec.width}x{rec.height}"
            )
    masks, region_problems = rg.region_masks(params.regions, masks, rec.boxes, rec.width, rec.height)
    problems.extend(region_problems)
    maps: list[MapOut] = []

    def add(spec: MapSpec) -> tuple[int, np.ndarray]:
        try:
            array, count = _map(rec, spec, masks, params)
        except ValueError as exc:
            raise Unusable(str(exc)) from exc
        maps.append(MapOut(spec=spec, peak=float(array.max()), fixation_count=count))
        return len(maps) - 1, array

    add(MapSpec(kind="recording"))
    transcript = transcript_sentences(rec.transcript, source_format=rec.source_format)
    problems.extend(transcript.problems)
    sentences, sentence_arrays = [], {}
    spans = [(s.start, s.end) for s in transcript.sentences]
    windows = sentence_windows(spans, params.lead_s, params.window_cap)
    for s, window in zip(transcript.sentences, windows, strict=True):
        shares = an.gaze_shares(rec.fixations, masks, rec.width, rec.height, *window)
        anatomies, why = rg.assign(params.regions, s.text, shares, min_share=params.min_share)
        index, array = add(MapSpec(kind="sentence", windows=[window], sentence_index=s.index))
        sentence_arrays[s.index] = array
        sentences.append({
            **s.as_dict(), "window": list(window), "fixation_count": maps[index].fixation_count,
            "shares": {k: round(v, 6) for k, v in shares.items()}, "anatomies": anatomies, "assigned_by": why,
            "findings": findings_of(s.text) if findings_of is not None else [], "map": index,
        })  # fmt: skip
    gaze = an.anatomy_gaze(rec.fixations, masks, rec.width, rec.height)
    if params.dwell == "egd":
        for name, (dwell, count, share) in egd_dwell(
            rec.fixations, masks, rec.width, rec.height, params.egd_pad_even
        ).items():
            gaze[name] = replace(gaze[name], dwell_s=dwell, fixation_count=count, dwell_share=share)
    records = []
    for name in sorted(masks):
        mine = [s for s in sentences if name in s["anatomies"]]
        if mine:
            spec = MapSpec(kind="anatomy", windows=[tuple(s["window"]) for s in mine], anatomy=name)
        else:
            spec = MapSpec(kind="anatomy", mask=name, anatomy=name)
        index, array = add(spec)
        g = gaze[name]
        records.append({
            "anatomy": name, "dwell_s": g.dwell_s, "fixation_count": g.fixation_count,
            "time_to_first_s": g.time_to_first_s, "dwell_share": g.dwell_share,
            "sentence_indexes": [s["index"] for s in mine], "caption": " ".join(s["text"] for s in mine),
            "heatmap_source": "sentences" if mine else "fixations inside the mask", "map": index,
            "focus": params.focus_of(array),
        })  # fmt: skip
    proposals = _proposals(sentences, sentence_arrays, masks, params)
    return RecordingLabels(
        problems=problems, transcript_text=transcript.text, maps=maps, sentences=sentences, anatomy=records,
        proposals=proposals,
    )  # fmt: skip


def finding_anatomy(
    finding: dict[str, Any], sentence: dict[str, Any], masks: dict[str, np.ndarray]
) -> list[str]:
    """The masks a finding lies in: its laterality, its code (heart), else the anatomies its sentence
    names; only masks that exist. Empty: unknown."""
    side = finding.get("laterality", "")
    wanted: list[str] = []
    if side in ("left", "right"):
        wanted = [f"{side}_lung"]
    elif side == "bilateral":
        wanted = ["left_lung", "right_lung"]
    elif finding.get("code") in HEART_CODES:
        wanted = list(an.HEART_MASKS)
    elif sentence.get("assigned_by") == "words":
        wanted = list(sentence["anatomies"])
    return [name for name in wanted if name in masks]


def _proposals(sentences, arrays, masks, params) -> list[dict[str, Any]]:
    out = []
    for s in sentences:
        present = [
            f for f in s["findings"] if f.get("assertion") == "present" and f.get("code") not in NOT_REGIONS
        ]
        if not present or s["fixation_count"] == 0:
            continue
        array = arrays[s["index"]]
        focus = params.focus_of(array)
        total = float(array.sum())
        for finding in present:
            if params.regions == "fgcxr":
                where = rg.finding_regions(finding, s, masks)
            else:
                where = finding_anatomy(finding, s, masks)
            region = focus
            if where:
                region = focus & np.logical_or.reduce([masks[name] for name in where])
            box = an.box_of(region)
            if box is None:
                continue
            out.append({
                "sentence_index": s["index"], "code": finding["code"], "text": s["text"],
                "phrase": finding.get("phrase", ""), "anatomies": where, "mask": region, "box": box,
                "pixels": int(region.sum()),
                "gaze_mass": float(array[region].sum()) / total if total > 0 else 0.0,
            })  # fmt: skip
    return out


def rules_findings(text: str) -> list[dict[str, Any]]:
    """The CheXpert findings the offline rules labeler reads in one sentence."""
    from labeling.rules import rules_label

    return [
        {"code": p.code, "assertion": p.assertion, "phrase": p.phrase, "laterality": p.laterality,
         "location": p.location}
        for p in rules_label({"findings": text}, schema="chexpert")
    ]  # fmt: skip
