"""Readers of radiologist eye-gaze recordings (REFLACX, EGD-CXR). Pure: no database.

``gaze_units(path, fmt)`` lists the recordings of a folder as ``GazeUnit``s whose ``read()`` returns a
``GazeRecordingData`` (or ``GazeSkipped``) or raises ``IngestError``; ``read_gaze`` yields those results
with errors in place, so one broken recording never stops the others.
"""

from collections.abc import Iterator, Mapping
from pathlib import Path

from studies.ingest.gaze.common import GazeItem, GazeRecordingData, GazeSkipped, GazeUnit, read_units
from studies.ingest.gaze.egd import egd_units, read_egd, read_egd_fixations
from studies.ingest.gaze.reflacx import read_reflacx, read_reflacx_fixations, reflacx_units
from studies.ingest.types import IngestError

FORMATS = ("reflacx", "egd")

__all__ = [
    "FORMATS",
    "GazeItem",
    "GazeRecordingData",
    "GazeSkipped",
    "GazeUnit",
    "detect_format",
    "egd_units",
    "gaze_units",
    "read_egd",
    "read_egd_fixations",
    "read_gaze",
    "read_reflacx",
    "read_reflacx_fixations",
    "reflacx_units",
]


def detect_format(path: Path) -> str:
    """``"egd"`` for a folder with ``master_sheet.csv``, ``"reflacx"`` for one with REFLACX metadata."""
    path = Path(path)
    if (path / "master_sheet.csv").is_file():
        return "egd"
    main = path / "main_data" if (path / "main_data").is_dir() else path
    if any((main / f"metadata_phase_{p}.csv").is_file() for p in (1, 2, 3)):
        return "reflacx"
    raise IngestError(path, "neither an EGD-CXR folder (master_sheet.csv) nor a REFLACX folder (main_data)")


def gaze_units(
    path: Path, fmt: str, image_sizes: Mapping[str, tuple[int, int]] | None = None
) -> list[GazeUnit]:
    """The recordings of ``path`` in format ``fmt`` (``reflacx``, ``egd`` or ``auto``).

    ``image_sizes`` (dicom_id -> (width, height) px) is used by EGD-CXR recordings without masks.
    Raises ``IngestError`` when the folder as a whole cannot be read, ``ValueError`` for an unknown fmt.
    """
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt == "reflacx":
        return reflacx_units(path)
    if fmt == "egd":
        return egd_units(path, image_sizes)
    raise ValueError(f"gaze format {fmt!r} is not one of auto, {', '.join(FORMATS)}")


def read_gaze(
    path: Path, fmt: str, image_sizes: Mapping[str, tuple[int, int]] | None = None
) -> Iterator[GazeItem]:
    return read_units(gaze_units(path, fmt, image_sizes))
