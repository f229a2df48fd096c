"""The one codec of masks on a scan's grid: every mask file the platform writes or reads (a finding's
versions, region proposals, consensus masks, release labels, mask uploads once bounded) goes through here.

**Axis order.** A mask is a boolean array on its scan's canonical grid, the order of the canonical scan
arrays (``studies.ingest``): ``(X, Y)`` for a 2D scan, ``(X, Y, Z)`` for a 3D one, X = image column (left
to right in the stored image), Y = image row (top to bottom), Z = slice; the scan's affine maps voxel
indices to RAS+ mm. ``mask[x, y]`` is the pixel in column ``x``, row ``y`` of a radiograph as stored.

**Stored forms.**
- 2D: a 1-bit PNG, width = X, height = Y (rows = Y, columns = X: the picture as any viewer shows it).
- 3D: gzipped uint8 NIfTI-1 of 0/1 with the scan's affine (sform and qform code 1, mm), the voxels in the
  array's order (X fastest), one gzip member at level 1.
- Read back, a NIfTI file (2D or 3D, gzipped or not) is taken as it is: NIfTI arrays already are
  ``(X, Y[, Z])``.

**Pictures.** Code that works on pictures ``(rows, columns)`` — PNG exports, gaze maps, boxes normalised
to width and height — takes them from :func:`mask_rows` and gives them back with :func:`mask_from_rows`,
so that the one transpose between the two conventions is named where it happens.

``tests/studies/test_masks.py`` pins the convention on a real non-square radiograph. The module imports
no Django (the gaze label workers use it in processes without Django); ``mask_read`` reaches the storage.
"""

from __future__ import annotations

import gzip
import io
import os
import zlib

import nibabel as nib
import numpy as np
from PIL import Image

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
GZIP_MAGIC = b"\x1f\x8b"
GZIP_LEVEL = 1  # as the scan volumes (studies.ingest.volume_io): masks are written far more than read


class MaskError(ValueError):
    """A mask file that cannot be decoded: ``name`` (the file or storage key) and ``reason``."""

    def __init__(self, name: str, reason: str):
        self.name, self.reason = name, reason
        super().__init__(f"{name}: {reason}")


# --- encoding ---------------------------------------------------------------------------------------


def nifti_mask_gz(mask: np.ndarray, affine: np.ndarray) -> bytes:
    """A binary mask ``(X, Y[, Z])`` as gzipped uint8 NIfTI-1 bytes with ``affine`` (voxel → RAS+ mm).

    Written directly (header, then the voxels in Fortran order, deflated at level 1): on a 512×512×300
    mask ~0.2 s where nibabel's ``to_bytes`` and ``gzip`` took ~0.7 s."""
    mask = np.asarray(mask)
    if mask.ndim not in (2, 3):
        raise ValueError(f"mask must be 2D or 3D, got shape {mask.shape}")
    voxels = mask.view(np.uint8) if mask.dtype == np.bool_ else (mask > 0).view(np.uint8)
    image = nib.Nifti1Image(np.zeros((1,) * mask.ndim, np.uint8), np.asarray(affine, dtype=np.float64))
    header = image.header
    header.set_data_shape(mask.shape)
    header.set_data_dtype(np.uint8)
    header.set_xyzt_units("mm", "sec")
    header.set_sform(image.affine, code=1)
    header.set_qform(image.affine, code=1)
    header.set_slope_inter(1.0, 0.0)
    header["vox_offset"] = 352
    flat = voxels.ravel(order="F")  # a view for Fortran-ordered masks (those read from NIfTI), else a copy
    return gzip_member(header.binaryblock + b"\x00\x00\x00\x00", flat)


def gzip_member(*parts) -> bytes:
    """``parts`` (bytes or contiguous arrays) compressed in turn into one gzip member at ``GZIP_LEVEL``
    (what a browser inflates for ``Content-Encoding: gzip``), without joining them first."""
    deflate = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # wbits 31: a gzip member
    return b"".join(deflate.compress(part) for part in parts) + deflate.flush()


