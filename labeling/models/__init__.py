"""Models of the labeling app: report label runs (``reports``) and gaze label runs (``gaze``)."""

from labeling.models.gaze import (
    GazeAnatomyRecord,
    GazeHeatmap,
    GazeLabelResult,
    GazeLabelRun,
    GazeSentence,
    RegionProposal,
)
from labeling.models.reports import (
    Assertion,
    FindingProposal,
    LabelRun,
    LabelRunStatus,
    LLMCacheEntry,
    RunReport,
)

__all__ = [
    "Assertion",
    "FindingProposal",
    "GazeAnatomyRecord",
    "GazeHeatmap",
    "GazeLabelResult",
    "GazeLabelRun",
    "GazeSentence",
    "LLMCacheEntry",
    "LabelRun",
    "LabelRunStatus",
    "RegionProposal",
    "RunReport",
]
