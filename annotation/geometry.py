"""A version's geometry checked against its finding's scan: a mask of the scan's shape (X, Y[, Z]), a box
``[min..., max...]`` or points inside the image, every coordinate a finite number; anything else is a
``ReviewError`` naming ``mask``, ``box`` or ``points``."""

from __future__ import annotations

import numpy as np

from annotation.errors import ReviewError
from annotation.models import AnnotationKind, Finding


def _numbers(values, field: str, count: int) -> list[float]:
    """``count`` finite numbers from a request's list (a box, a point); anything else names ``field``."""
    if not isinstance(values, list | tuple) or len(values) != count:
        raise ReviewError(field, f"{str(values)[:60]} is not a list of {count} numbers")
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ReviewError(field, f"{str(values)[:60]}: {value!r} is not a number")
        try:
            number = float(value)
        except ValueError:
            raise ReviewError(field, f"{str(values)[:60]}: {value!r} is not a number") from None
        if not np.isfinite(number):
            raise ReviewError(field, f"{str(values)[:60]}: {value!r} is not a finite number")
        out.append(number)
    return out


def geometry_check(finding: Finding, kind: str, mask, box, points) -> tuple[np.ndarray | None, int]:
    scan = finding.scan
    if scan is None:
        raise ReviewError("scan", "the finding has no scan to annotate on")
    shape = tuple(int(n) for n in scan.shape[: scan.ndim])
    if kind == AnnotationKind.MASK:
        if mask is None:
            raise ReviewError("mask", "a mask annotation needs a mask")
        array = np.asarray(mask)
        if array.shape != shape:
            raise ReviewError(
                "mask", f"shape {list(array.shape)} differs from the scan's {list(shape)} (X, Y[, Z])"
            )
        if array.dtype != np.bool_:
            array = array > 0
        return array, int(np.count_nonzero(array))
    if kind == AnnotationKind.BOX:
        if not isinstance(box, list | tuple) or len(box) != 2 * len(shape):
            raise ReviewError(
                "box", f"needs {2 * len(shape)} numbers [min..., max...] for a {len(shape)}D scan"
            )
        numbers = _numbers(box, "box", 2 * len(shape))
        low, high = numbers[: len(shape)], numbers[len(shape) :]
        for axis, (a, b, n) in enumerate(zip(low, high, shape, strict=True)):
            if not 0 <= a < b <= n:
                raise ReviewError("box", f"axis {axis}: [{a}, {b}) is not inside the image [0, {n})")
        return None, int(np.prod([b - a for a, b in zip(low, high, strict=True)]))
    if kind == AnnotationKind.POINTS:
        if not isinstance(points, list | tuple) or not points:
            raise ReviewError("points", "needs at least one point")
        for point in points:
            if not all(0 <= v < n for v, n in zip(_numbers(point, "points", len(shape)), shape, strict=True)):
                raise ReviewError("points", f"{point} is not inside the image {list(shape)}")
        return None, len(points)
    raise ReviewError("kind", f"{kind!r} is not one of {', '.join(AnnotationKind.values)}")
