"""``releases.demo.mass_mask`` (what the demo annotator draws) on the synthetic phantom, whose nodule's
place and size are known: the click on it gives the nodule, not the lung, the heart or the chest wall."""

import numpy as np

from releases.demo import mass_mask
from studies.demo import synthetic_chest_ct

SPACING_ZYX = (5.0, 1.8, 1.8)


def test_the_click_on_the_phantom_nodule_gives_the_nodule():
    volume, info = synthetic_chest_ct(spacing=SPACING_ZYX)  # (Z, Y, X)
    hu = np.asfortranarray(volume.T.astype(np.float32))  # (X, Y, Z) as stored scans
    spacing = (SPACING_ZYX[2], SPACING_ZYX[1], SPACING_ZYX[0])
    nz, ny, nx = info["nodule_center_zyx"]
    lung = (hu == -850) & (np.arange(hu.shape[0]) < hu.shape[0] / 2)[:, None, None]  # image left: right lung
    mask = mass_mask(hu, lung, spacing, (nx, ny, nz))
    assert mask is not None and mask.shape == hu.shape
    volume_mm3 = mask.sum() * float(np.prod(spacing))
    sphere_mm3 = 4 / 3 * np.pi * info["nodule_radius_mm"] ** 3
    assert 0.7 < volume_mm3 / sphere_mm3 < 1.3, (volume_mm3, sphere_mm3)
    centre = np.argwhere(mask).mean(axis=0)
    assert np.allclose(centre, (nx, ny, nz), atol=1.0)
    assert (hu[mask] == 30).mean() > 0.95  # nodule tissue, nothing of the body around it


def test_a_click_in_air_or_outside_the_lung_gives_nothing():
    volume, info = synthetic_chest_ct(spacing=SPACING_ZYX)
    hu = np.asfortranarray(volume.T.astype(np.float32))
    spacing = (SPACING_ZYX[2], SPACING_ZYX[1], SPACING_ZYX[0])
    lung = (hu == -850) & (np.arange(hu.shape[0]) < hu.shape[0] / 2)[:, None, None]
    nz, ny, nx = info["nodule_center_zyx"]
    assert mass_mask(hu, lung, spacing, (nx, ny - 12, nz)) is None  # lung air beside the nodule
    assert mass_mask(hu, lung, spacing, (hu.shape[0] // 2, hu.shape[1] - 5, nz)) is None  # outside the body
    assert mass_mask(hu, np.zeros_like(lung), spacing, (nx, ny, nz)) is None  # no lung
