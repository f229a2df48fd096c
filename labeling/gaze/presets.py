"""Named gaze-label definitions: each preset is a dict of ``GazeParams`` values that follows one source.

A run's params may name a preset (``{"preset": "reflacx", "lead_s": 3}``) and override any parameter;
``GazeParams.from_dict`` starts from the preset's values, applies the overrides, and the run stores the
resolved values with the preset's name (``labeling.gaze.service.gaze_params``), so a stored run says the
definition it used. No preset named: ``platform``.

What each parameter means is in ``labeling.gaze.labels.GazeParams``. Sources were read at these commits:
REFLACX authors' localization code ``ricbl/eye-tracking-localization`` ed30d2f (2022-04-22, the paper's
code; its default window later became 1.5 s in 84108d5), EGD-CXR ``cxr-eye-gaze/eye-gaze-dataset``
82f2427, I-AI ``UARK-AICV/IAI`` 9900c59, FG-CXR ``UARK-AICV/FG-CXR`` 12c8891 and 174bf13 (the data code of
earlier commits; the newest commit holds only a README).
"""

from __future__ import annotations

from typing import Any

PLATFORM: dict[str, Any] = {
    "method": "auto",
    "lead_s": 2.0,
    "window_cap": "none",
    "percentile": 20.0,
    "focus": "percentile",
    "focus_resize": None,
    "min_share": 0.5,
    "sigma_px": None,
    "sigma_deg": None,
    "duration_weighting": True,
    "normalise": None,
    "sentence_normalise": None,
    "dwell": "platform",
    "egd_fpogv": "all",
    "egd_pad_even": True,
    "egd_keep_row0": False,
    "regions": "anatomy",
}
"""The platform's default (the definitions before issue 15): each recording's own reference map (REFLACX's
Gaussian, EGD-CXR's filter), a sentence's gaze from 2 s before its first word to its last, intense focus
above the 20th percentile (linear interpolation) of the map's distinct 8-bit values, dwell as the summed
durations of the fixations in a mask. One change: EGD-CXR maps now equal the dataset's script in its edge
cases (``egd_*``, see ``labeling.gaze.heatmaps``); ``egd_fpogv="valid"``, ``egd_pad_even=False``,
``egd_keep_row0=True`` give the earlier map."""

REFLACX: dict[str, Any] = {
    **PLATFORM,
    "lead_s": 5.0,
    "window_cap": "previous_start",
    "sentence_normalise": "max",
}
"""REFLACX authors' sentence heatmaps, ``src/find_fixations_all_sentences.py`` at ed30d2f: method ``5s``
(line 149) draws the fixations from ``max(first_start_timestamp - 5, first_start_timestamp_previous)``
to the end of the sentence's ``.`` (line 131), the previous sentence's first-word start being 0 for the
first sentence (line 108); each fixation weighted by its duration clipped to that window (lines 42, 49-52),
the map divided by its maximum (line 54). The Gaussian per fixation is the dataset's reference map
(method ``auto`` keeps it for REFLACX recordings; an EGD-CXR recording, without angular resolution,
keeps its own)."""

EGD: dict[str, Any] = {**PLATFORM, "dwell": "egd"}
"""EGD-CXR's own scripts: the whole-recording map of
``DataProcessing/DataPostProcessing/create_heatmap_images_and_or_videos.py`` (lines 185-288, edge cases
as the defaults of ``egd_*``) and dwell time of ``DataProcessing/Validation/validation.py`` lines 81-111:
every fixations.csv row of the image is given the time since the row above (``Time (in secs)``
difference; the first row its own time) and counts in the region holding its X_ORIGINAL/Y_ORIGINAL
pixel."""

IAI: dict[str, Any] = {**PLATFORM, "focus": "iai", "focus_resize": 224}
"""I-AI's intense focus, ``iai/utils/misc.py`` ``read_gt_heatmap`` at 9900c59 (lines 37-44): the 8-bit
heatmap resized to the model input (``transforms.Resize([224, 224])`` of
``iai/data/datasets/register_tiai_e2e_v2.py`` line 84: PIL bilinear), its distinct values sorted, the
threshold the one at index ``len(unique) // 5``, the mask the pixels above it. I-AI publishes no code
for the gaze-to-heatmap step or the sentence windows: those stay the platform's."""

FGCXR: dict[str, Any] = {
    **PLATFORM,
    "lead_s": 5.0,
    "window_cap": "previous_start",
    "sentence_normalise": "max",
    "focus": "iai",
    "focus_resize": 224,
    "regions": "fgcxr",
}
"""FG-CXR's published data code: its seven regions (``fgcxr/constants.py`` ``REGIONS``,
``labeling.gaze.regions``); the heatmap mask of ``heatmap_predictor/IAI/iai/utils/misc.py``
(12c8891, I-AI's threshold at index ``len(unique) // 5`` after ``Resize([224, 224])``) and
``fgcxr/data.py`` ``_heatmap_mask`` (174bf13, the same index on the 224 px map), heatmaps divided by
their maximum (``ReportDataset``: ``heatmaps / maxima``). How FG-CXR turned gaze into per-sentence
heatmaps is not published; it is built from REFLACX (and EGD-CXR) recordings, and this preset takes the
REFLACX authors' window (``REFLACX``). The newer loader resizes the shorter side to 224 and
centre-crops; the preset follows the square resize of the heatmap predictor."""

PRESETS: dict[str, dict[str, Any]] = {
    "platform": PLATFORM,
    "reflacx": REFLACX,
    "egd": EGD,
    "iai": IAI,
    "fgcxr": FGCXR,
}
DEFAULT = "platform"


def preset_values(name: str) -> dict[str, Any]:
    """A copy of the preset's values; ValueError naming the field for an unknown name."""
    if name not in PRESETS:
        raise ValueError(f"preset: unknown preset {name!r} (known: {', '.join(PRESETS)})")
    return dict(PRESETS[name])
