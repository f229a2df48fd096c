"""Gaze heatmaps: reflacx and egd against plain reference computations (double loops, float64)."""

import math

import numpy as np
import pytest

from labeling.gaze import gaussian_sum as gs
from labeling.gaze import heatmap

W, H = 40, 30
TINY = float(np.finfo(np.float32).tiny)


def fixations(**extra):
    fx = {
        "start": [0.0, 0.5, 1.2, 2.0, 3.1],
        "end": [0.4, 1.1, 1.9, 2.6, 3.3],
        "x": [5, 20, 33, 12, 38],
        "y": [4, 15, 25, 22, 2],
        "ang_res_x": [6.0, 6.0, 7.5, 5.0, 6.0],
        "ang_res_y": [5.0, 5.5, 7.5, 4.0, 6.0],
        "shown_rect": [[0.4, 1.6, 39.5, 28.2]] * 5,
        "inside": [True] * 5,
    }
    fx.update(extra)
    return fx


def reference_reflacx(fx, width, height, weights=None):
    out = np.zeros((height, width))
    for i in range(len(fx["x"])):
        sx, sy = fx["ang_res_x"][i], fx["ang_res_y"][i]
        x0, y0, x1, y1 = (round(v) for v in fx["shown_rect"][i])
        w = (fx["end"][i] - fx["start"][i]) if weights is None else weights[i]
        for r in range(height):
            for c in range(width):
                if x0 <= c < x1 and y0 <= r < y1:
                    d = ((c - fx["x"][i]) / sx) ** 2 + ((r - fx["y"][i]) / sy) ** 2
                    out[r, c] += w * math.exp(-d / 2) / (2 * math.pi * sx * sy)
    return out / out.sum()


def reference_egd(fx, width, height, sigma=150.0):
    radius = int(4.0 * sigma + 0.5)
    kernel = [math.exp(-0.5 * (k / sigma) ** 2) for k in range(-radius, radius + 1)]
    norm = sum(kernel)

    def reflect(i, n):
        i %= 2 * n
        return i if i < n else 2 * n - 1 - i

    def response(pos, n):  # 1-D filter response of a unit impulse at pos, at every index
        out = [0.0] * n
        for p in range(n):
            for j, k in enumerate(range(-radius, radius + 1)):
                if reflect(p + k, n) == pos:
                    out[p] += kernel[j] / norm
        return out

    out = np.zeros((height, width))
    for x, y, inside in zip(fx["x"], fx["y"], fx.get("inside", [True] * len(fx["x"]))):
        if not inside or x < 0 or y < 0:
            continue
        rx, ry = response(int(x), width), response(int(y), height)
        for r in range(height):
            for c in range(width):
                out[r, c] += ry[r] * rx[c]
    return out


def assert_close(got, ref, rel=1e-5):
    assert got.dtype == np.float32 and got.shape == ref.shape
    live = ref >= TINY
    assert np.all(np.abs(got[~live]) <= TINY)
    err = np.abs(got[live].astype(np.float64) - ref[live]) / ref[live]
    assert err.max(initial=0.0) <= rel


def test_reflacx_matches_reference():
    fx = fixations()
    got = heatmap(fx, width=W, height=H)
    ref = reference_reflacx(fx, W, H)
    assert_close(got, ref)
    assert abs(float(got.sum(dtype=np.float64)) - 1.0) < 1e-6


def test_reflacx_shown_rect_clipping_and_per_fixation_rects():
    rects = [[0, 0, 40, 30], [10.5, 5.5, 30.4, 20.6], [2, 3, 38, 27], [-5, -5, 60, 50], [20, 0, 40, 10]]
    fx = fixations(shown_rect=rects)
    got = heatmap(fx, width=W, height=H)
    assert_close(got, reference_reflacx(fx, W, H))
    only = fixations(shown_rect=[[10.5, 5.5, 30.4, 20.6]] * 5)  # round half to even: 10, 6, 30, 21
    got = heatmap(only, width=W, height=H)
    assert np.all(got[:6] == 0) and np.all(got[21:] == 0) and np.all(got[:, :10] == 0)
    assert np.all(got[:, 30:] == 0) and np.all(got[6:21, 10:30] > 0)


