"""Writers of format-exact REFLACX and EGD-CXR recordings for tests (they live in
``studies.ingest.gaze.synthetic`` so that the demo can use them too)."""

from studies.ingest.gaze.synthetic import (
    DEFAULT_PHRASES,
    DEFAULT_WORDS,
    EGD_MASTER_COLUMNS,
    MASK_NAMES,
    REFLACX_PHASE1_LABELS,
    REFLACX_PHASE23_LABELS,
    EgdFixation,
    EgdSpec,
    ReflacxSpec,
    egd_paddings,
    write_egd,
    write_reflacx,
)

__all__ = [
    "DEFAULT_PHRASES",
    "DEFAULT_WORDS",
    "EGD_MASTER_COLUMNS",
    "MASK_NAMES",
    "REFLACX_PHASE1_LABELS",
    "REFLACX_PHASE23_LABELS",
    "EgdFixation",
    "EgdSpec",
    "ReflacxSpec",
    "egd_paddings",
    "write_egd",
    "write_reflacx",
]
