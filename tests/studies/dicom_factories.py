"""Synthetic DICOM files for reader tests: CT-like slices with chosen geometry, PET slices from real
header sets (cornerstonejs calculate-suv metadata), and modified copies of real files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    PositronEmissionTomographyImageStorage,
    generate_uid,
)

STUDY_UID = "1.2.826.0.1.3680043.8.498.1"


def new_dataset(
    *, sop_class: str = CTImageStorage, modality: str = "CT", series_uid: str | None = None
) -> Dataset:
    """A minimal single-frame image instance header (no pixel data yet)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.Modality = modality
    ds.PatientID = "SYNTH-1"
    ds.PatientName = "Synthetic^Patient"
    return ds


def set_pixels(ds: Dataset, pixels: np.ndarray, *, signed: bool = True, bits_stored: int = 16) -> None:
    """Store ``pixels`` (rows, columns) as native 16-bit MONOCHROME2 pixel data."""
    rows, cols = pixels.shape
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<i2" if signed else "<u2").tobytes()


def save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def slice_pixels(k: int, rows: int, cols: int) -> np.ndarray:
    """Distinct, position-dependent values: every voxel tells its (row, column, slice)."""
    r, c = np.mgrid[0:rows, 0:cols]
    return (k * 1000 + r * 7 + c * 3 - 500).astype(np.int16)


def write_series(
    folder: Path,
    *,
    n: int = 6,
    rows: int = 24,
    cols: int = 32,
    spacing: tuple[float, float] = (0.8, 0.7),
    step: float = 2.5,
    orientation: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
    origin: tuple[float, float, float] = (-100.0, -80.0, 40.0),
    slope: float = 1.0,
    intercept: float = 0.0,
    instance_numbers: list[int] | None = None,
    modality: str = "CT",
) -> list[Path]:
    """A series of ``n`` slices stepping ``step`` mm along the slice normal from ``origin`` (LPS).

    Slice k holds ``slice_pixels(k)`` as stored values; files are named by k. ``spacing`` is
    PixelSpacing (row spacing, column spacing).
    """
    folder.mkdir(parents=True, exist_ok=True)
    o = np.asarray(orientation, dtype=float)
    normal = np.cross(o[:3], o[3:])
    series_uid = generate_uid()
    paths = []
    for k in range(n):
        ds = new_dataset(series_uid=series_uid, modality=modality)
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in o]
        ds.ImagePositionPatient = [f"{v:.4f}" for v in np.asarray(origin) + k * step * normal]
        ds.PixelSpacing = [str(spacing[0]), str(spacing[1])]
        ds.SliceThickness = str(step)
        ds.InstanceNumber = instance_numbers[k] if instance_numbers else k + 1
        ds.RescaleSlope = str(slope)
        ds.RescaleIntercept = str(intercept)
        set_pixels(ds, slice_pixels(k, rows, cols))
        paths.append(save(ds, folder / f"slice{k:03d}.dcm"))
    return paths


def copy_with(src: Path | str, dest: Path, **changes: Any) -> Path:
    """A copy of a DICOM file with attributes set (``None`` deletes one)."""
    ds = pydicom.dcmread(src)
    for keyword, value in changes.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(dest)
    return dest


def _ds_value(value: Any) -> str:
    return str(value)


def write_pet_series(
    folder: Path, header_set: Path, *, rows: int = 8, cols: int = 8, slopes: tuple[float, ...] = ()
) -> tuple[list[Path], list[dict[str, Any]], list[np.ndarray]]:
    """PET slices carrying the header values of one ``<NAME>-instances.json`` set (one slice per instance,
    each with its own RescaleSlope). Returns (paths, instance dicts, stored pixel arrays)."""
    instances = json.loads(Path(header_set).read_text())
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    philips = "PHILIPS" in Path(header_set).name
    paths, stored = [], []
    for k, inst in enumerate(instances):
        ds = new_dataset(
            sop_class=PositronEmissionTomographyImageStorage, modality="PT", series_uid=series_uid
        )
        ds.Manufacturer = "Philips Medical Systems" if philips else "SIEMENS"
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.ImagePositionPatient = ["-300", "-300", str(-200 + 4 * k)]
        ds.PixelSpacing = ["4", "4"]
        ds.SliceThickness = "4"
        ds.InstanceNumber = len(instances) - k
        slope = slopes[k] if k < len(slopes) else 0.5 + 0.37 * (k + 1)
        ds.RescaleSlope = f"{slope:.6g}"
        ds.RescaleIntercept = "0"
        for keyword in ("SeriesDate", "SeriesTime", "AcquisitionDate", "AcquisitionTime", "PatientSex"):
            if keyword in inst:
                setattr(ds, keyword, inst[keyword])
        for keyword in ("PatientWeight", "PatientSize", "FrameReferenceTime", "ActualFrameDuration"):
            if keyword in inst:
                setattr(ds, keyword, _ds_value(inst[keyword]))
        ds.Units = inst["Units"]
        ds.DecayCorrection = inst["DecayCorrection"]
        ds.CorrectedImage = inst["CorrectedImage"]
        radio = Dataset()
        radio.RadionuclideTotalDose = _ds_value(inst["RadionuclideTotalDose"])
        radio.RadionuclideHalfLife = _ds_value(inst["RadionuclideHalfLife"])
        radio.RadiopharmaceuticalStartTime = inst["RadiopharmaceuticalStartTime"]
        if inst.get("RadiopharmaceuticalStartDateTime"):
            radio.RadiopharmaceuticalStartDateTime = inst["RadiopharmaceuticalStartDateTime"].strip()
        ds.RadiopharmaceuticalInformationSequence = [radio]
        factors = inst.get("PhilipsPETPrivateGroup") or {}
        if factors:
            block = ds.private_block(0x7053, "Philips PET Private Group", create=True)
            if "SUVScaleFactor" in factors:
                block.add_new(0x00, "DS", str(factors["SUVScaleFactor"]).strip())
            if "ActivityConcentrationScaleFactor" in factors:
                block.add_new(0x09, "DS", str(factors["ActivityConcentrationScaleFactor"]).strip())
        pixels = (np.arange(rows * cols).reshape(rows, cols) * (k + 1) % 30000).astype(np.int16)
        set_pixels(ds, pixels)
        stored.append(pixels)
        paths.append(save(ds, folder / f"pet{k}.dcm"))
    return paths, instances, stored
