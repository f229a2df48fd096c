"""CheXpert layout (``docs/exports/chexpert.md``): the dataset's CSVs and image tree, so code written for
CheXpert-v1.0 (torchxrayvision's ``CheX_Dataset``, CovidPrognosis' ``CheXpertDataset``, the usual
``pd.read_csv`` + ``os.path.join(root, row.Path)`` loaders) reads a release unchanged.

Layout (``chexpert/`` plays the part of ``CheXpert-v1.0-small/``; the export's root is its parent)::

    chexpert/train.csv     one row per radiograph of the train split, CheXpert's columns (below)
    chexpert/valid.csv     the val split (CheXpert's name for it)
    chexpert/test.csv      the test split, same columns (CheXpert v1.0 ships no test CSV of this shape)
    chexpert/cases.csv     sidecar: Path, case_id, split, patient_id, study_id, report_id
    chexpert/<train|valid|test>/patient<NNNNN>/study<S>/view<V>_<frontal|lateral|unknown>.png

Columns, in CheXpert's order: ``Path, Sex, Age, Frontal/Lateral, AP/PA`` then the 14 observations
``OBSERVATIONS`` (CheXpert's order, which puts Lung Opacity before Lung Lesion, unlike the platform
labeler's ``labeling.types.CHEXPERT_OBSERVATIONS``). ``Path`` is relative to the export's root, e.g.
``chexpert/train/patient00002/study1/view1_frontal.png``. Patient, study and view numbers are the case's
``numbering`` (fixed at freeze); a release frozen before numbering was recorded numbers patients, their
studies and their scans in the order the export meets them. Two cases on one path raise ``FormatError``.

- ``Sex``: the de-identified header's PatientSex M/F as ``Male``/``Female``, else empty.
- ``Age``: PatientAge (``045Y`` -> ``45``; months, weeks and days floored to whole years), else empty.
- ``Frontal/Lateral`` and ``AP/PA`` from ViewPosition: PA/AP (also ``AP ...``/``PA ...`` forms like
  ``AP AXIAL``) -> Frontal + PA/AP; LL/RL/LATERAL -> Lateral, AP/PA empty (as CheXpert leaves it for
  laterals); LLD/RLD (decubitus, a frontal projection) -> Frontal, AP/PA empty. Without a usable
  ViewPosition, PatientOrientation whose row direction is L/R (columns F/H) gives Frontal, A/P gives
  Lateral; otherwise both are empty and the file is named ``view<V>_unknown.png`` (PNG/JPEG sources
  carry no header: nothing is guessed).
- Observations: ``1.0`` positive, ``0.0`` negative, ``-1.0`` uncertain, empty = not mentioned, folded
  from the case's labels whose ``code`` is a CheXpert observation by the platform labeler's own rule
  (``labeling.rules.chexpert_row``): present beats uncertain beats absent; human-source labels (accepted
  in review) override weak/model ones of the same observation (the overridden ones are listed in
  ``summary.skipped``); ``No Finding`` is derived (1.0 when nothing but Support Devices is positive or
  uncertain); a case with no CheXpert label gets an all-empty row.

Images are 8-bit grayscale PNG, ``rows x columns`` at full resolution (lossless; loaders open the file the
``Path`` column names, whatever its extension). 8-bit sources are written as they are; others are
windowed: the DICOM header's first window (VOI LUT function LINEAR, LINEAR_EXACT or SIGMOID, MONOCHROME1
centres moved as the ingest inverted the pixels), else the 0.5-99.5 percentile range. 3D images raise
``FormatError`` (field ``<case_id>.image``) naming the way to freeze a radiograph-only release.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from labeling.rules import chexpert_row
from labeling.types import CHEXPERT_OBSERVATIONS
from releases.formats.fgcxr import png_bytes
from releases.formats.fgcxr import window as percentile_window
from releases.records import CaseRecord, ExportSummary, FormatError, LabelRecord, ReleaseMeta, Sink

NAME = "chexpert"
LABEL_KINDS = ("mask", "box", "none")
OBSERVATIONS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices",
)  # fmt: skip
COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *OBSERVATIONS)
SIDECAR = "cases.csv"
SIDECAR_COLUMNS = ("Path", "case_id", "split", "patient_id", "study_id", "report_id")
SPLIT_FOLDERS = {"train": "train", "val": "valid", "test": "test"}  # platform split -> CheXpert name
ASSERTIONS = ("present", "absent", "uncertain")
HUMAN = "human"
MODALITY_HINT = (
    "freeze a release of the radiographs only (release_create --modality CR --modality DX, or the API's "
    'selection "modalities": ["CR", "DX"]) and export that'
)


def export(
    cases: Iterable[CaseRecord],
    sink: Sink,
    meta: ReleaseMeta,
    progress: Callable[[int], None] | None = None,
) -> ExportSummary:
    summary = ExportSummary(format=NAME)
    tables = _Tables(sink)
    numbers = _Numbers()
    paths: dict[str, str] = {}  # relpath -> case id
    seen: set[str] = set()
    try:
        for done, case in enumerate(cases, start=1):
            if case.case_id in seen:
                summary.skipped.append(f"{case.case_id}: the case appears twice in the release; written once")
            else:
                seen.add(case.case_id)
                _export_case(case, sink, summary, tables, numbers, paths)
            if progress is not None:
                progress(done)
        summary.files += tables.finish(sink)
    finally:
        tables.close()
    return summary


def _export_case(
    case: CaseRecord,
    sink: Sink,
    summary: ExportSummary,
    tables: _Tables,
    numbers: _Numbers,
    paths: dict[str, str],
) -> None:
    if not is_2d(case.image.shape):
        raise FormatError(
            f"{case.case_id}.image",
            f"{NAME} holds 2D radiographs, but case {case.case_id} is a {case.image.modality or 'image'} "
            f"of shape {list(case.image.shape)}: {MODALITY_HINT}",
        )
    folder = SPLIT_FOLDERS.get(case.split)
    if folder is None:
        raise FormatError(
            f"{case.case_id}.split", f"split {case.split!r} is not one of {list(SPLIT_FOLDERS)}"
        )
    header = parse_header(case.image.dicom_header)
    frontal_lateral, ap_pa = view_of(header)
    patient, study, view = numbers.of(case)
    kind = (frontal_lateral or "unknown").lower()
    relpath = f"{NAME}/{folder}/patient{patient:05d}/study{study}/view{view}_{kind}.png"
    if relpath in paths:
        raise FormatError(
            f"{case.case_id}.numbering",
            f"{relpath} is already the image of case {paths[relpath]}: two scans with one patient/study/view "
            "number",
        )
    paths[relpath] = case.case_id
    values = label_values(case, summary)
    sink.put_bytes(relpath, png_bytes(image_8bit(case, header)))
    summary.files += 1
    sex, age = demographics(header)
    tables.add(case.split, [relpath, sex, age, frontal_lateral, ap_pa, *(values[o] for o in OBSERVATIONS)])
    tables.add_case([relpath, case.case_id, case.split, case.patient_id, case.study_id, case.report_id])
    summary.cases += 1


# -- labels ---------------------------------------------------------------------------------------------


def label_values(case: CaseRecord, summary: ExportSummary) -> dict[str, str]:
    """Observation -> CSV value of one case; labels left out are listed in ``summary.skipped``, used ones
    counted in ``summary.labels``."""
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
    row = chexpert_row(chosen) if chosen else dict.fromkeys(CHEXPERT_OBSERVATIONS)
    return {obs: "" if row.get(obs) is None else str(float(row[obs])) for obs in OBSERVATIONS}


def _unusable(label: LabelRecord) -> str:
    if label.kind not in LABEL_KINDS:
        return f"kind {label.kind!r} is not supported"
    if label.code not in CHEXPERT_OBSERVATIONS:
        return f"code {label.code!r} is not a CheXpert observation"
    if label.assertion not in ASSERTIONS:
        return f"assertion {label.assertion!r} is not one of {ASSERTIONS}"
    return ""


# -- header fields ----------------------------------------------------------------------------------------


def parse_header(header: dict[str, Any] | None):
    """The de-identified header (pydicom JSON dict) as a pydicom Dataset, or None when absent/unreadable."""
    if not header:
        return None
    from pydicom import Dataset

    try:
        return Dataset.from_json(header)
    except Exception:  # a header the platform stored but pydicom cannot rebuild: treated as absent
        return None


def _text(ds, keyword: str) -> str:
    if ds is None:
        return ""
    try:
        value = ds.get(keyword)
    except Exception:
        return ""
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value).strip().upper()
    return str(value).strip().upper()


_AGE = re.compile(r"^(\d{1,3})\s*([DWMY])$")
_AGE_DIVISOR = {"Y": 1, "M": 12, "W": 52, "D": 365}


def demographics(ds) -> tuple[str, str]:
    """(Sex, Age) as CheXpert writes them: ``Male``/``Female`` and whole years; empty when unknown."""
    sex = {"M": "Male", "F": "Female"}.get(_text(ds, "PatientSex"), "")
    match = _AGE.match(_text(ds, "PatientAge"))
    age = str(int(match.group(1)) // _AGE_DIVISOR[match.group(2)]) if match else ""
    return sex, age


_LATERAL = {"LL", "RL", "LATERAL", "LAT", "LLAT", "RLAT", "LEFT LATERAL", "RIGHT LATERAL", "XTABLE LATERAL"}
_DECUBITUS = {"LLD", "RLD"}


def view_of(ds) -> tuple[str, str]:
    """(Frontal/Lateral, AP/PA) from ViewPosition, else Frontal/Lateral from PatientOrientation; ``""``
    where the header does not say it for certain."""
    position = " ".join(_text(ds, "ViewPosition").split())
    first = position.split(" ")[0] if position else ""
    if first in ("AP", "PA") and not any(word in position for word in ("LAT", "OBL")):
        return "Frontal", first
    if position in _LATERAL:
        return "Lateral", ""
    if position in _DECUBITUS:
        return "Frontal", ""
    orientation = _text(ds, "PatientOrientation").split("\\")
    if len(orientation) == 2 and orientation[1] in ("F", "H"):
        if orientation[0] in ("L", "R"):
            return "Frontal", ""
        if orientation[0] in ("A", "P"):
            return "Lateral", ""
    return "", ""


# -- pixels -----------------------------------------------------------------------------------------------


def is_2d(shape: list[int]) -> bool:
    return len(shape) == 2 or (len(shape) == 3 and shape[2] == 1)


def image_8bit(case: CaseRecord, ds=None) -> np.ndarray:
    """The case's image as an 8-bit ``(rows, columns)`` array: ``load()`` gives ``(X, Y)``, transposed.

    uint8 images (and integer images without a header window whose values lie in 0..255) are kept as
    they are; others go through the header's first window, else the 0.5-99.5 percentile range."""
    arr = np.asarray(case.image.load())
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim != 2:
        raise FormatError(
            f"{case.case_id}.image", f"{NAME} holds 2D radiographs, got shape {list(arr.shape)}"
        )
    pixels = np.ascontiguousarray(arr.T)
    if pixels.dtype == np.uint8:
        return pixels
    voi = header_window(ds)
    if voi is None:
        if pixels.dtype.kind in "iu" and pixels.size and pixels.min() >= 0 and pixels.max() <= 255:
            return pixels.astype(np.uint8)
        return percentile_window(pixels)
    return apply_window(pixels, *voi)


