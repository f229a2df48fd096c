"""CheXpert-style label CSV (``formats.md``, "CheXpert-style labels"): one row per radiograph.

Layout::

    chexpert/labels.csv    Path, Split, Patient, Study, then the 14 observations of
                           ``labeling.types.CHEXPERT_OBSERVATIONS`` (the platform labeler's column order)

``Path`` is ``<case_id>.png``, the image name the platform's 2D exports give the case (e.g. FG-CXR's
``fgcxr/<case_id>/<case_id>.png``); ``Patient`` and ``Study`` are the pseudonymous ids. Values are
``1.0`` positive, ``0.0`` negative, ``-1.0`` uncertain, empty = not mentioned, folded from the case's labels
whose ``code`` is a CheXpert observation by the platform labeler's own rule (``labeling.rules.chexpert_row``):

- assertion present → 1.0, absent → 0.0, uncertain → -1.0; several labels of one observation: present
  beats uncertain beats absent;
- human-source labels (accepted in review) override weak/model ones for the same observation: when any
  human label has the observation, its weak/model labels are left out (listed in ``summary.skipped``);
- ``No Finding`` is derived, never read from labels: 1.0 when no observation other than Support Devices is
  positive or uncertain, else empty, as the labeler does. A case with no CheXpert label at all gets an
  all-empty row (nothing known), not ``No Finding = 1.0``.

Labels with other codes (grounded findings of other schemas) are listed in ``summary.skipped`` and left
out. 3D images raise ``FormatError`` (field ``<case_id>.image``).
"""

from __future__ import annotations

import contextlib
import csv
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from labeling.rules import chexpert_row
from labeling.types import CHEXPERT_OBSERVATIONS
from releases.records import CaseRecord, ExportSummary, FormatError, LabelRecord, ReleaseMeta, Sink

NAME = "chexpert"
LABEL_KINDS = ("mask", "box", "none")
COLUMNS = ("Path", "Split", "Patient", "Study", *CHEXPERT_OBSERVATIONS)
ASSERTIONS = ("present", "absent", "uncertain")
HUMAN = "human"


def export(
    cases: Iterable[CaseRecord],
    sink: Sink,
    meta: ReleaseMeta,
    progress: Callable[[int], None] | None = None,
) -> ExportSummary:
    summary = ExportSummary(format=NAME)
    fd, name = tempfile.mkstemp(prefix="chexpert-", suffix=".csv", dir=sink.scratch())
    local = Path(name)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(COLUMNS)
            for done, case in enumerate(cases, start=1):
                writer.writerow(case_row(case, summary))
                summary.cases += 1
                if progress is not None:
                    progress(done)
        sink.put_file(f"{NAME}/labels.csv", local)
        summary.files += 1
    finally:
        with contextlib.suppress(FileNotFoundError):
            local.unlink()  # put_file may have moved it already
    return summary


def case_row(case: CaseRecord, summary: ExportSummary) -> list[str]:
    """The CSV row of one case; labels left out are listed in ``summary.skipped``, used ones counted."""
    if not _is_2d(case.image.shape):
        raise FormatError(f"{case.case_id}.image", f"{NAME} labels radiographs, got shape {case.image.shape}")
    usable: list[LabelRecord] = []
    for label in case.labels:
        reason = _unusable(label)
        if reason:
            summary.skipped.append(f"{case.case_id}/{label.label_id}: {reason}")
        else:
            usable.append(label)
    human_codes = {label.code for label in usable if label.source == HUMAN}
    chosen = []
    for label in usable:
        if label.source != HUMAN and label.code in human_codes:
            summary.skipped.append(
                f"{case.case_id}/{label.label_id}: {label.source} label overridden by a human label of "
                f"{label.code!r}"
            )
        else:
            chosen.append(label)
    summary.labels += len(chosen)
    values = chexpert_row(chosen) if chosen else dict.fromkeys(CHEXPERT_OBSERVATIONS)
    return [
        f"{case.case_id}.png",
        case.split,
        case.patient_id,
        case.study_id,
        *("" if values.get(obs) is None else str(float(values[obs])) for obs in CHEXPERT_OBSERVATIONS),
    ]


def _unusable(label: LabelRecord) -> str:
    if label.kind not in LABEL_KINDS:
        return f"kind {label.kind!r} is not supported"
    if label.code not in CHEXPERT_OBSERVATIONS:
        return f"code {label.code!r} is not a CheXpert observation"
    if label.assertion not in ASSERTIONS:
        return f"assertion {label.assertion!r} is not one of {ASSERTIONS}"
    return ""


def _is_2d(shape: list[int]) -> bool:
    return len(shape) == 2 or (len(shape) == 3 and shape[2] == 1)
