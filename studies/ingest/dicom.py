"""DICOM reading without the database: headers, series grouping, and one series' pixels as a Volume.

``dicom_read_headers`` reads each file once (sha256 of its bytes, header parsed from memory, pixel data
not decoded and not kept), ``dicom_group_series`` groups headers by original SeriesInstanceUID, files
without one by what they share, filling in the identifiers anonymised files lack as SimpleITK, dcm2niix
and 3D Slicer do (``dicom_series``: the rule, its sources, the warnings), and ``dicom_load_series``
builds the canonical volume: array ``(X, Y, Z)`` (X = image column, Y = image row,
Z = slices ordered along the slice normal) or ``(X, Y)`` for radiographs, Fortran-ordered, values
rescaled (CT in Hounsfield units), affine voxel -> RAS+ mm. Geometry rules: ``dicom_geometry``; pixel
decoding: ``dicom_pixels``; metadata: ``dicom_meta``.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path
from typing import Any

import pydicom
from pydicom.datadict import dictionary_has_tag
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian

from studies.ingest.dicom_decode import file_jobs, series_decode
from studies.ingest.dicom_geometry import Frame, frames_of, plane_geometry, stack_geometry
from studies.ingest.dicom_meta import burned_in, pet_meta, window_meta
from studies.ingest.dicom_pixels import (
    LOCATION_ATTR,
    PIXEL_TAGS,
    locate_pixels,
    pixel_location,
    stored_range,
    transfer_syntax,
)
from studies.ingest.dicom_series import (
    dicom_group_series,
    fallback_warnings,
    instance_uid,
    series_identifiers_fill,
)
from studies.ingest.dicom_values import numbers, raw, raw_int, raw_text, text
from studies.ingest.types import DicomFile, IngestError, Volume

__all__ = ["dicom_group_series", "dicom_load_series", "dicom_read_headers"]

# Projection radiography: a single instance is a 2D image even when it carries a position.
PROJECTION_MODALITIES = {"CR", "DX", "MG", "IO", "PX", "RG", "DG"}
MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"
READ_THREADS = max(1, min(4, os.cpu_count() or 1))
READ_AHEAD = 8  # files queued on the reader threads
HEAD_BYTES = 32 * 1024  # headers are parsed from a copy of this much of the file when they end within it
_thread_buffers = threading.local()


def dicom_read_headers(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[DicomFile], list[IngestError]]:
    """Read the header of each file; never raises for a bad file.

    Each file is read once (on a few reader threads): its bytes give ``checksum`` (sha256) and the
    header, parsed up to the pixel data. ``header`` holds no pixel data (only where it lies in the file
    is remembered, for ``dicom_load_series``, nor elements after it such as trailing padding);
    ``has_pixels`` says whether there was any. ``position``/``orientation`` are
    ImagePositionPatient (LPS mm) / ImageOrientationPatient, for Enhanced multi-frame files those of the
    first frame. An empty or absent SOPInstanceUID is filled in (``dicom_series.instance_uid``), and an
    empty StudyInstanceUID when the series is known; an empty SeriesInstanceUID is left for
    ``dicom_group_series``. Returns (headers, errors): an error per non-DICOM, unreadable (nothing in it
    parses as a standard DICOM element), truncated or unusable file, naming the file and reason.
    """
    files: list[DicomFile] = []
    errors: list[IngestError] = []
    todo = iter([Path(p) for p in paths])
    # Reading and hashing release the GIL, so a few threads overlap them with header parsing.
    with ThreadPoolExecutor(READ_THREADS) as pool:
        pending = deque((path, pool.submit(_read_header, path)) for path in islice(todo, READ_AHEAD))
        while pending:
            path, future = pending.popleft()
            following = next(todo, None)
            if following is not None:
                pending.append((following, pool.submit(_read_header, following)))
            try:
                files.append(future.result())
            except IngestError as exc:
                errors.append(exc)
            except Exception as exc:  # a malformed file must never stop the others
                errors.append(IngestError(path, f"not a readable DICOM file ({type(exc).__name__}: {exc})"))
    return files, errors


def _file_bytes(path: Path) -> memoryview:
    """The whole file in this thread's reusable buffer (valid until the thread's next call)."""
    with open(path, "rb", buffering=0) as fh:
        size = os.fstat(fh.fileno()).st_size
        buf = getattr(_thread_buffers, "buf", None)
        if buf is None or len(buf) < size:
            buf = _thread_buffers.buf = bytearray(max(size, 1 << 20))
        view = memoryview(buf)[:size]
        got = 0
        while got < size:
            n = fh.readinto(view[got:])
            if not n:
                break
            got += n
    return view[:got]


def _looks_like_bare_dataset(data: memoryview) -> bool:
    """DICOM written without the 128-byte preamble and 'DICM' (old ACR-NEMA style writers)."""
    if len(data) < 8:
        return False
    group = int.from_bytes(data[0:2], "little")
    return group in (0x0002, 0x0008)


def _parse(data: bytes, force: bool) -> tuple[Dataset, int]:
    """Header of ``data`` up to the pixel data, and where it stopped."""
    stream = io.BytesIO(data)  # shares ``data``: no copy
    ds = pydicom.dcmread(stream, force=force, stop_before_pixels=True)
    return ds, stream.tell()


def _at_pixel_tag(data: memoryview | bytes, pos: int, ds: Dataset) -> bool:
    if pos + 12 > len(data):
        return False
    group, element = struct.unpack_from("<HH" if transfer_syntax(ds).is_little_endian else ">HH", data, pos)
    return ((group << 16) | element) in PIXEL_TAGS


def _read_header(path: Path) -> DicomFile:
    """Read, hash and parse one file (runs on a reader thread)."""
    try:
        data = _file_bytes(path)
    except OSError as exc:
        raise IngestError(path, f"cannot be read ({exc.strerror or exc})") from exc
    checksum = hashlib.sha256(data).hexdigest()
    force = False
    if len(data) < 132 or bytes(data[128:132]) != b"DICM":
        if not _looks_like_bare_dataset(data):
            raise IngestError(path, "not a DICOM file (no 'DICM' marker at byte 128)")
        force = True
    try:
        ds, pos = None, 0
        if len(data) > HEAD_BYTES:  # most headers end well before: parse a copy of the start only
            try:
                ds, pos = _parse(bytes(data[:HEAD_BYTES]), force)
                if not _at_pixel_tag(data, pos, ds) or transfer_syntax(ds) == DeflatedExplicitVRLittleEndian:
                    ds = None
            except Exception:
                ds = None
        if ds is None:
            whole = bytes(data)
            ds, pos = _parse(whole, force)
            if transfer_syntax(ds) == DeflatedExplicitVRLittleEndian:  # offsets are in the inflated data
                location, problem = pixel_location(pydicom.dcmread(io.BytesIO(whole), force=force), len(data))
            else:
                location, problem = locate_pixels(data, pos, ds)
            del whole
        else:
            location, problem = locate_pixels(data, pos, ds)
    except Exception as exc:
        raise IngestError(path, f"not a readable DICOM file ({type(exc).__name__}: {exc})") from exc
    if problem:
        raise IngestError(path, problem, "PixelData")
    if len(ds) == 0:
        raise IngestError(path, "no DICOM elements could be read (truncated or not a DICOM dataset)")
    if not any(dictionary_has_tag(tag) for tag in ds.keys()):
        raise IngestError(
            path,
            f"not a readable DICOM file (none of the {len(ds)} elements read after the preamble is a "
            "standard DICOM element: random or corrupt bytes)",
        )
    ds.buffer = None  # do not keep the file's bytes alive through the header
    ds.filename = str(path)
    ds.fileobj_type = open
    if location is not None:
        setattr(ds, LOCATION_ATTR, location)
    media_class = text(ds.file_meta.get("MediaStorageSOPClassUID")) if ds.get("file_meta") else ""
    if media_class == MEDIA_DIRECTORY:
        raise IngestError(path, "a DICOMDIR (media directory), not an image instance", "SOPClassUID")
    sop_uid, fallback = instance_uid(ds, checksum)
    if fallback:
        ds.SOPInstanceUID = sop_uid
    position, orientation = _first_frame_plane(ds, path)
    f = DicomFile(
        path=path,
        checksum=checksum,
        sop_uid=sop_uid,
        series_uid=raw_text(ds, "SeriesInstanceUID"),
        study_uid=raw_text(ds, "StudyInstanceUID"),
        modality=raw_text(ds, "Modality").upper(),
        header=ds,
        rows=raw_int(ds, "Rows"),
        columns=raw_int(ds, "Columns"),
        number_of_frames=max(1, raw_int(ds, "NumberOfFrames") or 1),
        position=position,  # type: ignore[arg-type]
        orientation=orientation,
        has_pixels=location is not None,
        fallbacks=[fallback] if fallback else [],
    )
    if f.series_uid:  # else its series is formed, and then its study filled in, by dicom_group_series
        series_identifiers_fill(f)
    return f


def _first_frame_plane(ds: Dataset, path: Path) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    position = numbers(raw(ds, "ImagePositionPatient"), 3, path, "ImagePositionPatient")
    orientation = numbers(raw(ds, "ImageOrientationPatient"), 6, path, "ImageOrientationPatient")
    groups = []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared = ds.get("SharedFunctionalGroupsSequence")
    if per_frame:
        groups.append(per_frame[0])
    if shared:
        groups.append(shared[0])
    for item in groups:
        plane = item.get("PlanePositionSequence")
        if position is None and plane:
            position = numbers(raw(plane[0], "ImagePositionPatient"), 3, path, "ImagePositionPatient")
        orient = item.get("PlaneOrientationSequence")
        if orientation is None and orient:
            orientation = numbers(
                raw(orient[0], "ImageOrientationPatient"), 6, path, "ImageOrientationPatient"
            )
    return position, orientation


def dicom_load_series(files: Sequence[DicomFile]) -> Volume:
    """Decode one series into a canonical :class:`Volume`.

    3D: ``array`` ``(X, Y, Z)``, slices ordered by position along the slice normal (not InstanceNumber),
    Z spacing the median step (uneven steps and likely missing slices are reported in ``warnings``);
    Enhanced multi-frame files contribute one slice per frame. 2D (projection radiographs, or a single
    instance without ImagePositionPatient): ``array`` ``(X, Y)``, affine ``diag(-sx, -sy, 1, 1)``.
    Values: ``stored * RescaleSlope + RescaleIntercept`` per slice, int16 when every value is an integer
    in int16 range, else float32; MONOCHROME1 is inverted over the stored range so higher is brighter;
    colour images become luma. Raises IngestError naming the file and field (no pixel data, differing
    image sizes or orientations, slices at the same position, undecodable pixel data).
    ``slice_uids``: for 3D, the SOPInstanceUID of the instance that became each slice (``""`` where the
    slice is a frame of a multi-frame instance; a second copy of an instance is not a slice); for 2D, empty.
    """
    notes: list[str] = fallback_warnings(files)
    files = _unique_instances(files, notes)
    if not files:
        raise IngestError("", "empty series: no DICOM files")
    first = files[0]
    for f in files:
        if not f.has_pixels:
            reason = "no pixel data: not an image instance"
            if f.rows and f.columns:
                reason = "no pixel data although Rows and Columns are set (is the file truncated?)"
            raise IngestError(f.path, reason, "PixelData")
        if f.rows is None or f.columns is None:
            raise IngestError(f.path, "Rows or Columns is missing", "Rows")
    for f in files[1:]:
        if (f.rows, f.columns) != (first.rows, first.columns):
            raise IngestError(
                f.path,
                f"image size {f.rows}x{f.columns} (rows x columns) differs from {first.rows}x{first.columns} "
                f"of {first.path.name}",
                "Rows" if f.rows != first.rows else "Columns",
            )
    frames = frames_of(list(files))
    modality = first.modality or "OT"
    two_d = len(frames) == 1 and (modality in PROJECTION_MODALITIES or frames[0].position is None)
    geometry = plane_geometry(frames[0]) if two_d else stack_geometry(frames)
    notes.extend(geometry.warnings)
    rows, cols = int(first.rows), int(first.columns)  # type: ignore[arg-type]
    integral = all(float(fr.slope).is_integer() and float(fr.intercept).is_integer() for fr in frames)
    integral = integral and not any(_has_float_pixels(f) for f in files)
    jobs = file_jobs(files, frames, geometry.order, two_d=two_d)
    array = series_decode(
        jobs,
        shape=(cols, rows) if two_d else (cols, rows, len(frames)),
        integral=integral,
        frame_shape=(rows, cols),
    )
    colour = any(
        text(f.header.get("PhotometricInterpretation")).upper() not in ("MONOCHROME1", "MONOCHROME2", "")
        for f in files
    )
    if colour:
        notes.append(
            f"colour image ({text(first.header.get('PhotometricInterpretation'))}) converted to grayscale"
        )
    return Volume(
        array=array,
        affine=geometry.affine,
        spacing=tuple(float(s) for s in geometry.spacing),
        modality=modality,
        warnings=notes,
        meta=_series_meta(files, frames[geometry.order[0]]),
        burned_in_annotation=burned_in(list(files)),
        series_description=text(first.header.get("SeriesDescription")),
        slice_uids=[] if two_d else _slice_uids(frames, geometry.order),
    )


def _slice_uids(frames: Sequence[Frame], order: Sequence[int]) -> list[str]:
    """Slice k's instance UID: that of the file of frame ``order[k]`` when the file is that one frame."""
    per_file: dict[int, int] = {}
    for fr in frames:
        per_file[fr.file_index] = per_file.get(fr.file_index, 0) + 1
    return [
        frames[i].file.sop_uid
        if per_file[frames[i].file_index] == 1 and frames[i].file.number_of_frames == 1
        else ""
        for i in order
    ]