def header_window(ds) -> tuple[float, float, str] | None:
    """(center, width, function) of the header's first window, in the stored image's units: for
    MONOCHROME1 the centre is mirrored about ``slope * (lo + hi) + 2 * intercept`` (``lo``/``hi`` the
    stored value range), as the ingest inverted the pixels. None without a usable window."""
    if ds is None:
        return None
    try:
        center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
        if center is None or width is None:
            return None
        center = float(center[0] if _multi(center) else center)
        width = float(width[0] if _multi(width) else width)
        function = _text(ds, "VOILUTFunction") or "LINEAR"
        if _text(ds, "PhotometricInterpretation") == "MONOCHROME1":
            from studies.ingest.dicom_pixels import stored_range

            limits = stored_range(ds)
            if limits is None:
                return None
            slope = float(ds.get("RescaleSlope") or 1.0)
            intercept = float(ds.get("RescaleIntercept") or 0.0)
            center = slope * (limits[0] + limits[1]) + 2 * intercept - center
    except (TypeError, ValueError, IndexError):
        return None
    if not (np.isfinite(center) and np.isfinite(width)) or width <= 0:
        return None
    return center, width, function


def _multi(value: Any) -> bool:
    return isinstance(value, list | tuple) or type(value).__name__ == "MultiValue"


