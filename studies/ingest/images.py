"""NIfTI and raster (PNG/JPEG) files as canonical Volumes, without the database.

NIfTI: the array as stored, ``(X, Y[, Z])``, Fortran-ordered, file scaling (scl_slope/scl_inter)
applied; the affine is the file's sform, else its qform, else one from the voxel sizes (voxel -> RAS+
mm); spacing from the header's zooms (mm). Raster: array ``(X, Y)`` = (image column, image row),
grayscale, 8-bit as uint8 and 16-bit as uint16; pixel spacing unknown (1.0 mm, with a warning); affine
``diag(-1, -1, 1, 1)`` like DICOM radiographs.

Both are checked before they are decoded (``studies.ingest.bounded``): a NIfTI whose header declares
more voxel bytes than ``NIFTI_MAX_BYTES``, or a ``.nii.gz`` that would inflate more than
``ZIP_MAX_RATIO`` times its size, and a raster of more than ``IMAGE_MAX_PIXELS`` pixels are refused
from their headers.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from studies.ingest.bounded import nifti_declared, raster_open_bounded
from studies.ingest.types import IngestError, Volume

INT16_RANGE = (-32768, 32767)
_RATIO_MIN_BYTES = 1024 * 1024  # small images compress extremely well legitimately
_DEFAULTS = {"NIFTI_MAX_BYTES": 2 * 1024**3, "IMAGE_MAX_PIXELS": 64 * 1024**2, "ZIP_MAX_RATIO": 200}


def _limit(name: str) -> int:
    """A limit from Django's settings (also in worker processes, which inherit DJANGO_SETTINGS_MODULE),
    else its default (a bare reader call)."""
    try:
        from django.conf import settings

        return int(getattr(settings, name))
    except Exception:  # Django not configured
        return _DEFAULTS[name]


def nifti_check_declared(path: str | os.PathLike[str]) -> None:
    """Refuse a NIfTI file from its header alone: voxels over ``NIFTI_MAX_BYTES``, or a gzip file that
    would inflate more than ``ZIP_MAX_RATIO`` times its size (a gzip bomb)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            declared = nifti_declared(fh, name=str(path), field="dim")
    except OSError as exc:
        raise IngestError(path, f"not a readable NIfTI file ({type(exc).__name__}: {exc})") from exc
    limit = _limit("NIFTI_MAX_BYTES")
    if declared.data_bytes > limit:
        raise IngestError(
            path,
            f"declares {declared.data_bytes} bytes of voxels ({list(declared.shape)} x {declared.dtype}), "
            f"over the limit of {limit} bytes (NIFTI_MAX_BYTES)",
            "dim",
        )
    size = path.stat().st_size
    ratio = declared.total_bytes / max(size, 1)
    if declared.gzipped and declared.total_bytes >= _RATIO_MIN_BYTES and ratio > _limit("ZIP_MAX_RATIO"):
        raise IngestError(
            path,
            f"{size} bytes would inflate to {declared.total_bytes} ({ratio:.0f}:1), over the limit of "
            f"{_limit('ZIP_MAX_RATIO')}:1 (gzip bomb?)",
            "dim",
        )


def _canonical_dtype(array: np.ndarray) -> np.ndarray:
    """int16 for integers that fit, else float32 (as DICOM volumes), Fortran order kept."""
    kind = array.dtype.kind
    if kind == "b":
        return array.astype(np.int16, order="F")
    if kind in "iu":
        if array.dtype == np.int16 or array.dtype == np.uint8 or array.dtype == np.int8:
            return array.astype(np.int16, order="F", copy=array.dtype != np.int16)
        if array.size == 0 or (INT16_RANGE[0] <= int(array.min()) and int(array.max()) <= INT16_RANGE[1]):
            return array.astype(np.int16, order="F")
        return array.astype(np.float32, order="F")
    if kind == "f":
        return array.astype(np.float32, order="F", copy=array.dtype != np.float32)
    raise ValueError(f"unsupported voxel type {array.dtype}")


