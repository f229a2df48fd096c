"""EGD-CXR's σ = 150 px filter computed from the fixations: equal to SciPy's gaussian_filter of the count
map on every pixel, including kernels longer than the image (reflection repeats) and repeated pixels."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from labeling.gaze.smoothing import filtered_impulses


@pytest.mark.parametrize(
    ("width", "height", "n", "sigma"),
    [(160, 120, 7, 150.0), (37, 1000, 20, 150.0), (900, 700, 30, 150.0), (300, 200, 10, 5.0),
     (1, 1, 2, 150.0), (64, 48, 40, 2.5)],
)  # fmt: skip
def test_equals_scipy_gaussian_filter_of_the_count_map(width, height, n, sigma):
    rng = np.random.default_rng(width * height + n)
    x, y = rng.integers(0, width, n), rng.integers(0, height, n)
    x[0], y[0] = 0, height - 1  # a corner
    x[-1], y[-1] = x[1], y[1]  # a repeated pixel counts twice
    counts = np.zeros((height, width))
    np.add.at(counts, (y, x), 1.0)
    reference = gaussian_filter(counts, sigma=sigma, mode="reflect", truncate=4.0)
    got = filtered_impulses(x, y, width, height, sigma)
    assert np.array_equal(got == 0, reference == 0)  # the same truncation
    nz = reference != 0
    assert (np.abs(got - reference)[nz] / reference[nz]).max() < 1e-12
    fast = filtered_impulses(x, y, width, height, sigma, fast=True)
    assert np.array_equal(fast == 0, reference == 0)
    assert (np.abs(fast - reference)[nz] / reference[nz]).max() < 7.8e-6  # the documented bound


def test_fast_path_adds_chunks_in_float64():
    rng = np.random.default_rng(5)
    x, y = rng.integers(0, 90, 300), rng.integers(0, 70, 300)
    counts = np.zeros((70, 90))
    np.add.at(counts, (y, x), 1.0)
    reference = gaussian_filter(counts, sigma=20.0, mode="reflect", truncate=4.0)
    fast = filtered_impulses(x, y, 90, 70, 20.0, fast=True)
    assert fast.dtype == np.float64 and np.abs(fast / reference - 1).max() < 7.8e-6


def test_no_fixation_is_an_all_zero_map():
    assert not filtered_impulses(np.array([]), np.array([]), 5, 4, 150.0).any()
