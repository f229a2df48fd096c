"""DICOM pixel data: where it lies in the file, decoding it frame by frame, and writing rescaled frames
into a Fortran-ordered volume.

``dicom_read_headers`` parses each file's header from memory up to the pixel data, without copying or
decoding it; it records where the pixel data element's value lies in the file (:class:`PixelLocation`,
kept on the header as the plain Python attribute ``_groundlab_pixels``) so that loading reads just those
bytes again, without a second header parse. A header without that attribute (copied, or made
elsewhere) is read again whole.

Frames come out as ``(rows, columns)`` arrays of stored values (pydicom's decoders for compressed transfer
syntaxes, ``numpy.frombuffer`` for native little-endian grayscale data), and :class:`VolumeFiller` writes
``value * slope + intercept`` of each into ``array[:, :, k]`` (X = column, Y = row) of a volume it owns.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_color_lut, convert_color_space, get_decoder
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
)

from studies.ingest import jpeg_lossless
from studies.ingest.dicom_values import raw_int
from studies.ingest.types import DicomFile, IngestError

PIXEL_TAGS = {0x7FE00010: "PixelData", 0x7FE00008: "FloatPixelData", 0x7FE00009: "DoubleFloatPixelData"}
LOCATION_ATTR = "_groundlab_pixels"
_NATIVE_LE = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}
_PIXEL_MODULE = (
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "NumberOfFrames",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
    "RedPaletteColorLookupTableDescriptor",
    "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor",
    "RedPaletteColorLookupTableData",
    "GreenPaletteColorLookupTableData",
    "BluePaletteColorLookupTableData",
    "SegmentedRedPaletteColorLookupTableData",
    "SegmentedGreenPaletteColorLookupTableData",
    "SegmentedBluePaletteColorLookupTableData",
)
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as Pillow's RGB -> L
# The plugin tried first where pydicom would try a slower one first: CharLS (pyjpegls) decodes a 512x512
# 12-bit JPEG-LS CT slice in 4.7 ms, pylibjpeg-libjpeg in 17.5 ms; libjpeg-turbo (imagecodecs, registered
# here) a JPEG Lossless one in 3 ms, pylibjpeg-libjpeg in 10 ms (same values). The others follow if it
# fails on a file.
jpeg_lossless.register()
_FIRST_PLUGIN = {
    JPEGLSLossless: "pyjpegls",
    JPEGLSNearLossless: "pyjpegls",
    JPEGLossless: jpeg_lossless.LABEL,
    JPEGLosslessSV1: jpeg_lossless.LABEL,
}


@dataclass(frozen=True)
class PixelLocation:
    """Where a pixel data element's value lies in its file: ``offset`` and ``length`` in bytes."""

    tag: int
    offset: int
    length: int
    file_size: int