def mask_png(mask: np.ndarray) -> bytes:
    """A 2D mask ``(X, Y)`` as a 1-bit PNG, width = X, height = Y."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a PNG mask is 2D, got shape {mask.shape}")
    out = io.BytesIO()
    Image.fromarray(mask_rows(mask.astype(bool, copy=False))).convert("1").save(out, format="PNG")
    return out.getvalue()


def mask_encode(mask: np.ndarray, affine: np.ndarray) -> tuple[bytes, str]:
    """A mask ``(X, Y[, Z])`` as stored for its scan, and the file suffix: 2D as a 1-bit PNG (``.png``),
    3D as gzipped uint8 NIfTI with ``affine`` (``.nii.gz``)."""
    mask = np.asarray(mask)
    if mask.ndim == 2:
        return mask_png(mask), ".png"
    return nifti_mask_gz(mask, affine), ".nii.gz"


mask_file = mask_encode  # the name ml.preannotate and the benchmarks import (studies.ingest.volume_io)


# --- decoding ---------------------------------------------------------------------------------------


def mask_decode(data: bytes, *, name: str = "mask") -> np.ndarray:
    """A stored mask's bytes as booleans ``(X, Y[, Z])`` (non-zero = in): a PNG (rows = Y) or a NIfTI
    (gzipped or not). Anything else is a ``MaskError`` naming ``name``."""
    try:
        if data[:8] == PNG_MAGIC:
            with Image.open(io.BytesIO(data)) as image:
                return mask_from_rows(np.asarray(image.convert("L")) > 0)
        raw = gzip.decompress(data) if data[:2] == GZIP_MAGIC else data
        return np.asarray(nib.Nifti1Image.from_bytes(raw).dataobj) > 0
    except MaskError:
        raise
    except Exception as exc:  # PIL, gzip and nibabel raise many kinds; the caller gets one, naming the file
        raise MaskError(name, f"not a PNG or NIfTI mask ({type(exc).__name__}: {exc})") from exc


def mask_read(key: str) -> np.ndarray:
    """A mask in the project's storage (``key``) as booleans ``(X, Y[, Z])``."""
    # Imported here: the gaze label workers import this module in processes without Django.
    from django.core.files.storage import default_storage

    with default_storage.open(key, "rb") as fh:
        return mask_decode(fh.read(), name=key)


def mask_load(path: str | os.PathLike[str]) -> np.ndarray:
    """A mask file on disk as booleans ``(X, Y[, Z])``; a NIfTI file is read through nibabel (no copy of
    the file in memory)."""
    name = str(path)
    if name.endswith((".nii", ".nii.gz")):
        try:
            return np.asarray(nib.load(name).dataobj) != 0
        except Exception as exc:  # noqa: BLE001 - nibabel raises many kinds
            raise MaskError(name, f"not a readable NIfTI mask ({type(exc).__name__}: {exc})") from exc
    with open(name, "rb") as fh:
        return mask_decode(fh.read(), name=name)


# --- pictures ---------------------------------------------------------------------------------------