def test_reflacx_off_image_fixation_contributes_its_tail():
    fx = fixations(x=[5, 20, 33, 12, 45], inside=[True, True, True, True, False])
    assert_close(heatmap(fx, width=W, height=H), reference_reflacx(fx, W, H))


def test_reflacx_far_tails_are_exact():
    fx = fixations(ang_res_x=[1.5] * 5, ang_res_y=[1.2] * 5)  # values down to ~1e-150 in the corners
    got = heatmap(fx, width=W, height=H)
    assert_close(got, reference_reflacx(fx, W, H))


def test_reflacx_tiled_path_many_fixations():
    rng = np.random.default_rng(3)
    n, w, h = 60, 300, 260
    t = np.cumsum(rng.uniform(0.1, 0.3, n))
    fx = {
        "start": t.tolist(),
        "end": (t + rng.uniform(0.05, 0.5, n)).tolist(),
        "x": rng.integers(0, w, n).tolist(),
        "y": rng.integers(0, h, n).tolist(),
        "ang_res_x": rng.uniform(8, 20, n).tolist(),
        "ang_res_y": rng.uniform(8, 20, n).tolist(),
        "shown_rect": [[3, 7, 290, 250]] * n,
    }
    got = heatmap(fx, width=w, height=h)
    cols, rows = np.arange(w), np.arange(h)
    ref = np.zeros((h, w))
    for i in range(n):  # full-image Gaussian per fixation
        sx, sy = fx["ang_res_x"][i], fx["ang_res_y"][i]
        g = np.exp(
            -0.5 * ((cols[None, :] - fx["x"][i]) / sx) ** 2 - 0.5 * ((rows[:, None] - fx["y"][i]) / sy) ** 2
        )
        ref[7:250, 3:290] += ((fx["end"][i] - fx["start"][i]) / (2 * np.pi * sx * sy) * g)[7:250, 3:290]
    assert_close(got, ref / ref.sum())


def full_reference(fx, width, height):
    """Full-image float64 Gaussian per fixation, added into its (rounded, clipped) shown rect."""
    cols, rows = np.arange(width), np.arange(height)
    out = np.zeros((height, width))
    for i in range(len(fx["x"])):
        sx, sy = fx["ang_res_x"][i], fx["ang_res_y"][i]
        x0, y0, x1, y1 = (
            min(max(round(v), 0), lim) for v, lim in zip(fx["shown_rect"][i], (width, height) * 2)
        )
        g = np.exp(
            -0.5 * ((cols[None, :] - fx["x"][i]) / sx) ** 2 - 0.5 * ((rows[:, None] - fx["y"][i]) / sy) ** 2
        )
        w = (fx["end"][i] - fx["start"][i]) / (2 * np.pi * sx * sy)
        out[y0:y1, x0:x1] += w * g[y0:y1, x0:x1]
    return out / out.sum()


