"""Bounded decoding of compressed images: gzip NIfTI and PNG/JPEG rasters, never inflated past what they
declare.

Each reader looks at the declared size first (a NIfTI header's ``dim`` and ``datatype``; a raster's
width and height from its IHDR or SOF), refuses a file whose declared size differs from the target
shape or exceeds a limit, and only then inflates, in pieces of at most ``CHUNK`` bytes, stopping past
the declared size: a gzip stream that inflates further than its header says is refused after reading
one byte more than the header promised, so a 1 MB file that would inflate to 1 GiB costs the reader
its declared size at most, and nothing when that size is refused.

NIfTI arrays are returned as stored, axis order ``(X, Y[, Z])`` (NIfTI i, j, k), Fortran order, the
file's scaling (``scl_slope``/``scl_inter``) applied. Raster sizes are ``(width, height)`` = (X, Y).

Pure functions, no Django: they also run in the ingest worker processes. Errors are ``IngestError``
naming the file and the field (``dim``, ``datatype``, ``vox_offset``, ``file``, or the caller's).
"""

from __future__ import annotations

import io
import math
import os
import zlib
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from studies.ingest.types import IngestError

CHUNK = 1024 * 1024  # the most bytes inflated (or read) at a time
GZIP_MAGIC = b"\x1f\x8b"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NIFTI_MAX_EXTENSION_BYTES = 64 * 1024 * 1024  # header extensions before the voxels (vox_offset)


class _Inflater:
    """The (possibly gzipped) content of ``source``, read ``n`` bytes at a time: never more than ``n``
    bytes are inflated per call, so memory follows what the caller asks for, not what the stream holds.

    ``max_input`` bounds the compressed bytes read; with ``keep`` the compressed bytes are kept
    (``compressed``) for callers that store a valid upload as it came."""

    def __init__(self, source: IO[bytes], *, name: str, field: str, max_input: int | None, keep: bool):
        self._source, self._name, self._field = source, name, field
        self.max_input, self._keep = max_input, keep
        self.input_bytes = 0
        self._kept: list[bytes] = []
        self._tail = self._next_input(64 * 1024)
        self.gzipped = self._tail[:2] == GZIP_MAGIC
        self._d = zlib.decompressobj(31) if self.gzipped else None

    @property
    def compressed(self) -> bytes:
        return b"".join(self._kept)

    def _next_input(self, size: int = CHUNK) -> bytes:
        data = self._source.read(size)
        if not data:
            return b""
        self.input_bytes += len(data)
        if self.max_input is not None and self.input_bytes > self.max_input:
            raise IngestError(
                self._name, f"the file is larger than the {self.max_input} bytes it may take", self._field
            )
        if self._keep:
            self._kept.append(data)
        return data

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes of content (fewer only at its end)."""
        out = bytearray()
        while len(out) < n:
            data = self._tail or self._next_input()
            self._tail = b""
            if not data:
                break
            if self._d is None:
                take = n - len(out)
                out += data[:take]
                self._tail = data[take:]
                continue
            try:
                out += self._d.decompress(data, n - len(out))
            except zlib.error as exc:
                raise IngestError(self._name, f"not a valid gzip stream ({exc})", self._field) from exc
            self._tail = self._d.unconsumed_tail
            if self._d.eof:  # a gzip member ended: a further member may follow (as gzip allows)
                self._tail = self._d.unused_data
                self._d = zlib.decompressobj(31)
        return bytes(out)

    def skip(self, n: int) -> int:
        """Read and drop ``n`` bytes, a piece at a time; returns how many there were."""
        done = 0
        while done < n:
            piece = self.read(min(CHUNK, n - done))
            if not piece:
                break
            done += len(piece)
        return done


@dataclass
class NiftiDeclared:
    """What a NIfTI header declares: ``shape`` (X, Y[, Z], trailing 1s dropped), voxel ``dtype``, where
    the voxels start (``vox_offset``) and how many bytes they take (``data_bytes``)."""

    header: Any  # nibabel Nifti1Header or Nifti2Header
    shape: tuple[int, ...]
    dtype: np.dtype
    vox_offset: int
    data_bytes: int
    header_bytes: int
    gzipped: bool

    @property
    def total_bytes(self) -> int:
        return self.vox_offset + self.data_bytes


@dataclass
class NiftiRead:
    """A NIfTI read within bounds: its declaration, the voxels ``(X, Y[, Z])`` (scaling applied), the
    header's best affine (voxel -> RAS+ mm) and, when asked for, the compressed bytes as they came."""

    declared: NiftiDeclared
    array: np.ndarray
    affine: np.ndarray
    compressed: bytes | None = None