def apply_window(pixels: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """DICOM VOI LUT (PS3.3 C.11.2.1.2) to 0..255: LINEAR (width >= 1), LINEAR_EXACT or SIGMOID."""
    x = np.asarray(pixels, dtype=np.float64)
    if function == "SIGMOID":
        y = 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    elif function == "LINEAR_EXACT":
        y = (x - center) / width + 0.5
    else:
        width = max(width, 1.0)
        y = (x - (center - 0.5)) / max(width - 1.0, 1.0) + 0.5
    return np.round(np.clip(y, 0.0, 1.0) * 255.0).astype(np.uint8)


# -- numbering and tables ---------------------------------------------------------------------------------


class _Numbers:
    """Patient, study and view numbers of a case: its frozen ``numbering``, else (older releases) the
    order in which this export meets the patient, the patient's study and the study's scan."""

    def __init__(self):
        self.patients: dict[str, int] = {}
        self.studies: dict[tuple[str, str], int] = {}
        self.scans: dict[tuple[str, str, str], int] = {}
        self.per_patient: dict[str, int] = {}
        self.per_study: dict[tuple[str, str], int] = {}

    def of(self, case: CaseRecord) -> tuple[int, int, int]:
        n = case.numbering or {}
        found = [n.get(key) for key in ("patient", "study", "scan")]
        if all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in found):
            return found[0], found[1], found[2]
        p, s = case.patient_id, case.study_id
        if p not in self.patients:
            self.patients[p] = len(self.patients) + 1
        if (p, s) not in self.studies:
            self.per_patient[p] = self.per_patient.get(p, 0) + 1
            self.studies[(p, s)] = self.per_patient[p]
        if (p, s, case.case_id) not in self.scans:
            self.per_study[(p, s)] = self.per_study.get((p, s), 0) + 1
            self.scans[(p, s, case.case_id)] = self.per_study[(p, s)]
        return self.patients[p], self.studies[(p, s)], self.scans[(p, s, case.case_id)]


