"""Chest CT phantoms with airway trees of several shapes, for the lungs generator's airway removal.

Each phantom is built in patient space (RAS+ mm: +x the patient's right, +y anterior, +z superior) and
sampled on a DICOM-like grid (``affine[0, 0] < 0``, ``affine[1, 1] < 0``, slices from inferior to
superior), so the arrays are what :func:`studies.ingest.dicom.dicom_load_series` gives for a real series.

What makes them hard (the failures seen on real thin-slice CT): thin slices with correlated noise,
lung parenchyma around -860 HU whose darkest voxels fall below -950 HU, emphysema (lobes whose
parenchyma is mostly below -950 HU, as dark as the airway lumen to a global threshold), bullae against a
bronchus (the wall gives way), a trachea that is bent, wide carina angles and a tracheal bronchus.

Truth: ``lungs`` (left, right: the lung envelopes, intrapulmonary airways and vessels included),
``airway`` (the trachea and main bronchi outside the lung envelopes: what the lung masks must not hold)
and ``tree`` (every airway lumen voxel).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

SHAPES = ("typical", "bent", "wide-carina", "tracheal-bronchus", "emphysema", "thick-slices")

Segment = tuple[tuple[float, float, float], tuple[float, float, float], float]


@dataclass
class Phantom:
    shape: str
    hu: np.ndarray  # (X, Y, Z) int16, Fortran-ordered
    affine: np.ndarray
    spacing: tuple[float, float, float]
    lungs: dict[str, np.ndarray]  # "left", "right"
    airway: np.ndarray  # trachea and main bronchi outside the lungs
    tree: np.ndarray  # every airway lumen voxel
    oesophagus: np.ndarray  # the air in the oesophagus (not an airway)

    @property
    def voxel_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0


def branches(shape: str) -> list[Segment]:
    """The airway tree as (start, end, radius) segments in RAS mm; the carina at z = 150 mm."""
    top, carina = 245.0, (0.0, 0.0, 150.0)
    if shape == "bent":  # a trachea pushed 15 mm to the patient's left (goitre, scoliosis), then back
        trachea: list[Segment] = [
            ((-15.0, 6.0, top), (-14.0, 2.0, 192.0), 8.0),
            ((-14.0, 2.0, 192.0), carina, 8.0),
        ]
    else:
        trachea = [((0.0, 4.0, top), carina, 9.0)]
    # the right main bronchus steeper and shorter than the left; "wide-carina": both close to horizontal
    angles = (62.0, 68.0) if shape == "wide-carina" else (28.0, 48.0)
    segs = list(trachea)
    for sign, angle, length, radius in ((1, angles[0], 40.0, 7.0), (-1, angles[1], 48.0, 6.0)):
        a = np.radians(angle)
        end = (carina[0] + sign * length * np.sin(a), carina[1] - 4.0, carina[2] - length * np.cos(a))
        segs.append((carina, end, radius))
        ex, ey, ez = end
        segs.append((end, (ex + sign * 22.0, ey + 6.0, ez + 30.0), 4.0))  # upper lobe bronchus
        segs.append((end, (ex + sign * 12.0, ey - 8.0, ez - 45.0), 4.5))  # lower lobe bronchus
    if shape == "tracheal-bronchus":  # a right upper lobe bronchus from the trachea, above the carina
        segs.append(((0.0, 2.0, 175.0), (50.0, 4.0, 198.0), 4.5))
    return [(tuple(map(float, a)), tuple(map(float, b)), float(r)) for a, b, r in segs]  # type: ignore[misc]


def airway_phantom(shape: str = "typical", *, seed: int = 0) -> Phantom:
    """A chest CT phantom with the airway tree ``shape`` (one of :data:`SHAPES`).

    1.0 x 1.0 mm pixels, 1.25 mm slices (5 mm for ``thick-slices``); 280 x 210 mm in plane, z 0-250 mm.
    """
    if shape not in SHAPES:
        raise ValueError(f"shape: {shape!r} is not one of {SHAPES}")
    sz = 5.0 if shape == "thick-slices" else 1.25
    sp = (1.0, 1.0, sz)
    dims = (280, 210, int(round(250 / sz)))
    x0, y0 = 139.5, 104.5  # RAS x = x0 - i, y = y0 - j: index i grows towards the patient's left
    affine = np.array([[-1.0, 0, 0, x0], [0, -1.0, 0, y0], [0, 0, sz, 0.0], [0, 0, 0, 1]])
    xs = (x0 - np.arange(dims[0])).astype(np.float32)[:, None, None]
    ys = (y0 - np.arange(dims[1])).astype(np.float32)[None, :, None]
    zs = (np.arange(dims[2]) * sz).astype(np.float32)[None, None, :]
    rng = np.random.default_rng(seed)

    ell = (xs / 132.0) ** 2 + (ys / 96.0) ** 2
    body = np.broadcast_to(ell <= 1.0, dims)
    hu = np.full(dims, -1000.0, dtype=np.float32)
    hu[body] = 40.0
    hu[np.broadcast_to((ell > 0.86) & (ell <= 1.0), dims)] = -100.0  # subcutaneous fat
    hu[np.broadcast_to((xs / 16.0) ** 2 + ((ys + 70.0) / 16.0) ** 2 <= 1.0, dims)] = 500.0  # spine

    lungs = {
        side: (
            ((xs - sign * 68.0) / 46.0) ** 2 + ((ys + 4.0) / 70.0) ** 2 + ((zs - 115.0) / 125.0) ** 2 <= 1.0
        )
        & (zs >= 20.0)
        for side, sign in (("right", 1), ("left", -1))
    }
    both = lungs["left"] | lungs["right"]
    # parenchyma: a sharp kernel's texture; "emphysema": upper zones mostly below -950 HU
    texture = _correlated(rng, dims, 1.5)
    parenchyma = -862.0 + 30.0 * texture
    if shape == "emphysema":
        upper = np.broadcast_to(zs >= 105.0, dims)
        parenchyma[upper] = (-948.0 + 30.0 * texture)[upper]
    hu[both] = parenchyma[both]
    hu[(_correlated(rng, dims, 1.2) > 2.4) & both] = 30.0  # vessels
    del texture, parenchyma

    # the airway tree: lumen -1000 HU; inside the lungs a 1.5 mm wall of soft tissue
    lumen = np.zeros(dims, dtype=bool)
    wall = np.zeros(dims, dtype=bool)
    for a, b, r in branches(shape):
        box, points = _box_points(np.array(a), np.array(b), r + 2.0, xs, ys, zs)
        lumen[box] |= _tube(points, np.array(a), np.array(b), r)
        wall[box] |= _tube(points, np.array(a), np.array(b), r + 1.5, open_end=True)
    hu[wall & ~lumen & both] = 20.0
    hu[lumen] = -1000.0
    # air in the oesophagus behind the trachea, on the midline, over 35 mm: not an airway
    oesophagus = np.zeros(dims, dtype=bool)
    box, points = _box_points(np.array([0.0, -24.0, 250.0]), np.array([0.0, -24.0, 215.0]), 8.0, xs, ys, zs)
    oesophagus[box] = _tube(points, np.array([0.0, -24.0, 250.0]), np.array([0.0, -24.0, 215.0]), 5.5)
    hu[oesophagus] = -1000.0
    if shape == "emphysema":  # bullae against the left lower and the right upper lobe bronchi: no wall there
        for (cx, cy, cz), radius in (((-50.0, -16.0, 82.0), 12.0), ((44.0, 6.0, 151.0), 10.0)):
            bulla = (xs - cx) ** 2 + (ys - cy) ** 2 + (zs - cz) ** 2 <= radius**2
            hu[bulla & both & ~lumen] = -985.0
    # noise: thin slices noisier than thick ones; "emphysema" with a sharp (lung) kernel's
    sigma = 10.0 if sz > 2.0 else 60.0 if shape == "emphysema" else 40.0
    hu[body] += sigma * _correlated(rng, dims, 0.7)[body]
    hu = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    return Phantom(
        shape=shape,
        hu=np.asfortranarray(hu),
        affine=affine,
        spacing=sp,
        lungs={side: np.asarray(m) for side, m in lungs.items()},
        airway=lumen & ~both,
        tree=lumen,
        oesophagus=oesophagus,
    )


def _box_points(a, b, r, xs, ys, zs):
    """The index box around segment ``a``-``b`` grown by ``r`` mm, and its voxel centres (mm, (N, 3))."""
    lo, hi = np.minimum(a, b) - r, np.maximum(a, b) + r
    sel = []
    for coords, low, high in (
        (xs.ravel(), lo[0], hi[0]),
        (ys.ravel(), lo[1], hi[1]),
        (zs.ravel(), lo[2], hi[2]),
    ):
        idx = np.flatnonzero((coords >= low) & (coords <= high))
        sel.append(slice(int(idx.min()), int(idx.max()) + 1) if idx.size else slice(0, 0))
    gx, gy, gz = np.meshgrid(xs.ravel()[sel[0]], ys.ravel()[sel[1]], zs.ravel()[sel[2]], indexing="ij")
    return tuple(sel), np.stack([gx, gy, gz], axis=-1)


def _tube(
    points: np.ndarray, a: np.ndarray, b: np.ndarray, radius: float, open_end: bool = False
) -> np.ndarray:
    """``points`` (..., 3) mm within ``radius`` of the segment ``a``-``b``; with ``open_end`` not beyond
    ``b`` (a wall open at the bronchus' distal end, where it meets the parenchyma)."""
    ab = b - a
    t_raw = ((points - a) @ ab) / float(ab @ ab)
    t = np.clip(t_raw, 0.0, 1.0)
    inside = np.linalg.norm(points - (a + t[..., None] * ab), axis=-1) <= radius
    return inside & (t_raw <= 1.0) if open_end else inside


def _correlated(rng: np.random.Generator, dims: tuple[int, int, int], sigma_vox: float) -> np.ndarray:
    """Unit-variance Gaussian noise smoothed with ``sigma_vox`` voxels (a reconstruction kernel's blur)."""
    noise = ndi.gaussian_filter(rng.standard_normal(dims, dtype=np.float32), sigma_vox)
    return noise / noise.std()
