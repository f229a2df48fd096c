"""Weight-free CT lung segmentation: a phantom with known truth and a real chest CT series."""

import functools
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from ml.generators.lungs import LungMasks, lungs_segment
from studies.ingest.dicom import dicom_load_series, dicom_read_headers
from studies.ingest.types import Volume

CT_SERIES = "ct/lungdx-a0002"


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def ras_x(mask: np.ndarray, affine: np.ndarray) -> float:
    """RAS x (mm) of the centroid of an (X, Y, Z) mask; +x is the patient's right."""
    return float((affine @ np.r_[np.argwhere(mask).mean(axis=0), 1.0])[0])


# --- phantom ------------------------------------------------------------------------------------------------


def phantom(
    *, flip_x: bool = False, lungs: tuple[str, ...] = ("left", "right"), junction: bool = False, seed: int = 0
):
    """A chest phantom (X, Y, Z) = (128, 128, 48), 2.5 x 2.5 x 5 mm, DICOM-like affine (x and y flipped).

    Body ellipse 40 HU in air -1000 HU; lung ellipsoids -850 HU; a trachea cylinder (-1000 HU) from the
    top slice down to z = 150 mm, joined to both lungs by a horizontal bronchus. Noise sigma 15 HU. With
    ``junction`` a thin slab of lung (5 mm, over 40 mm of height) joins the two lungs, as an anterior
    junction line that the threshold misses.
    Returns the HU volume, the affine, the truth masks by side and the airway outside the lungs.
    """
    shape, sp = (128, 128, 48), (2.5, 2.5, 5.0)
    x, y = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape[:2], sp[:2])], indexing="ij")
    x, y = x[..., None], y[..., None]
    zz = (np.arange(shape[2]) * sp[2])[None, None, :]
    hu = np.full(shape, -1000.0)
    hu[np.broadcast_to((x / 120) ** 2 + (y / 85) ** 2 <= 1, shape)] = 40.0
    # affine [0, 0] = -2.5: index X grows towards RAS -x, the patient's left
    truth = {
        side: ((x - sign * 55) / 40) ** 2 + (y / 55) ** 2 + ((zz - 100) / 80) ** 2 <= 1
        for side, sign in (("left", +1), ("right", -1))
    }
    if junction:
        slab = (np.abs(x) <= 20) & (np.abs(y - 20) <= 2.5) & (np.abs(zz - 100) <= 20)
        truth = {"left": truth["left"] | (slab & (x > 0)), "right": truth["right"] | (slab & (x <= 0))}
    for side in lungs:
        hu[truth[side]] = -850.0
    trachea = (x**2 + (y + 10) ** 2 <= 8**2) & (zz >= 150)
    bronchi = (np.abs(x) <= 40) & ((y + 10) ** 2 + (zz - 152.5) ** 2 <= 6**2)
    airway = (trachea | bronchi) & ~truth["left"] & ~truth["right"]
    hu[trachea | bronchi] = -1000.0
    hu += np.random.default_rng(seed).normal(0, 15, shape)
    affine = np.array([[-2.5, 0, 0, 160.0], [0, -2.5, 0, 160.0], [0, 0, 5.0, -120.0], [0, 0, 0, 1]])
    if flip_x:
        hu, airway = hu[::-1], airway[::-1]
        truth = {side: mask[::-1] for side, mask in truth.items()}
        affine = affine @ np.array([[-1, 0, 0, shape[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    hu = np.asfortranarray(np.rint(hu).astype(np.int16))
    return hu, affine, {side: truth[side] for side in lungs}, airway, sp


@pytest.mark.parametrize("flip_x", [False, True], ids=["dicom-affine", "x-flipped-affine"])
def test_phantom_lungs_match_truth_and_exclude_the_trachea(flip_x):
    hu, affine, truth, airway, sp = phantom(flip_x=flip_x)

    result = lungs_segment(hu, spacing=sp, affine=affine)

    assert result.warnings == []
    assert result.left.shape == result.right.shape == hu.shape
    assert not (result.left & result.right).any()
    assert dice(result.left, truth["left"]) >= 0.9
    assert dice(result.right, truth["right"]) >= 0.9
    assert ras_x(result.left, affine) < ras_x(result.right, affine)  # patient left = smaller RAS x
    assert not ((result.left | result.right) & airway).any()
    assert result.airway is not None and (result.airway & airway).sum() > 0.5 * airway.sum()
    voxel_ml = sp[0] * sp[1] * sp[2] / 1000
    assert result.left_ml == pytest.approx(truth["left"].sum() * voxel_ml, rel=0.1)
    assert result.total_ml == pytest.approx(result.left_ml + result.right_ml)


def test_phantom_lungs_joined_by_a_junction_are_split():
    hu, affine, truth, _airway, sp = phantom(junction=True)

    result = lungs_segment(hu, spacing=sp, affine=affine)

    assert result.warnings == []
    assert dice(result.left, truth["left"]) >= 0.9
    assert dice(result.right, truth["right"]) >= 0.9
    assert not (result.left & result.right).any()


def test_phantom_with_one_lung_warns_and_keeps_the_side():
    hu, affine, truth, _airway, sp = phantom(lungs=("right",))

    result = lungs_segment(hu, spacing=sp, affine=affine)

    assert "only one lung found" in result.warnings
    assert not result.left.any()
    assert dice(result.right, truth["right"]) >= 0.9


def test_phantom_without_trachea_warns():
    hu, affine, truth, airway, sp = phantom()
    hu[airway] = 40  # airway outside the lungs filled in: nothing to seed from

    result = lungs_segment(hu, spacing=sp, affine=affine)

    assert any("no trachea" in w for w in result.warnings)
    assert dice(result.left, truth["left"]) >= 0.9 and dice(result.right, truth["right"]) >= 0.9


# --- real chest CT ------------------------------------------------------------------------------------------


def load_ct(shared_data: Path) -> Volume:
    paths = sorted((shared_data / CT_SERIES).glob("*.dcm"))
    assert len(paths) == 30
    files, errors = dicom_read_headers(paths)
    assert errors == []
    return dicom_load_series(files)


@functools.cache
def segment_real_ct(shared_data: Path) -> tuple[Volume, LungMasks, float]:
    """The real series and its lung masks, computed once per test session."""
    volume = load_ct(shared_data)
    start = time.perf_counter()
    result = lungs_segment(volume.array, spacing=volume.spacing, affine=volume.affine)
    return volume, result, time.perf_counter() - start


@pytest.fixture
def real_ct(shared_data: Path) -> tuple[Volume, LungMasks, float]:
    return segment_real_ct(shared_data)


def test_real_ct_both_lungs_in_the_adult_range(real_ct):
    volume, result, seconds = real_ct
    airway = 0 if result.airway is None else int(result.airway.sum())
    print(
        f"\nlungdx-a0002: left {result.left_ml:.0f} ml, right {result.right_ml:.0f} ml, "
        f"total {result.total_ml:.0f} ml, airway voxels {airway}, {seconds:.2f} s for {volume.array.shape}, "
        f"warnings {result.warnings}"
    )
    assert result.warnings == []
    assert result.left.any() and result.right.any()
    assert 2500 <= result.total_ml <= 8000
    for ml in (result.left_ml, result.right_ml):
        assert 0.35 <= ml / result.total_ml <= 0.65


def test_real_ct_left_lung_is_on_the_patients_left(real_ct):
    volume, result, _ = real_ct
    affine = np.asarray(volume.affine)
    # RAS+: +x is the patient's right, so the left lung has the smaller RAS x
    assert ras_x(result.left, affine) < ras_x(result.right, affine)
    body_mid_x = float((affine @ np.r_[(np.array(volume.array.shape) - 1) / 2, 1.0])[0])
    assert ras_x(result.left, affine) < body_mid_x < ras_x(result.right, affine)


def test_real_ct_masks_hold_lung_values(real_ct):
    volume, result, _ = real_ct
    for mask in (result.left, result.right):
        assert float(volume.array[mask].mean()) < -600
        assert np.median(volume.array[mask]) < -700


def test_real_ct_trachea_is_not_in_the_masks(real_ct):
    volume, result, _ = real_ct
    hu, affine = volume.array, np.asarray(volume.affine)
    lungs = result.left | result.right
    top = hu.shape[2] - 1 if affine[2, 2] > 0 else 0  # the most superior slice
    step = -1 if affine[2, 2] > 0 else 1
    pixel_mm2 = volume.spacing[0] * volume.spacing[1]
    found = 0
    for k in range(top, top + 4 * step, step):
        labels, n = ndi.label(hu[:, :, k] < -900)
        for idx in range(1, n + 1):
            tube = labels == idx
            xs = np.nonzero(tube)[0]
            midline = abs(xs.mean() - (hu.shape[0] - 1) / 2) < 0.1 * hu.shape[0]
            touches_border = xs.min() == 0 or xs.max() == hu.shape[0] - 1
            if midline and not touches_border and 50 <= tube.sum() * pixel_mm2 <= 700:
                found += 1
                assert not lungs[:, :, k][tube].any(), f"trachea in slice {k} is inside a lung mask"
    assert found >= 3, "the trachea (a dark midline tube) should be seen in the top slices"
    assert result.airway is not None and not (result.airway & lungs).any()


@pytest.mark.slow
def test_speed_on_a_512x512x300_volume(shared_data):
    volume = load_ct(shared_data)
    small = volume.array.astype(np.float32)
    nz = 300
    z = np.linspace(0, small.shape[2] - 1, nz)
    k0 = np.floor(z).astype(int)
    k1 = np.minimum(k0 + 1, small.shape[2] - 1)
    w = (z - k0).astype(np.float32)
    big = np.empty((*small.shape[:2], nz), dtype=np.int16, order="F")
    for i in range(nz):  # linear interpolation between the real slices
        big[:, :, i] = np.rint(small[:, :, k0[i]] * (1 - w[i]) + small[:, :, k1[i]] * w[i])
    affine = np.array(volume.affine, dtype=float)
    sz = volume.spacing[2] * (small.shape[2] - 1) / (nz - 1)
    affine[:3, 2] *= sz / volume.spacing[2]

    start = time.perf_counter()
    result = lungs_segment(big, spacing=(volume.spacing[0], volume.spacing[1], sz), affine=affine)
    seconds = time.perf_counter() - start

    print(f"\n512x512x300: {seconds:.1f} s, left {result.left_ml:.0f} ml, right {result.right_ml:.0f} ml")
    assert result.warnings == []
    assert 2500 <= result.total_ml <= 8000
    assert seconds < 60
