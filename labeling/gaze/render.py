"""Colour-mapped PNG images of gaze heatmaps (pure: no database).

``heatmap_png(array)`` takes a ``(height, width)`` map (any real dtype), divides it by its maximum and maps
``[0, 1]`` through ``INFERNO``, a 256-entry perceptual colormap (dark purple-black for 0, pale yellow for
the maximum) interpolated linearly in sRGB between ten stops of matplotlib's "inferno". Non-finite and
negative values count as 0; an all-zero map is the first colour everywhere.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

# Ten evenly spaced stops of matplotlib's "inferno" (0, 1/9, ..., 1), sRGB.
_INFERNO_STOPS = (
    (0x00, 0x00, 0x04),
    (0x1B, 0x0C, 0x42),
    (0x4B, 0x0C, 0x6B),
    (0x78, 0x1C, 0x6D),
    (0xA5, 0x2C, 0x60),
    (0xCF, 0x44, 0x46),
    (0xED, 0x69, 0x25),
    (0xFB, 0x9A, 0x06),
    (0xF7, 0xD0, 0x3C),
    (0xFC, 0xFF, 0xA4),
)


def _colormap(stops: tuple[tuple[int, int, int], ...], size: int = 256) -> np.ndarray:
    """``(size, 3)`` uint8 table interpolated linearly between evenly spaced ``stops``."""
    at = np.linspace(0.0, 1.0, len(stops))
    where = np.linspace(0.0, 1.0, size)
    table = np.array(stops, dtype=np.float64)
    channels = [np.interp(where, at, table[:, c]) for c in range(3)]
    return np.clip(np.round(np.stack(channels, axis=1)), 0, 255).astype(np.uint8)


INFERNO = _colormap(_INFERNO_STOPS)


def heatmap_png(array: np.ndarray, colormap: np.ndarray = INFERNO) -> bytes:
    """PNG bytes (RGB, ``height`` x ``width`` px) of the ``(height, width)`` map ``array``, normalised by its
    maximum and coloured with ``colormap`` (``(N, 3)`` uint8, first entry for 0, last for the maximum)."""
    values = np.asarray(array, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] == 0 or values.shape[1] == 0:
        raise ValueError(f"array: expected a non-empty (height, width) map, got shape {values.shape}")
    table = np.asarray(colormap, dtype=np.uint8)
    if table.ndim != 2 or table.shape[1] != 3 or table.shape[0] < 2:
        raise ValueError(f"colormap: expected an (N, 3) uint8 table, got shape {table.shape}")
    values = np.where(np.isfinite(values) & (values > 0), values, 0.0)
    peak = float(values.max())
    scaled = values / peak if peak > 0 else values
    index = np.clip(np.round(scaled * (table.shape[0] - 1)), 0, table.shape[0] - 1).astype(np.intp)
    rgb = np.ascontiguousarray(table[index])  # (height, width, 3)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()
