"""PET lesion from a report's (SUVmax, slice) seed, on a synthetic phantom, with the rules extraction."""

import numpy as np
import pytest

from labeling.rules import rules_label
from ml.generators.pet import pet_lesion_from_seed, pet_phantom

SHAPE = (64, 64, 60)  # (X, Y, Z) voxels
SPACING = (4.0, 4.0, 3.0)  # mm
# (centre_xyz_mm, radius_mm, suvmax): the SUV 8 and SUV 12 spheres share slices.
SPHERES = [
    ((80.0, 100.0, 90.0), 12.0, 8.0),
    ((170.0, 100.0, 90.0), 10.0, 12.0),
    ((128.0, 180.0, 40.0), 15.0, 4.0),
]


@pytest.fixture(scope="module")
def phantom() -> tuple[np.ndarray, list[np.ndarray]]:
    return pet_phantom(SHAPE, SPACING, SPHERES, background=1.0, seed=0, fwhm_mm=6.0, noise_sd=0.05)


def report_slice(centre_z_mm: float) -> int:
    """The image number a report names for a centre: it counts from the other end, k = depth − slice."""
    return SHAPE[2] - round(centre_z_mm / SPACING[2])


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_phantom_spheres_reach_their_suvmax(phantom):
    volume, masks = phantom
    assert volume.shape == SHAPE and volume.dtype == np.float32
    for (_, _, suvmax), mask in zip(SPHERES, masks):
        assert volume[mask].max() == pytest.approx(suvmax)
    background = ~np.logical_or.reduce(masks)
    assert np.median(volume[background]) == pytest.approx(1.0, abs=0.02)


def test_report_sentence_gives_the_sphere_not_the_brighter_one(phantom):
    volume, masks = phantom
    image = report_slice(SPHERES[0][0][2])
    sentence = f"Hypermetabolic right lower lobe nodule with SUVmax 8.0 on image {image}."
    (finding,) = rules_label({"findings": sentence}, schema="petct")
    assert finding.extra == {"suvmax": 8.0, "slice": image}

    mask, result = pet_lesion_from_seed(volume, SPACING, finding.extra["suvmax"], finding.extra["slice"])

    assert result.ok and result.reason == "converged"
    assert result.slice_index == round(90.0 / SPACING[2])
    assert result.suvmax == pytest.approx(8.0, abs=0.1)
    assert dice(mask, masks[0]) >= 0.8
    assert not (mask & masks[1]).any()  # the SUV 12 sphere on the same slices is left alone
    assert result.voxels == int(mask.sum())
    assert result.volume_ml == pytest.approx(mask.sum() * 48.0 / 1000.0)
    assert len(result.thresholds) >= 2
    assert abs(result.thresholds[-1] - result.thresholds[-2]) <= 0.01 * result.thresholds[-2]
    assert result.seed_threshold == pytest.approx(0.617 + 0.316 * 8.0)


@pytest.mark.parametrize("which", [0, 1, 2])
def test_every_sphere_is_labelled_from_its_seed(phantom, which):
    volume, masks = phantom
    centre, _, suvmax = SPHERES[which]
    mask, result = pet_lesion_from_seed(volume, SPACING, suvmax, report_slice(centre[2]))
    assert result.ok, result.reason
    assert dice(mask, masks[which]) >= 0.8


def test_slice_counted_from_the_start(phantom):
    volume, masks = phantom
    k = round(SPHERES[0][0][2] / SPACING[2])
    mask, result = pet_lesion_from_seed(volume, SPACING, 8.0, k + 1, slice_from_end=False)
    assert result.ok and result.slice_index == k
    assert dice(mask, masks[0]) >= 0.8


def test_wrong_slice_gives_no_seed(phantom):
    volume, _ = phantom
    mask, result = pet_lesion_from_seed(volume, SPACING, 8.0, report_slice(150.0))
    assert result.outcome == "no_seed" and "no component" in result.reason
    assert not mask.any()


def test_slice_outside_the_volume_gives_no_seed(phantom):
    volume, _ = phantom
    _, result = pet_lesion_from_seed(volume, SPACING, 8.0, SHAPE[2] + 5)
    assert result.outcome == "no_seed" and "outside" in result.reason


def test_suvmax_matching_no_component_gives_no_seed(phantom):
    volume, _ = phantom
    mask, result = pet_lesion_from_seed(volume, SPACING, 6.0, report_slice(SPHERES[0][0][2]))
    assert result.outcome == "no_seed" and "SUVmax 6.0" in result.reason
    assert not mask.any()


def test_low_suvmax_is_dropped(phantom):
    volume, _ = phantom
    assert rules_label({"findings": "Mild uptake with SUVmax 2.0 on image 30."}, schema="petct") == []
    mask, result = pet_lesion_from_seed(volume, SPACING, 2.0, 30)
    assert result.outcome == "dropped" and "< 2.5" in result.reason
    assert not mask.any()


def test_long_low_suv_component_is_dropped():
    volume = np.ones((20, 20, 70))
    volume[8:12, 8:12, 5:65] = 4.0  # a 60-slice tube, like a vessel or the bowel
    _, result = pet_lesion_from_seed(volume, SPACING, 4.0, 35)
    assert result.outcome == "dropped" and "longer than 50 slices" in result.reason


def test_single_voxel_spike_is_dropped_for_a_high_threshold():
    volume = np.ones((20, 20, 20))
    volume[10, 10, 10] = 6.0
    mask, result = pet_lesion_from_seed(volume, SPACING, 6.0, 10)
    assert result.outcome == "dropped" and "T/SUVmax" in result.reason
    assert result.thresholds[-1] / 6.0 > 0.9
    assert not mask.any()


def test_bad_inputs_are_refused(phantom):
    volume, _ = phantom
    with pytest.raises(ValueError):
        pet_lesion_from_seed(volume[..., 0], SPACING, 8.0, 30)
    with pytest.raises(ValueError):
        pet_lesion_from_seed(volume, (4.0, 4.0), 8.0, 30)
    with pytest.raises(ValueError):
        pet_lesion_from_seed(volume, SPACING, 8.0, 30, first_connectivity=21)