def spy(monkeypatch, name):
    calls = []
    real = getattr(gs, name)

    def wrapper(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(gs, name, wrapper)
    return calls


def recording(rng, n, width, height, res, rect, integer=True):
    t = np.cumsum(rng.uniform(0.1, 0.3, n))
    pos = (lambda lo, hi: rng.integers(lo, hi, n)) if integer else (lambda lo, hi: rng.uniform(lo, hi, n))
    return {
        "start": t.tolist(),
        "end": (t + rng.uniform(0.05, 0.5, n)).tolist(),
        "x": pos(-40, width + 40).tolist(),  # a few off the image
        "y": pos(-40, height + 40).tolist(),
        "ang_res_x": rng.choice(res, n).tolist(),
        "ang_res_y": rng.choice(res, n).tolist(),
        "shown_rect": [rect] * n,
    }


@pytest.mark.parametrize("integer", [True, False])
def test_reflacx_float32_tiles_with_truncation(monkeypatch, integer):
    # several tiles, fixations left out of far tiles, float32 GEMMs; integer positions with two angular
    # resolutions take the shared-table path for the 1-D Gaussians, float positions the direct one
    rng = np.random.default_rng(5)
    n, w, h = 150, 700, 560
    fx = recording(rng, n, w, h, [20.0, 24.0], [5, 9, 690, 541.5], integer)
    x, ax = np.asarray(fx["x"], float), np.asarray(fx["ang_res_x"])
    assert (gs._table(x, 1 / ax, w) is not None) == integer
    f32 = spy(monkeypatch, "_gemm32")
    f64 = spy(monkeypatch, "_gemm64")
    got = heatmap(fx, width=w, height=h)
    assert f32 and not f64
    assert sum(a[0].shape[0] for a in f32) < n * len(f32)  # some fixations were left out
    assert_close(got, full_reference(fx, w, h))


@pytest.mark.parametrize("max_chunks", [2, 64])
def test_reflacx_float32_chunks(monkeypatch, max_chunks):
    # GEMMs split in chunks of 8 fixations, the chunk results summed in float32 or (beyond max_chunks)
    # in float64
    monkeypatch.setattr(gs, "_CHUNK", 8)
    monkeypatch.setattr(gs, "_MAX_CHUNKS", max_chunks)
    rng = np.random.default_rng(6)
    n, w, h = 60, 300, 260
    fx = recording(rng, n, w, h, [15.0, 18.0], [3, 7, 290, 250])
    assert_close(heatmap(fx, width=w, height=h), full_reference(fx, w, h))


def test_reflacx_rect_reached_only_by_a_far_fixation(monkeypatch):
    # the right rect is reached only by one fixation far to its left: the tile it shares with the left
    # rect would leave that fixation out, the check finds its pixels uncovered, and the tile is
    # recomputed with every fixation (and the total recomputed exactly)
    rng = np.random.default_rng(7)
    n, w, h = 41, 600, 300
    fx = recording(rng, n, w, h, [30.0], [0, 0, 300, 300])
    fx["x"] = rng.integers(150, 300, n).tolist()
    fx["y"] = rng.integers(0, 300, n).tolist()
    fx["x"][-1], fx["y"][-1] = 100, 150
    fx["shown_rect"] = [[0, 0, 300, 300]] * (n - 1) + [[300, 0, 600, 300]]
    exact = spy(monkeypatch, "_exact_total")
    got = heatmap(fx, width=w, height=h)
    assert exact
    ref = full_reference(fx, w, h)
    assert 0 < ref[:, 300:].max() < 1e-9 * ref.max()
    assert_close(got, ref)


def test_float32_error_budget():
    # the worst case of gaussian_sum's docstring "Exactness": left-out mass plus float32 rounding (inputs 2u,
    # accumulation _CHUNK·u, chunk sum (_MAX_CHUNKS - 1)·u, scaling 2u), first order, stays below 1e-5;
    # the per-pixel check after a float32 product allows for the product's own rounding
    u = 2.0**-24
    rounding = (gs._CHUNK + gs._MAX_CHUNKS + 3) * u
    assert max(gs._DROP, gs._CHECK) + rounding * (1 + 1e-3) < 1e-5
    assert (gs._CHUNK + gs._MAX_CHUNKS + 1) * u < gs._SLACK


def test_egd_matches_reference():
    fx = {
        "start": [0.0, 1.0, 2.0, 3.0, 4.0],
        "end": [0.5, 1.5, 2.5, 3.5, 4.5],
        "x": [3, 17, 17, 39, -1],
        "y": [2, 11, 11, 29, -1],
        "inside": [True, True, True, True, False],
    }
    got = heatmap(fx, width=W, height=H, method="egd")
    assert_close(got, reference_egd(fx, W, H))


def test_egd_normalise_options():
    fx = {"start": [0.0, 1.0], "end": [0.5, 1.5], "x": [3, 30], "y": [2, 20]}
    raw = reference_egd(fx, W, H)
    assert_close(heatmap(fx, width=W, height=H, method="egd", normalise="sum"), raw / raw.sum())
    assert_close(heatmap(fx, width=W, height=H, method="egd", normalise="max"), raw / raw.max())


def test_window_clips_durations():
    fx = fixations()
    got = heatmap(fx, width=W, height=H, start=0.8, end=2.2)
    # fixation 1 (0.5-1.1) gives 0.3 s, 2 (1.2-1.9) 0.7 s, 3 (2.0-2.6) 0.2 s; 0 and 4 are outside
    sub = {k: [v[i] for i in (1, 2, 3)] for k, v in fx.items()}
    assert_close(got, reference_reflacx(sub, W, H, weights=[0.3, 0.7, 0.2]))
    assert_close(
        heatmap(fx, width=W, height=H, start=None, end=0.4),
        reference_reflacx({k: [v[0]] for k, v in fx.items()}, W, H),
    )
    # touching only at an end point is not an overlap
    assert_close(heatmap(fx, width=W, height=H, start=3.3, end=5), np.zeros((H, W)))


def test_empty_window_gives_zeros():
    got = heatmap(fixations(), width=W, height=H, start=10, end=20)
    assert got.dtype == np.float32 and got.shape == (H, W) and not got.any()
    got = heatmap(fixations(), width=W, height=H, method="egd", start=10, end=20)
    assert not got.any()


def test_egd_window_selects_overlapping_fixations():
    fx = {"start": [0.0, 1.0, 2.0], "end": [0.5, 1.5, 2.5], "x": [3, 17, 30], "y": [2, 11, 20]}
    got = heatmap(fx, width=W, height=H, method="egd", start=1.2, end=2.1)
    assert_close(got, reference_egd({k: v[1:] for k, v in fx.items()}, W, H))


def test_custom_sigma_px_unweighted_max():
    fx = fixations()
    got = heatmap(
        fx, width=W, height=H, method="custom", sigma_px=4.0, duration_weighting=False, normalise="max"
    )
    ref = reference_reflacx(fx | {"ang_res_x": [4.0] * 5, "ang_res_y": [4.0] * 5}, W, H, weights=[1.0] * 5)
    assert_close(got, ref / ref.max())
    assert got.max() == pytest.approx(1.0)


def test_custom_sigma_deg_weighted_sum_skips_outside():
    fx = fixations(inside=[True, True, False, True, True])
    got = heatmap(fx, width=W, height=H, method="custom", sigma_deg=0.5)
    keep = [0, 1, 3, 4]
    sub = {k: [v[i] for i in keep] for k, v in fx.items()}
    sub["ang_res_x"] = [v * 0.5 for v in sub["ang_res_x"]]
    sub["ang_res_y"] = [v * 0.5 for v in sub["ang_res_y"]]
    assert_close(got, reference_reflacx(sub, W, H))


def test_custom_without_shown_rect_covers_the_image():
    fx = fixations()
    del fx["shown_rect"]
    got = heatmap(fx, width=W, height=H, method="custom", sigma_px=3.0)
    ref = reference_reflacx(
        fx | {"ang_res_x": [3.0] * 5, "ang_res_y": [3.0] * 5, "shown_rect": [[0, 0, W, H]] * 5}, W, H
    )
    assert_close(got, ref)


@pytest.mark.parametrize(
    ("change", "kwargs", "field"),
    [
        ({"ang_res_x": None}, {}, "ang_res_x"),
        ({"ang_res_y": [5.0, 0.0, 1, 1, 1]}, {}, "ang_res_y"),
        ({"shown_rect": None}, {}, "shown_rect"),
        ({"end": [0.4, 0.5, 1.9, 2.6, 3.3]}, {}, "end"),
        ({"end": [0.4, 0.4, 1.9, 2.6, 3.3]}, {"method": "custom", "sigma_px": 2}, "end"),
        ({}, {"method": "nope"}, "method"),
        ({}, {"normalise": "l2"}, "normalise"),
        ({}, {"method": "custom"}, "sigma_px"),
        ({}, {"method": "custom", "sigma_px": 1, "sigma_deg": 1}, "sigma_px"),
        ({}, {"sigma_px": 3}, "sigma_px"),
        ({}, {"start": 3, "end": 1}, "start"),
        ({"x": [1, 2, 3]}, {}, "x"),
        ({"y": None}, {}, "y"),
    ],
)
def test_bad_input_names_the_field(change, kwargs, field):
    fx = fixations()
    for k, v in change.items():
        if v is None:
            fx.pop(k)
        else:
            fx[k] = v
    with pytest.raises(ValueError, match=field):
        heatmap(fx, width=W, height=H, **kwargs)


def test_zero_durations_allowed_without_weighting():
    fx = fixations(end=[0.0, 0.5, 1.2, 2.0, 3.1])
    got = heatmap(fx, width=W, height=H, method="custom", sigma_px=3, duration_weighting=False)
    assert got.sum() == pytest.approx(1.0, rel=1e-5)