def mask_rows(mask: np.ndarray) -> np.ndarray:
    """A 2D mask ``(X, Y)`` as a picture ``(rows, columns)`` = ``(Y, X)`` (a view)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a picture is 2D, got shape {mask.shape}")
    return mask.T


def mask_from_rows(rows: np.ndarray) -> np.ndarray:
    """A picture ``(rows, columns)`` as a 2D mask ``(X, Y)`` (a view)."""
    rows = np.asarray(rows)
    if rows.ndim != 2:
        raise ValueError(f"a picture is 2D, got shape {rows.shape}")
    return rows.T


def mask_box(mask: np.ndarray) -> list[int] | None:
    """``[min..., max...]`` voxel indices of the mask's set voxels, max exclusive (the boxes of
    ``Annotation.box``); None for an empty mask."""
    where = np.nonzero(mask)
    if not where or where[0].size == 0:
        return None
    return [int(a.min()) for a in where] + [int(a.max()) + 1 for a in where]


# --- runs (the review screen's compact form) --------------------------------------------------------

RUN_DTYPE = np.dtype("<u4")  # little-endian uint32: a grid of up to 2**32 voxels (512×512×300 is 78 M)


def mask_runs(mask: np.ndarray) -> np.ndarray:
    """A mask ``(X, Y[, Z])`` as its runs of set voxels in the array's order with X fastest (the order of
    the stored NIfTI, and of NiiVue's drawing bitmap when the scan's voxels already are RAS):
    ``(n, 2)`` little-endian uint32 ``(start, length)``, starts ascending, runs separated by a gap."""
    mask = np.asarray(mask)
    if mask.size >= 2**32:
        raise ValueError(f"a mask of {mask.size} voxels does not fit 32-bit runs")
    flat = mask.ravel(order="F")  # a view for Fortran-ordered masks (those read from NIfTI)
    flat = flat.view(np.int8) if flat.dtype == np.bool_ else (flat != 0).view(np.int8)
    edges = np.flatnonzero(np.diff(flat, prepend=np.int8(0), append=np.int8(0)))
    runs = edges.reshape(-1, 2)  # rising edge (start), falling edge (end, exclusive)
    out = np.empty(runs.shape, RUN_DTYPE)
    out[:, 0] = runs[:, 0]
    out[:, 1] = runs[:, 1] - runs[:, 0]
    return out


def mask_from_runs(runs: np.ndarray | bytes, shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of :func:`mask_runs`: booleans of ``shape`` from ``(start, length)`` pairs (an array or
    their little-endian uint32 bytes). A run outside the grid is a ``ValueError``."""
    pairs = np.frombuffer(runs, RUN_DTYPE) if isinstance(runs, bytes | bytearray) else np.asarray(runs)
    pairs = pairs.reshape(-1, 2).astype(np.int64)
    size = int(np.prod(shape))
    ends = pairs[:, 0] + pairs[:, 1]
    if len(pairs) and (pairs[:, 0].min() < 0 or ends.max() > size):
        raise ValueError(f"a run reaches outside the {size} voxels of a {shape} grid")
    marks = np.zeros(size + 1, np.int32)
    np.add.at(marks, pairs[:, 0], 1)
    np.add.at(marks, ends, -1)
    return (np.cumsum(marks[:size]) > 0).reshape(shape, order="F")


def mask_index_sums(mask: np.ndarray) -> tuple[int, list[int]]:
    """The set voxels of a mask and, per axis, the sum of their indices (exact integers: the centroid is
    ``sums / n``, in any axis order or flip a viewer needs). From per-axis counts (no list of voxels)."""
    mask = np.asarray(mask).astype(bool, copy=False)
    n = int(np.count_nonzero(mask))
    sums = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        counts = np.count_nonzero(mask, axis=others) if others else mask.astype(np.int64)
        sums.append(int(np.dot(np.arange(mask.shape[axis], dtype=np.int64), np.asarray(counts, np.int64))))
    return n, sums


def mask_centroid(mask: np.ndarray) -> tuple[int, list[int] | None]:
    """The set voxels of a mask and their centroid's voxel indices, each rounded half up (as the review
    screen's ``Math.round``); ``(0, None)`` for an empty mask."""
    n, sums = mask_index_sums(mask)
    return n, centroid_of(n, sums)


def centroid_of(n: int, sums: list[int]) -> list[int] | None:
    """The centroid's voxel indices from ``mask_index_sums``, each rounded half up (``floor(sum / n +
    0.5)``, as the review screen's ``Math.round``); ``None`` for no voxel."""
    return [(2 * total + n) // (2 * n) for total in sums] if n else None