def nifti_load(path: str | os.PathLike[str], *, modality: str = "OT") -> Volume:
    """Read a 2D or 3D NIfTI-1/NIfTI-2 file (``.nii`` or ``.nii.gz``) as a Volume.

    A 4D file holding one volume is read as 3D; more volumes, other image formats, complex or RGB voxels
    raise IngestError. Values: integers that fit in int16 become int16, others float32.
    """
    path = Path(path)
    nifti_check_declared(path)
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises ImageFileError, OSError, ValueError, EOFError, gzip errors
        raise IngestError(path, f"not a readable NIfTI file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise IngestError(path, f"not a NIfTI file ({type(img).__name__})")
    header = img.header
    shape = tuple(int(n) for n in img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 3:
        raise IngestError(
            path,
            f"{len(shape)}D NIfTI (shape {shape}) holds {int(np.prod(shape[3:]))} volumes; only 2D and 3D "
            "scans can be ingested (split the file into one volume per file)",
            "dim",
        )
    if len(shape) < 2:
        raise IngestError(path, f"NIfTI image of shape {shape} is not an image", "dim")
    dtype = header.get_data_dtype()
    if dtype.fields is not None or dtype.kind == "c":
        raise IngestError(path, f"voxel type {dtype} (RGB or complex) is not supported", "datatype")
    warnings: list[str] = []
    sform_code, qform_code = int(header["sform_code"]), int(header["qform_code"])
    affine = header.get_best_affine()
    if sform_code == 0 and qform_code == 0:
        warnings.append("no sform or qform: the affine comes from the voxel sizes only (orientation unknown)")
    try:
        data = np.asanyarray(img.dataobj).reshape(shape, order="F")
        array = _canonical_dtype(np.asarray(data, order="F"))
    except (ValueError, OSError, EOFError, MemoryError, TypeError) as exc:
        raise IngestError(path, f"voxel data cannot be read ({type(exc).__name__}: {exc})") from exc
    del data
    zooms = [float(z) for z in header.get_zooms()[: len(shape)]]
    if any(not np.isfinite(z) or z <= 0 for z in zooms):
        warnings.append(f"voxel sizes {zooms} are not positive: 1.0 mm assumed for those")
        zooms = [z if np.isfinite(z) and z > 0 else 1.0 for z in zooms]
    descrip = header["descrip"].item()
    return Volume(
        array=np.asfortranarray(array),
        affine=np.asarray(affine, dtype=np.float64),
        spacing=tuple(zooms),
        modality=modality or "OT",
        warnings=warnings,
        meta={"nifti": {"sform_code": sform_code, "qform_code": qform_code, "source_dtype": str(dtype)}},
        burned_in_annotation="NO",
        series_description=descrip.decode("latin-1").strip("\x00 ") if isinstance(descrip, bytes) else "",
    )


def _gray(img: Image.Image, warnings: list[str]) -> np.ndarray:
    """A grayscale ``(rows, columns)`` array: L/1/P/RGB(A)/CMYK -> uint8, 16-bit -> uint16, F -> float32."""
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(img)
        if arr.dtype.kind in "iu" and arr.size and int(arr.min()) >= 0 and int(arr.max()) <= 65535:
            return arr.astype(np.uint16)
        return arr.astype(np.float32)
    if mode == "F":
        return np.asarray(img, dtype=np.float32)
    if mode == "L":
        return np.array(img)
    if mode in ("LA", "La"):
        return np.array(img.getchannel("L"))
    rgb_img = img.convert("RGB")
    rgb = np.asarray(rgb_img)
    if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])):
        warnings.append(f"colour image ({mode}) converted to grayscale")
    return np.array(rgb_img.convert("L"))


def raster_load(path: str | os.PathLike[str], *, modality: str = "OT") -> Volume:
    """Read a PNG or JPEG radiograph as a 2D Volume ``(X, Y)``.

    Colour images become grayscale (ITU-R 601 luma), 8-bit stays uint8, 16-bit stays uint16; the EXIF
    orientation is applied. Spacing is unknown: 1.0 mm with a warning. Burned-in text cannot be ruled
    out for a bare picture, so ``burned_in_annotation`` is UNKNOWN. A corrupt or truncated file raises
    IngestError.
    """
    path = Path(path)
    warnings: list[str] = []
    try:
        with raster_open_bounded(
            path, name=str(path), field="file", max_pixels=_limit("IMAGE_MAX_PIXELS")
        ) as img:
            fmt = img.format or ""
            img.load()
            oriented = ImageOps.exif_transpose(img)
            if getattr(oriented, "n_frames", 1) > 1:
                warnings.append(f"{oriented.n_frames} frames in the file: the first one is used")
            pixels = _gray(oriented, warnings)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise IngestError(path, f"not a readable PNG/JPEG image ({type(exc).__name__}: {exc})") from exc
    if pixels.ndim != 2 or 0 in pixels.shape:
        raise IngestError(path, f"image of shape {pixels.shape} is not a 2D picture")
    warnings.append("pixel spacing unknown (PNG/JPEG): 1.0 mm assumed")
    return Volume(
        array=pixels.T,  # (rows, columns) C-ordered -> (X, Y) Fortran-ordered view
        affine=np.diag([-1.0, -1.0, 1.0, 1.0]),
        spacing=(1.0, 1.0),
        modality=modality or "OT",
        warnings=warnings,
        meta={"source_format": fmt.lower()},
        burned_in_annotation="UNKNOWN",
        series_description="",
    )