def _declared_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    shape = tuple(int(n) for n in shape)
    while len(shape) > 2 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def _nifti_header(inflater: _Inflater, *, name: str, field: str) -> NiftiDeclared:
    import nibabel as nib

    head = inflater.read(348)
    if len(head) < 348:
        raise IngestError(name, f"{len(head)} bytes: too short to be a NIfTI file", field)
    sizes = {int.from_bytes(head[:4], "little"), int.from_bytes(head[:4], "big")}
    if 540 in sizes:
        head += inflater.read(540 - 348)
        klass = nib.Nifti2Header
    elif 348 in sizes:
        klass = nib.Nifti1Header
    else:
        raise IngestError(name, "not a NIfTI-1 or NIfTI-2 file (no header size of 348 or 540)", field)
    try:
        header = klass.from_fileobj(io.BytesIO(head), check=True)
    except Exception as exc:  # nibabel raises HeaderDataError, ValueError ...
        raise IngestError(name, f"not a readable NIfTI header ({exc})", field) from exc
    if bytes(header["magic"].item()).rstrip(b"\x00") not in (b"n+1", b"n+2"):
        raise IngestError(
            name, "not a single-file NIfTI (.nii or .nii.gz); header/image pairs are not read", field
        )
    try:
        dtype = header.get_data_dtype()
    except Exception as exc:
        raise IngestError(name, f"unknown voxel datatype ({exc})", "datatype") from exc
    dims = [int(n) for n in header["dim"]]
    if not 1 <= dims[0] <= 7 or any(n < 1 for n in dims[1 : dims[0] + 1]):
        raise IngestError(name, f"dim {dims} declares no valid shape", "dim")
    shape = _declared_shape(header.get_data_shape())
    vox_offset = int(header.get_data_offset())
    if vox_offset < len(head) or vox_offset > len(head) + NIFTI_MAX_EXTENSION_BYTES:
        raise IngestError(
            name,
            f"voxels declared at byte {vox_offset}, outside "
            f"{len(head)}..{len(head) + NIFTI_MAX_EXTENSION_BYTES}",
            "vox_offset",
        )
    return NiftiDeclared(
        header=header,
        shape=shape,
        dtype=dtype,
        vox_offset=vox_offset,
        data_bytes=math.prod(shape) * dtype.itemsize,
        header_bytes=len(head),
        gzipped=inflater.gzipped,
    )


def _nifti_check(
    declared: NiftiDeclared, *, name: str, field: str, expect_shape: tuple[int, ...] | None, max_bytes: int
) -> None:
    if expect_shape is not None and declared.shape != _declared_shape(tuple(expect_shape)):
        raise IngestError(
            name,
            f"declares shape {list(declared.shape)} (X, Y[, Z]); the scan's grid is {list(expect_shape)}",
            field,
        )
    if declared.data_bytes > max_bytes:
        raise IngestError(
            name,
            f"declares {declared.data_bytes} bytes of voxels ({list(declared.shape)} x {declared.dtype}), "
            f"over the limit of {max_bytes} bytes",
            field,
        )


def nifti_declared(
    source: IO[bytes], *, name: str, field: str = "file", max_input: int | None = None
) -> NiftiDeclared:
    """The header of a ``.nii`` or ``.nii.gz`` stream, inflating no more than the header."""
    inflater = _Inflater(source, name=name, field=field, max_input=max_input, keep=False)
    return _nifti_header(inflater, name=name, field=field)