def transfer_syntax(header: Dataset) -> UID:
    meta = getattr(header, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    return UID(str(uid)) if uid else ImplicitVRLittleEndian


def pixel_location(ds: Dataset, data_size: int) -> tuple[PixelLocation | None, str | None]:
    """Locate and check the top-level pixel data of a dataset parsed from a file's bytes.

    Returns ``(location, problem)``: location is None where the file has no pixel data (its offset is -1
    for deflated files, whose offsets do not match the file: they are read again whole); problem names a
    truncation.
    """
    for tag, keyword in PIXEL_TAGS.items():
        if tag not in ds:
            continue
        raw = ds.get_item(tag)
        value = raw.value if raw is not None else None
        if value is None or len(value) == 0:
            return None, None
        declared = getattr(raw, "length", len(value))
        if declared != 0xFFFFFFFF and len(value) < declared:
            return None, f"file is truncated: {keyword} holds {len(value)} of {declared} bytes"
        expected = _native_size(ds, keyword)
        if tag == 0x7FE00010 and transfer_syntax(ds).is_encapsulated:
            expected = None
        if expected is not None and len(value) < expected:
            return None, f"file is truncated: {keyword} holds {len(value)} bytes, the image needs {expected}"
        offset = getattr(raw, "value_tell", None)
        if offset is None or transfer_syntax(ds) == DeflatedExplicitVRLittleEndian:
            return PixelLocation(tag, -1, len(value), data_size), None
        return PixelLocation(tag, int(offset), len(value), data_size), None
    return None, None


_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_ITEM, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE0DD


def locate_pixels(data: bytes | memoryview, pos: int, ds: Dataset) -> tuple[PixelLocation | None, str | None]:
    """Locate the pixel data element starting at byte ``pos`` of a file's ``data``: where a header parse
    with ``stop_before_pixels`` stopped (not for deflated files). Same result as :func:`pixel_location`
    without copying the pixel bytes. Encapsulated data is walked item by item to its sequence delimiter.
    """
    tsyntax = transfer_syntax(ds)
    little = tsyntax.is_little_endian
    end = "<" if little else ">"
    if pos + 8 > len(data):
        return None, None
    group, element = struct.unpack_from(end + "HH", data, pos)
    tag = (group << 16) | element
    keyword = PIXEL_TAGS.get(tag)
    if keyword is None:
        return None, None
    if tsyntax.is_implicit_VR:
        (length,), value_at = struct.unpack_from(end + "I", data, pos + 4), pos + 8
    elif bytes(data[pos + 4 : pos + 6]) in _LONG_VRS:
        if pos + 12 > len(data):
            return None, f"file is truncated: {keyword} header is cut"
        (length,), value_at = struct.unpack_from(end + "I", data, pos + 8), pos + 12
    else:
        (length,), value_at = struct.unpack_from(end + "H", data, pos + 6), pos + 8
    if length == 0xFFFFFFFF:
        stop = _sequence_end(data, value_at)
        if stop is None:
            return None, f"file is truncated: encapsulated {keyword} ends before its sequence delimiter"
        length = stop - value_at
    elif value_at + length > len(data):
        return None, f"file is truncated: {keyword} holds {len(data) - value_at} of {length} bytes"
    if length == 0:
        return None, None
    expected = None if tsyntax.is_encapsulated and tag == 0x7FE00010 else _native_size(ds, keyword)
    if expected is not None and length < expected:
        return None, f"file is truncated: {keyword} holds {length} bytes, the image needs {expected}"
    return PixelLocation(tag, value_at, length, len(data)), None


def _sequence_end(data: bytes | memoryview, at: int) -> int | None:
    """Offset of the sequence delimiter that ends encapsulated pixel data starting at ``at``."""
    size = len(data)
    while at + 8 <= size:
        tag_group, tag_element, length = struct.unpack_from("<HHI", data, at)
        tag = (tag_group << 16) | tag_element
        if tag == _SEQUENCE_END:
            return at
        if tag != _ITEM or length == 0xFFFFFFFF:
            return None
        at += 8 + length
    return None


def _native_size(ds: Dataset, keyword: str) -> int | None:
    rows, cols = raw_int(ds, "Rows"), raw_int(ds, "Columns")
    bits = {"FloatPixelData": 32, "DoubleFloatPixelData": 64}.get(keyword) or raw_int(ds, "BitsAllocated")
    if not rows or not cols or not bits:
        return None
    frames = raw_int(ds, "NumberOfFrames") or 1
    samples = raw_int(ds, "SamplesPerPixel") or 1
    return (rows * cols * frames * samples * bits + 7) // 8


def _read_pixel_bytes(f: DicomFile) -> tuple[int, bytes]:
    """The raw pixel data element value of ``f`` (bytes exactly as pydicom would hold them)."""
    loc: PixelLocation | None = getattr(f.header, LOCATION_ATTR, None)
    try:
        if loc is not None and loc.offset >= 0:
            if os.path.getsize(f.path) != loc.file_size:
                raise IngestError(f.path, "file changed since its header was read")
            with open(f.path, "rb") as fh:
                fh.seek(loc.offset)
                data = fh.read(loc.length)
            if len(data) != loc.length:
                raise IngestError(f.path, "file is truncated", "PixelData")
            return loc.tag, data
        ds = pydicom.dcmread(f.path)
    except IngestError:
        raise
    except Exception as exc:  # unreadable now: removed, permissions, broken
        raise IngestError(f.path, f"could not read pixel data: {exc}", "PixelData") from exc
    for tag in PIXEL_TAGS:
        if tag in ds:
            return tag, ds[tag].value
    raise IngestError(f.path, "no pixel data", "PixelData")


def _pixel_dataset(f: DicomFile, tag: int, data: bytes) -> Dataset:
    """A small dataset with just the image pixel module and pixel data, for pydicom's decoders."""
    pds = Dataset()
    pds.file_meta = FileMetaDataset()
    pds.file_meta.TransferSyntaxUID = transfer_syntax(f.header)
    for keyword in _PIXEL_MODULE:
        elem = f.header.get(keyword)
        if elem is not None:
            pds[keyword] = f.header[keyword]
    encapsulated = pds.file_meta.TransferSyntaxUID.is_encapsulated
    vr = {0x7FE00008: "OF", 0x7FE00009: "OD"}.get(tag, "OB" if encapsulated else "OW")
    pds.add_new(tag, vr, data)
    return pds


def iter_frames(f: DicomFile) -> Iterator[np.ndarray]:
    """Yield the frames of one file in file order, each decoded once.

    Each frame is ``(rows, columns)`` of stored values: integers (bits beyond BitsStored cleared, signed
    values sign-extended) or floats (Float/DoubleFloatPixelData). Colour frames become gray: the Y channel
    of YBR_FULL(_422) data, else luma ``0.299 R + 0.587 G + 0.114 B`` of RGB (palette colour through its
    lookup table, 16-bit tables scaled to 8 bits), rounded.
    """
    tag, data = _read_pixel_bytes(f)
    ds = f.header
    tsyntax = transfer_syntax(ds)
    if tsyntax == DeflatedExplicitVRLittleEndian:  # pixel bytes were read from the inflated dataset
        tsyntax = ExplicitVRLittleEndian
    rows, cols, nframes = int(ds.Rows), int(ds.Columns), max(1, f.number_of_frames)
    samples = int(ds.get("SamplesPerPixel") or 1)
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    if tsyntax in _NATIVE_LE and samples == 1 and photometric != "PALETTE COLOR":
        fast = _native_frames(f, tag, data, rows, cols, nframes)
        if fast is not None:
            yield from fast
            return
    decoder = get_decoder(tsyntax)
    if not decoder.is_available:
        name = getattr(tsyntax, "name", str(tsyntax))
        raise IngestError(f.path, f"no decoder is installed for transfer syntax {name}", "TransferSyntaxUID")
    pds = _pixel_dataset(f, tag, data)
    del data
    first = _FIRST_PLUGIN.get(tsyntax, "")
    plugins = [first, ""] if first in decoder.available_plugins else [""]
    for plugin in plugins:
        yielded = False
        try:
            for arr, meta in decoder.iter_array(pds, as_rgb=False, decoding_plugin=plugin):
                yielded = True
                yield _to_gray(arr, pds, str(meta.get("photometric_interpretation", photometric)).upper())
            return
        except IngestError:
            raise
        except Exception as exc:
            if plugin and not yielded:  # the preferred plugin failed on this file: pydicom's order next
                continue
            raise IngestError(f.path, f"pixel data cannot be decoded: {exc}", "PixelData") from exc


def _native_frames(
    f: DicomFile, tag: int, data: bytes, rows: int, cols: int, nframes: int
) -> list[np.ndarray] | None:
    ds = f.header
    if tag == 0x7FE00008:
        dtype = np.dtype("<f4")
    elif tag == 0x7FE00009:
        dtype = np.dtype("<f8")
    else:
        bits = int(ds.get("BitsAllocated") or 0)
        if bits not in (8, 16, 32):
            return None  # 1-bit and odd sizes: pydicom's native decoder
        kind = "i" if int(ds.get("PixelRepresentation") or 0) == 1 else "u"
        dtype = np.dtype(f"<{kind}{bits // 8}")
    count = rows * cols * nframes
    if len(data) < count * dtype.itemsize:
        raise IngestError(
            f.path,
            f"pixel data holds {len(data)} bytes, the image needs {count * dtype.itemsize}",
            "PixelData",
        )
    arr = np.frombuffer(data, dtype=dtype, count=count).reshape(nframes, rows, cols)
    if dtype.kind in "iu":
        stored = int(ds.get("BitsStored") or dtype.itemsize * 8)
        shift = dtype.itemsize * 8 - stored
        if 0 < shift < dtype.itemsize * 8:
            if dtype.kind == "i":  # sign-extend from BitsStored
                arr = (arr << shift) >> shift
            elif int(arr.max()) >> stored:
                arr = arr & np.array((1 << stored) - 1, dtype=dtype)
    return list(arr)


def _to_gray(arr: np.ndarray, pds: Dataset, photometric: str) -> np.ndarray:
    """One decoded frame as gray ``(rows, columns)``; ``photometric`` is the decoder's output space."""
    if photometric == "PALETTE COLOR" and arr.ndim == 2:
        arr = apply_color_lut(arr, pds)
        descriptor = pds.get("RedPaletteColorLookupTableDescriptor")
        if descriptor is not None and int(descriptor[2]) == 16:
            arr = arr >> 8
        photometric = "RGB"
    if arr.ndim == 2:
        return arr
    if photometric.startswith("YBR_FULL"):
        return arr[..., 0]
    if photometric != "RGB":
        arr = convert_color_space(arr, photometric, "RGB")
    rgb = arr[..., :3].astype(np.float64)
    gray = np.rint(rgb[..., 0] * _LUMA[0] + rgb[..., 1] * _LUMA[1] + rgb[..., 2] * _LUMA[2])
    return gray.astype(np.int32) if arr.dtype.kind in "iu" and arr.dtype.itemsize <= 2 else gray


class VolumeFiller:
    """Owns the output array and writes rescaled frames into it.

    ``shape`` is ``(X, Y)`` or ``(X, Y, Z)`` (X = column, Y = row); the array is Fortran-ordered so that
    ``array[:, :, k].T`` is a C-contiguous ``(rows, columns)`` view of slice k. The dtype is int16 while
    every value written is an integer in int16 range, else float32: an int16 array is upgraded once, when
    a frame does not fit (peak memory then volume int16 + float32 bytes). ``array`` (Fortran-ordered, of
    ``shape``): write into this one instead of a new one (shared memory that worker processes fill).
    """

    def __init__(self, shape: tuple[int, ...], *, integral: bool, array: np.ndarray | None = None):
        if array is None:
            array = np.empty(shape, dtype=self.dtype_for(integral), order="F")
        self.array = array

    @staticmethod
    def dtype_for(integral: bool) -> np.dtype:
        return np.dtype(np.int16 if integral else np.float32)

    def upgrade(self) -> None:
        """Make the array float32 (a copy; int16 values are exact in float32)."""
        if self.array.dtype == np.int16:
            self.array = self.array.astype(np.float32, order="F")

    def put(
        self,
        k: int | None,
        frame: np.ndarray,
        *,
        slope: float = 1.0,
        intercept: float = 0.0,
        invert_range: tuple[int, int] | None = None,
        value_range: tuple[int, int] | None = None,
        upgrade: bool = True,
    ) -> bool:
        """Write ``frame * slope + intercept`` (frame: rows, columns) into slice k (None: a 2D volume).

        ``invert_range`` (MONOCHROME1): stored values v become ``lo + hi - v`` before the rescale.
        ``value_range``: the range stored values can take (BitsStored); when its rescaled ends fit int16
        the frame is not scanned for its minimum and maximum. A frame that does not fit an int16 array
        makes it float32, unless ``upgrade`` is false: then nothing is written and the answer is False.
        """
        if frame.ndim != 2:
            raise ValueError(f"frame must be 2D, got shape {frame.shape}")
        if invert_range is not None:
            lo, hi = invert_range
            wide = np.int64 if frame.dtype.kind in "iub" else np.float64
            frame = (lo + hi) - frame.astype(wide)
        integral = frame.dtype.kind in "iub" and float(slope).is_integer() and float(intercept).is_integer()
        target = self.array.T if k is None else self.array[:, :, k].T
        if integral and self.array.dtype == np.int16:
            if frame.size == 0:
                return True
            fits = False
            if value_range is not None and invert_range is None and frame.dtype.itemsize <= 2:
                lo, hi = value_range  # the values BitsStored allows: no need to scan the frame
                ends = (lo * slope + intercept, hi * slope + intercept)
                fits = np.iinfo(frame.dtype).min <= lo and -32768 <= min(ends) and max(ends) <= 32767
            if not fits:
                lo, hi = int(frame.min()), int(frame.max())
                ends = (lo * slope + intercept, hi * slope + intercept)
                fits = -32768 <= min(ends) and max(ends) <= 32767
            if fits:
                if slope == 1 and intercept == 0:
                    target[...] = frame
                elif (
                    slope == 1 and frame.dtype.itemsize == 2 and hi <= 32767 and -32768 <= intercept <= 32767
                ):
                    # values, offset and results all fit int16: add in int16, no conversion pass
                    np.add(frame.view(np.int16), np.int16(intercept), out=target)
                elif slope == 1:  # one pass, computed in int32 and stored as int16
                    np.add(frame, np.int32(intercept), out=target, casting="unsafe")
                else:
                    values = frame.astype(np.int32)
                    values *= int(slope)
                    values += int(intercept)
                    target[...] = values
                return True
        if self.array.dtype == np.int16:
            if not upgrade:
                return False
            self.upgrade()
            target = self.array.T if k is None else self.array[:, :, k].T
        if slope == 1 and intercept == 0:
            target[...] = frame
        else:
            target[...] = frame * float(slope) + float(intercept)
        return True


def stored_range(header: Any) -> tuple[int, int] | None:
    """The range of stored integer values that BitsStored and PixelRepresentation allow."""
    try:
        bits = int(header.get("BitsStored") or header.get("BitsAllocated"))
    except (TypeError, ValueError):
        return None
    if not 1 <= bits <= 32:
        return None
    if int(header.get("PixelRepresentation") or 0) == 1:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1