class _Tables:
    """The CSVs, one scratch file each while cases stream by (an export's memory stays flat)."""

    def __init__(self, sink: Sink):
        self.files: dict[str, tuple[Path, Any, Any]] = {}
        for name, columns in [(f"{f}.csv", COLUMNS) for f in SPLIT_FOLDERS.values()] + [
            (SIDECAR, SIDECAR_COLUMNS)
        ]:
            fd, local = tempfile.mkstemp(prefix="chexpert-", suffix=".csv", dir=sink.scratch())
            fh = os.fdopen(fd, "w", newline="", encoding="utf-8")
            writer = csv.writer(fh)
            writer.writerow(columns)
            self.files[name] = (Path(local), fh, writer)

    def add(self, split: str, row: list[str]) -> None:
        self.files[f"{SPLIT_FOLDERS[split]}.csv"][2].writerow(row)

    def add_case(self, row: list[str]) -> None:
        self.files[SIDECAR][2].writerow(row)

    def finish(self, sink: Sink) -> int:
        for name, (local, fh, _) in self.files.items():
            fh.close()
            sink.put_file(f"{NAME}/{name}", local)
        return len(self.files)

    def close(self) -> None:
        for local, fh, _ in self.files.values():
            fh.close()
            with contextlib.suppress(FileNotFoundError):
                local.unlink()  # put_file may have moved it already