def _has_float_pixels(f: DicomFile) -> bool:
    location = getattr(f.header, LOCATION_ATTR, None)
    return location is not None and location.tag != 0x7FE00010


def _unique_instances(files: Sequence[DicomFile], notes: list[str]) -> list[DicomFile]:
    """Drop a second copy of an instance (same SOPInstanceUID and bytes); differing copies are an error."""
    seen: dict[str, DicomFile] = {}
    out: list[DicomFile] = []
    for f in files:
        other = seen.get(f.sop_uid)
        if other is None:
            seen[f.sop_uid] = f
            out.append(f)
        elif other.checksum == f.checksum:
            notes.append(f"{f.path.name} is a copy of {other.path.name} (same instance): ignored")
        else:
            raise IngestError(
                f.path, f"same SOPInstanceUID as {other.path.name} but different content", "SOPInstanceUID"
            )
    return out


def _series_meta(files: Sequence[DicomFile], first_slice: Frame) -> dict[str, Any]:
    header = files[0].header
    photometric = text(header.get("PhotometricInterpretation")).upper()
    meta: dict[str, Any] = {
        "photometric": photometric,
        "transfer_syntax": str(transfer_syntax(header)),
        "instance_count": len(files),
        "frame_count": sum(max(1, f.number_of_frames) for f in files),
        "manufacturer": text(header.get("Manufacturer")),
    }
    invert_about = None
    if photometric == "MONOCHROME1":
        lo, hi = stored_range(header) or (0, 0)
        invert_about = first_slice.slope * (lo + hi) + 2 * first_slice.intercept
        meta["inverted"] = True
    windows = window_meta(first_slice, invert_about)
    if windows:
        meta["window"] = windows
    if files[0].modality == "PT":
        meta["pet"] = pet_meta(list(files))
    return meta