def nifti_read_bounded(
    source: IO[bytes],
    *,
    name: str,
    field: str,
    max_bytes: int,
    expect_shape: tuple[int, ...] | None = None,
    keep_compressed: bool = False,
) -> NiftiRead:
    """Read a ``.nii``/``.nii.gz`` stream: header first, refused when its shape is not ``expect_shape``
    (trailing 1s ignored) or its voxels exceed ``max_bytes``; then the voxels, inflated a piece at a
    time up to the declared size and refused when the stream goes on past it or ends before it.
    Compressed input is bounded too: it may not exceed the declared content by more than gzip's
    overhead on incompressible data."""
    inflater = _Inflater(source, name=name, field=field, max_input=None, keep=keep_compressed)
    declared = _nifti_header(inflater, name=name, field=field)
    _nifti_check(declared, name=name, field=field, expect_shape=expect_shape, max_bytes=max_bytes)
    # gzip never needs more than 0.1% + a few bytes over its content; 1 MiB of slack covers any writer.
    inflater.max_input = declared.total_bytes + declared.total_bytes // 100 + CHUNK
    if inflater.input_bytes > inflater.max_input:
        raise IngestError(name, "the file is larger than the image it declares", field)
    skipped = inflater.skip(declared.vox_offset - declared.header_bytes)
    if skipped < declared.vox_offset - declared.header_bytes:
        raise IngestError(name, "the file ends before its voxels start", "vox_offset")
    buffer = bytearray(declared.data_bytes)
    view = memoryview(buffer)
    done = 0
    while done < declared.data_bytes:
        piece = inflater.read(min(CHUNK, declared.data_bytes - done))
        if not piece:
            raise IngestError(
                name,
                f"the file ends after {done} of the {declared.data_bytes} voxel bytes it declares",
                field,
            )
        view[done : done + len(piece)] = piece
        done += len(piece)
    if declared.gzipped and inflater.read(1):
        raise IngestError(
            name,
            f"the gzip stream inflates past the {declared.total_bytes} bytes its header declares; refused",
            field,
        )
    array = np.frombuffer(buffer, dtype=declared.dtype).reshape(declared.shape, order="F")
    slope, inter = declared.header.get_slope_inter()
    if slope is not None and (slope != 1.0 or (inter or 0.0) != 0.0):
        array = array * slope + (inter or 0.0)
    return NiftiRead(
        declared=declared,
        array=array,
        affine=np.asarray(declared.header.get_best_affine(), dtype=np.float64),
        compressed=inflater.compressed if keep_compressed else None,
    )


def raster_open_bounded(
    source: Any,
    *,
    name: str,
    field: str,
    max_pixels: int,
    expect_size: tuple[int, int] | None = None,
):
    """A PNG/JPEG opened (header read, pixels not decoded) after its declared ``(width, height)`` was
    checked against ``expect_size`` and ``max_pixels``. ``source`` is a path or a binary file object.
    The caller decodes (``load()``) within the size checked here: Pillow decodes exactly the declared
    pixels, whatever the compressed stream holds beyond them."""
    from PIL import Image, UnidentifiedImageError

    declared = _png_declared_size(source)
    if declared is not None:  # checked before Pillow reads anything (it refuses huge ones on its own terms)
        _raster_check(declared, name=name, field=field, max_pixels=max_pixels, expect_size=expect_size)
    try:
        image = Image.open(source)
    except Image.DecompressionBombError as exc:
        raise IngestError(name, f"declares more pixels than may be decoded ({exc})", field) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise IngestError(
            name, f"not a readable PNG/JPEG image ({type(exc).__name__}: {exc})", field
        ) from exc
    try:
        _raster_check(image.size, name=name, field=field, max_pixels=max_pixels, expect_size=expect_size)
    except IngestError:
        image.close()
        raise
    return image


def _raster_check(
    size: tuple[int, int], *, name: str, field: str, max_pixels: int, expect_size: tuple[int, int] | None
) -> None:
    width, height = size
    if expect_size is not None and (width, height) != tuple(expect_size):
        raise IngestError(
            name,
            f"declares {width}x{height} px; the image it belongs to is {expect_size[0]}x{expect_size[1]}",
            field,
        )
    if width * height > max_pixels:
        raise IngestError(name, f"declares {width}x{height} px, over the limit of {max_pixels} pixels", field)


def _png_declared_size(source: Any) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR (the first chunk), or None when ``source`` is not a PNG."""
    if isinstance(source, str | bytes | os.PathLike):
        with open(source, "rb") as fh:
            head = fh.read(24)
    else:
        where = source.tell()
        head = source.read(24)
        source.seek(where)
    if len(head) < 24 or head[:8] != PNG_MAGIC or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
