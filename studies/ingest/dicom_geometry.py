"""Geometry of a DICOM series: frames with their positions, their order along the slice normal, spacing
and the voxel -> RAS+ affine.

Coordinates: DICOM patient coordinates are LPS+ millimetres (x to the patient's left, y to posterior,
z to head). ImageOrientationPatient holds the row cosine (direction of increasing column index) and the
column cosine (direction of increasing row index); PixelSpacing is ``[row spacing, column spacing]``
(distance between rows, distance between columns). Voxel (i, j, k) is column i, row j, slice k; slices
are ordered by their position along the slice normal ``row cosine x column cosine``, ascending.
The LPS affine has columns ``row_cosine * column_spacing``, ``column_cosine * row_spacing``, the slice
step vector and the first slice's ImagePositionPatient; RAS = ``diag(-1, -1, 1, 1) @ LPS``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from studies.ingest.dicom_values import as_list, number, numbers, raw, raw_int
from studies.ingest.types import DicomFile, IngestError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
ORIENTATION_TOLERANCE = 1e-3  # direction cosines
SAME_POSITION_MM = 1e-3
UNEVEN_RELATIVE = 0.01  # slice steps differing by more than 1 % (and 0.01 mm) are reported


@dataclass
class Frame:
    """One 2D image: a single-frame instance or one frame of a multi-frame instance.

    ``position`` LPS mm (3,), ``orientation`` the 6 direction cosines, ``pixel_spacing`` (row spacing,
    column spacing) mm. ``slope``/``intercept`` map stored values to output values (HU for CT).
    """

    file: DicomFile
    file_index: int
    frame: int
    position: np.ndarray | None
    orientation: np.ndarray | None
    pixel_spacing: tuple[float, float] | None
    slope: float = 1.0
    intercept: float = 0.0
    thickness: float | None = None
    spacing_between: float | None = None
    windows: list[tuple[float, float, str]] = field(default_factory=list)


@dataclass
class Geometry:
    """Where the frames go: ``order[k]`` is the index (into the frame list) of slice k."""

    order: list[int]
    affine: np.ndarray  # 4x4, voxel (i, j, k) -> RAS+ mm
    spacing: tuple[float, ...]  # mm per axis (X, Y[, Z])
    warnings: list[str] = field(default_factory=list)


def _first_item(containers: list[Any], keyword: str) -> Any:
    for item in containers:
        if item is not None and keyword in item:
            seq = item[keyword].value
            if seq:
                return seq[0]
    return None


def _windows(source: Any) -> list[tuple[float, float, str]]:
    centers, widths = as_list(raw(source, "WindowCenter")), as_list(raw(source, "WindowWidth"))
    if not centers or not widths:
        return []
    names = as_list(source.get("WindowCenterWidthExplanation"))
    out = []
    for i, (c, w) in enumerate(zip(centers, widths)):
        try:
            out.append((float(c), float(w), str(names[i]) if i < len(names) else ""))
        except (TypeError, ValueError):
            continue
    return out


def frames_of(files: list[DicomFile]) -> list[Frame]:
    """Every frame of every file, with per-frame geometry (Enhanced multi-frame functional groups, shared
    or per-frame, or the classic top-level attributes)."""
    frames: list[Frame] = []
    for index, f in enumerate(files):
        ds = f.header
        per_frame = ds.get("PerFrameFunctionalGroupsSequence")
        shared_seq = ds.get("SharedFunctionalGroupsSequence")
        shared = shared_seq[0] if shared_seq else None
        nframes = max(1, f.number_of_frames)
        top_slope = number(raw(ds, "RescaleSlope"), f, "RescaleSlope", 1.0)
        top_intercept = number(raw(ds, "RescaleIntercept"), f, "RescaleIntercept", 0.0)
        top_spacing = numbers(raw(ds, "PixelSpacing"), 2, f, "PixelSpacing")
        top_thickness = number(raw(ds, "SliceThickness"), f, "SliceThickness")
        top_between = number(raw(ds, "SpacingBetweenSlices"), f, "SpacingBetweenSlices")
        offsets = numbers(raw(ds, "GridFrameOffsetVector"), nframes, f, "GridFrameOffsetVector")
        if top_slope == 1.0 and "RescaleSlope" not in ds and "DoseGridScaling" in ds:  # RT Dose: Gy
            top_slope = number(raw(ds, "DoseGridScaling"), f, "DoseGridScaling", 1.0)
        for i in range(nframes):
            if per_frame is not None or shared is not None:
                item = per_frame[i] if per_frame is not None and i < len(per_frame) else None
                groups = [item, shared]
                plane = _first_item(groups, "PlanePositionSequence")
                orient = _first_item(groups, "PlaneOrientationSequence")
                measures = _first_item(groups, "PixelMeasuresSequence")
                values = _first_item(groups, "PixelValueTransformationSequence")
                voi = _first_item(groups, "FrameVOILUTSequence")
                position = (
                    numbers(raw(plane, "ImagePositionPatient"), 3, f, "ImagePositionPatient")
                    if plane
                    else None
                )
                orientation = (
                    numbers(raw(orient, "ImageOrientationPatient"), 6, f, "ImageOrientationPatient")
                    if orient
                    else f.orientation
                )
                spacing = numbers(raw(measures, "PixelSpacing"), 2, f, "PixelSpacing") if measures else None
                frame = Frame(
                    file=f,
                    file_index=index,
                    frame=i,
                    position=np.array(position) if position else None,
                    orientation=np.array(orientation) if orientation else None,
                    pixel_spacing=spacing or top_spacing,
                    slope=number(raw(values, "RescaleSlope"), f, "RescaleSlope", 1.0)
                    if values
                    else top_slope,
                    intercept=(
                        number(raw(values, "RescaleIntercept"), f, "RescaleIntercept", 0.0)
                        if values
                        else top_intercept
                    ),
                    thickness=number(raw(measures, "SliceThickness"), f, "SliceThickness")
                    if measures
                    else None,
                    spacing_between=(
                        number(raw(measures, "SpacingBetweenSlices"), f, "SpacingBetweenSlices")
                        if measures
                        else top_between
                    ),
                    windows=_windows(voi) or _windows(ds),
                )
            else:
                orientation = np.array(f.orientation) if f.orientation else None
                position = _classic_position(f, i, orientation, offsets, top_between)
                frame = Frame(
                    file=f,
                    file_index=index,
                    frame=i,
                    position=position,
                    orientation=orientation,
                    pixel_spacing=top_spacing,
                    slope=top_slope,
                    intercept=top_intercept,
                    thickness=top_thickness,
                    spacing_between=top_between,
                    windows=_windows(ds),
                )
            if frame.slope == 0:
                raise IngestError(f.path, "RescaleSlope is 0", "RescaleSlope")
            frames.append(frame)
    return frames


def _classic_position(
    f: DicomFile,
    i: int,
    orientation: np.ndarray | None,
    offsets: tuple[float, ...] | None,
    between: float | None,
) -> np.ndarray | None:
    """Frame i of a classic (not Enhanced) file: ImagePositionPatient for frame 0; later frames step along
    the normal by GridFrameOffsetVector (RT Dose) or SpacingBetweenSlices (NM tomography); None (the
    whole file unpositioned) when neither says where they are."""
    if f.position is None:
        return None
    position = np.array(f.position, dtype=np.float64)
    if f.number_of_frames <= 1:
        return position
    if orientation is None:
        return None
    normal = np.cross(orientation[:3], orientation[3:])
    if offsets is not None:  # relative to the position when the first offset is 0, else absolute z
        return position + (offsets[i] - offsets[0]) * normal
    if between:
        return position + i * between * normal
    return None


def in_plane_spacing(frame: Frame, warnings: list[str]) -> tuple[float, float, str]:
    """(column spacing sx, row spacing sy, source): PixelSpacing, else ImagerPixelSpacing, else
    NominalScannedPixelSpacing, else 1.0 mm with a warning. Zero spacings count as absent."""
    ds = frame.file.header
    candidates = [("PixelSpacing", frame.pixel_spacing)]
    for keyword in ("ImagerPixelSpacing", "NominalScannedPixelSpacing"):
        candidates.append((keyword, numbers(raw(ds, keyword), 2, frame.file, keyword)))
    for keyword, value in candidates:
        if value is not None and value[0] > 0 and value[1] > 0:
            return float(value[1]), float(value[0]), keyword
    warnings.append("no pixel spacing (PixelSpacing and ImagerPixelSpacing absent or zero): 1.0 mm assumed")
    return 1.0, 1.0, "assumed"


def plane_geometry(frame: Frame) -> Geometry:
    """A 2D radiograph: affine ``diag(-sx, -sy, 1, 1)``, i.e. image columns run to patient right -> left
    and rows top -> bottom in a plain in-plane frame (no patient position; X = column, Y = row)."""
    warnings: list[str] = []
    sx, sy, _ = in_plane_spacing(frame, warnings)
    return Geometry(order=[0], affine=np.diag([-sx, -sy, 1.0, 1.0]), spacing=(sx, sy), warnings=warnings)


def _check_orientation(frame: Frame) -> np.ndarray:
    o = frame.orientation
    assert o is not None
    row, col = o[:3], o[3:]
    nr, nc = np.linalg.norm(row), np.linalg.norm(col)
    if abs(nr - 1) > 0.01 or abs(nc - 1) > 0.01 or abs(float(row @ col)) > 0.01:
        raise IngestError(
            frame.file.path,
            f"ImageOrientationPatient {list(o)} is not two orthogonal unit vectors",
            "ImageOrientationPatient",
        )
    return np.concatenate([row / nr, col / nc])


def stack_geometry(frames: list[Frame]) -> Geometry:
    """Order frames along the slice normal and derive spacing and affine (see the module docstring).

    Uneven steps (and likely missing slices) are reported as warnings; the Z spacing is the median step.
    Raises IngestError for frames at the same position, mixed presence of positions, differing
    orientations or pixel spacings.
    """
    first = frames[0]
    warnings: list[str] = []
    with_position = [f for f in frames if f.position is not None]
    if with_position and len(with_position) != len(frames):
        missing = next(f for f in frames if f.position is None)
        raise IngestError(missing.file.path, "ImagePositionPatient is missing", "ImagePositionPatient")
    for f in frames:
        if f.pixel_spacing != first.pixel_spacing and (
            f.pixel_spacing is None
            or first.pixel_spacing is None
            or not np.allclose(f.pixel_spacing, first.pixel_spacing, rtol=1e-4, atol=1e-6)
        ):
            raise IngestError(
                f.file.path,
                f"PixelSpacing {f.pixel_spacing} differs from {first.pixel_spacing} of {_frame_name(first)}",
                "PixelSpacing",
            )
    sx, sy, _ = in_plane_spacing(first, warnings)
    if not with_position:
        return _unpositioned(frames, sx, sy, warnings)
    for f in frames:
        if f.orientation is None:
            raise IngestError(f.file.path, "ImageOrientationPatient is missing", "ImageOrientationPatient")
    orientation = _check_orientation(first)
    for f in frames[1:]:
        if np.max(np.abs(f.orientation - first.orientation)) > ORIENTATION_TOLERANCE:
            raise IngestError(
                f.file.path,
                f"ImageOrientationPatient {[round(v, 4) for v in f.orientation]} differs from "
                f"{[round(v, 4) for v in first.orientation]} of {first.file.path.name}",
                "ImageOrientationPatient",
            )
    row, col = orientation[:3], orientation[3:]
    normal = np.cross(row, col)
    positions = np.array([f.position for f in frames], dtype=np.float64)
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    along = along[order]
    positions = positions[order]
    steps = np.diff(along)
    if len(steps) and steps.min() < SAME_POSITION_MM:
        k = int(np.argmin(steps))
        a, b = frames[order[k]], frames[order[k + 1]]
        raise IngestError(
            b.file.path,
            f"ImagePositionPatient is at the same position ({along[k]:.2f} mm along the slice normal) as "
            f"{_frame_name(a)}: {int((steps < SAME_POSITION_MM).sum()) + 1} or more slices share positions "
            "(several phases, echoes or duplicate instances in one series)",
            "ImagePositionPatient",
        )
    if len(steps):
        dz = float(np.median(steps))
        shear = np.median((np.diff(positions, axis=0) - np.outer(steps, normal)) / steps[:, None], axis=0)
        step_vector = dz * (normal + shear)
        if np.linalg.norm(shear) > 1e-3:
            angle = math.degrees(math.atan(float(np.linalg.norm(shear))))
            warnings.append(
                f"slices are offset in-plane from one to the next ({angle:.1f} degrees, gantry tilt?): "
                "the affine is sheared"
            )
        warnings.extend(_spacing_warnings(steps, along, dz))
    else:
        dz = first.spacing_between or first.thickness or 0.0
        if dz <= 0:
            dz = 1.0
            warnings.append("single slice without SliceThickness: 1.0 mm slice spacing assumed")
        step_vector = dz * normal
    lps = np.eye(4)
    lps[:3, 0] = row * sx
    lps[:3, 1] = col * sy
    lps[:3, 2] = step_vector
    lps[:3, 3] = positions[0]
    return Geometry(
        order=[int(i) for i in order], affine=LPS_TO_RAS @ lps, spacing=(sx, sy, dz), warnings=warnings
    )


def _frame_name(frame: Frame) -> str:
    name = frame.file.path.name
    return f"{name} frame {frame.frame + 1}" if frame.file.number_of_frames > 1 else name


def _spacing_warnings(steps: np.ndarray, along: np.ndarray, dz: float) -> list[str]:
    spread = float(steps.max() - steps.min())
    if spread <= max(0.01, UNEVEN_RELATIVE * dz):
        return []
    text = f"uneven slice spacing: {steps.min():.3g} to {steps.max():.3g} mm (median {dz:.3g} mm used)"
    gaps = np.flatnonzero(steps > 1.5 * dz)
    if len(gaps):
        where = ", ".join(f"{along[i]:.1f} and {along[i + 1]:.1f} mm" for i in gaps[:5])
        more = f" and {len(gaps) - 5} more" if len(gaps) > 5 else ""
        text += f"; a slice may be missing between positions {where}{more} along the slice normal"
    return [text]


def _unpositioned(frames: list[Frame], sx: float, sy: float, warnings: list[str]) -> Geometry:
    """Frames without ImagePositionPatient: stacked by InstanceNumber (then file, frame order)."""

    def key(i: int) -> tuple[float, int, int]:
        f = frames[i]
        try:
            number_ = float(raw_int(f.file.header, "InstanceNumber") or 0)
        except (TypeError, ValueError):
            number_ = 0.0
        return number_, f.file_index, f.frame

    order = sorted(range(len(frames)), key=key)
    dz = frames[0].spacing_between or frames[0].thickness or 1.0
    warnings.append(
        f"no ImagePositionPatient: {len(frames)} frames stacked in InstanceNumber/frame order with "
        f"{dz:g} mm slice spacing; the patient geometry is unknown"
    )
    affine = np.diag([-sx, -sy, dz, 1.0])
    if frames[0].orientation is not None:
        o = _check_orientation(frames[0])
        lps = np.eye(4)
        lps[:3, 0], lps[:3, 1], lps[:3, 2] = o[:3] * sx, o[3:] * sy, np.cross(o[:3], o[3:]) * dz
        affine = LPS_TO_RAS @ lps
    return Geometry(order=order, affine=affine, spacing=(sx, sy, dz), warnings=warnings)
