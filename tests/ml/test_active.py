"""Active-learning strategies: predictive entropy and MC-dropout BALD through the inference preprocessing
and sliding windows, foreground-aware random patch centres (random / inside a class / on its border),
case scores and ranking. Tiny networks and 32³ volumes on the CPU."""

import copy

import numpy as np
import pytest
import torch
from monai.networks.nets import UNet

from ml.engine.active import (
    bald,
    foreground_aware_centres,
    foreground_aware_patches,
    foreground_aware_random_score,
    patch_around,
    predictive_entropy,
    rank,
)
from ml.specs import InputSpec, ModelError

SPEC = InputSpec.from_dict({"ndim": 3, "channels": 1, "roi_size": [16, 16, 16], "window": [0, 1]})
SPACING = [1.0, 1.0, 1.0]
SHAPE = (32, 32, 32)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny networks: one intra-op thread is fastest and does not thrash when other jobs share the CPUs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _volume(seed=0):
    """(X, Y, Z) volume in [0, 1]: a bright cube in noise."""
    rng = np.random.default_rng(seed)
    volume = rng.random(SHAPE, dtype=np.float32) * 0.2
    volume[8:24, 8:24, 8:24] += 0.8
    return volume


class _Logits(torch.nn.Module):
    """Two-channel logits ``±scale`` decided by the input: confident for a large ``scale``, uniform at 0."""

    def __init__(self, scale: float, dropout: float | None = None):
        super().__init__()
        self.scale = scale
        self.drop = torch.nn.Dropout(dropout) if dropout is not None else torch.nn.Identity()

    def forward(self, x):
        z = self.scale * (2 * x[:, :1] - 1)
        return self.drop(torch.cat([-z, z], dim=1))


def _unet(dropout, seed=0):
    torch.manual_seed(seed)
    return UNet(
        spatial_dims=3, in_channels=1, out_channels=2, channels=(4, 8), strides=(2,), dropout=dropout
    ).eval()


def test_predictive_entropy_is_zero_for_a_confident_model_and_one_for_uniform_logits():
    volume = np.where(_volume() > 0.5, 1.0, 0.0).astype(np.float32)
    assert predictive_entropy(_Logits(40.0), volume, SPACING, SPEC) == pytest.approx(0.0, abs=1e-5)
    assert predictive_entropy(_Logits(0.0), volume, SPACING, SPEC) == pytest.approx(1.0, abs=1e-6)
    middling = predictive_entropy(_Logits(1.0), volume, SPACING, SPEC)
    assert 0.1 < middling < 0.9


def test_predictive_entropy_of_a_unet_uses_the_inference_preprocessing():
    net = _unet(0.2)
    volume = _volume()
    score = predictive_entropy(net, volume, SPACING, SPEC)
    assert 0.0 <= score <= 1.0
    assert not net.training  # eval mode kept: deterministic
    assert predictive_entropy(net, volume, SPACING, SPEC) == score
    # resampled to 2 mm on a 1 mm scan: the model sees a 16³ grid, still a valid mean
    coarse = InputSpec.from_dict({**SPEC.as_dict(), "spacing": [2.0, 2.0, 2.0]})
    assert 0.0 <= predictive_entropy(net, volume, SPACING, coarse) <= 1.0


def test_predictive_entropy_rejects_nan_outputs():
    class NaNs(torch.nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 2, *x.shape[2:]), float("nan"))

    with pytest.raises(ModelError, match="NaN"):
        predictive_entropy(NaNs(), _volume(), SPACING, SPEC)


def test_bald_is_larger_with_heavy_dropout_than_with_the_same_weights_at_p_zero():
    heavy = _unet(0.5)
    still = copy.deepcopy(heavy)
    for module in still.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    volume = _volume()
    heavy_score = bald(heavy, volume, SPACING, SPEC, samples=4)
    still_score = bald(still, volume, SPACING, SPEC, samples=4)
    assert still_score == pytest.approx(0.0, abs=1e-6)
    assert heavy_score > 1e-3
    assert heavy_score > 100 * max(still_score, 1e-9)


def test_bald_is_zero_for_a_deterministic_model_with_a_p_zero_dropout():
    assert bald(_Logits(1.0, dropout=0.0), _volume(), SPACING, SPEC, samples=3) == pytest.approx(
        0.0, abs=1e-6
    )


def test_bald_is_seeded_restores_modes_and_the_global_rng():
    net = _unet(0.3)
    volume = _volume()
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    first = bald(net, volume, SPACING, SPEC, samples=3, seed=7, overlap=0.0)
    assert torch.equal(torch.rand(3), before)  # the global RNG state is untouched
    assert not any(m.training for m in net.modules())
    assert bald(net, volume, SPACING, SPEC, samples=3, seed=7, overlap=0.0) == first
    assert bald(net, volume, SPACING, SPEC, samples=3, seed=8, overlap=0.0) != first
    net.train()
    bald(net, volume, SPACING, SPEC, samples=2, overlap=0.0)
    assert all(m.training for m in net.modules())


def test_bald_needs_dropout_layers_and_two_samples():
    message = r"model: BALD needs dropout layers \(MC dropout\); this model has none"
    with pytest.raises(ValueError, match=message):
        bald(_unet(None), _volume(), SPACING, SPEC)
    with pytest.raises(ValueError, match="samples"):
        bald(_unet(0.2), _volume(), SPACING, SPEC, samples=1)


def test_bald_finds_dropout_inside_torchscript():
    scripted = torch.jit.script(_unet(0.5))
    assert bald(scripted, _volume(), SPACING, SPEC, samples=2) > 0.0


def _two_classes():
    labels = np.zeros(SHAPE, dtype=np.int16)
    labels[4:12, 4:12, 4:12] = 1
    labels[18:28, 20:30, 2:30] = 2
    return labels


def _border(mask):
    """Reference: voxels of ``mask`` with a face neighbour outside it (the volume's edge not counting)."""
    padded = np.pad(mask, 1, mode="edge")
    out = np.zeros_like(mask)
    for axis in range(3):
        for step in (-1, 1):
            shifted = np.roll(padded, step, axis=axis)[1:-1, 1:-1, 1:-1]
            out |= mask & ~shifted
    return out


def test_centres_follow_the_proportions_inside_and_border_rules():
    labels = _two_classes()
    centres = foreground_aware_centres(
        SHAPE, labels, n=3000, p_random=0.2, p_inside=0.5, p_border=0.3, seed=1
    )
    kinds = [c.kind for c in centres]
    assert kinds.count("random") / 3000 == pytest.approx(0.2, abs=0.03)
    assert kinds.count("inside") / 3000 == pytest.approx(0.5, abs=0.03)
    assert kinds.count("border") / 3000 == pytest.approx(0.3, abs=0.03)
    picked = [c.label for c in centres if c.kind != "random"]
    assert picked.count(1) / len(picked) == pytest.approx(0.5, abs=0.05)  # classes uniformly, not by size
    borders = {label: _border(labels == label) for label in (1, 2)}
    for c in centres:
        assert all(0 <= v < s for v, s in zip(c.centre, SHAPE))
        if c.kind == "inside":
            assert labels[c.centre] == c.label
        elif c.kind == "border":
            assert borders[c.label][c.centre]
        else:
            assert c.label is None
    # random centres land everywhere, also in the background
    assert any(labels[c.centre] == 0 for c in centres if c.kind == "random")


def test_border_of_a_boolean_mask_touching_the_volume_edge():
    mask = np.zeros((10, 10, 10), dtype=bool)
    mask[:, :, :4] = True  # the volume's edge is no border: only the z = 3 face is
    centres = foreground_aware_centres(mask.shape, mask, n=200, p_random=0, p_inside=0, p_border=1)
    assert {c.kind for c in centres} == {"border"} and {c.centre[2] for c in centres} == {3}
    full = np.ones((6, 6, 6), dtype=bool)  # no border at all: inside instead
    centres = foreground_aware_centres(full.shape, full, n=20, p_border=1, p_random=0)
    assert {c.kind for c in centres} == {"inside"}


def test_patches_are_in_bounds_centred_and_reproducible():
    labels = _two_classes()
    patches = foreground_aware_patches(SHAPE, (16, 16, 8), labels, n=500, seed=3)
    assert patches == foreground_aware_patches(SHAPE, (16, 16, 8), labels, n=500, seed=3)
    assert patches != foreground_aware_patches(SHAPE, (16, 16, 8), labels, n=500, seed=4)
    centres = foreground_aware_centres(SHAPE, labels, n=500, seed=3)
    for patch, c in zip(patches, centres, strict=True):
        assert [s.stop - s.start for s in patch] == [16, 16, 8]
        assert all(0 <= s.start and s.stop <= n for s, n in zip(patch, SHAPE))
        assert all(s.start <= v < s.stop for s, v in zip(patch, c.centre))
    assert patch_around((16, 16, 16), SHAPE, (16, 16, 8)) == (slice(8, 24), slice(8, 24), slice(12, 20))
    assert patch_around((0, 31, 5), SHAPE, (16, 16, 64)) == (slice(0, 16), slice(16, 32), slice(0, 32))


def test_random_fallback_without_foreground_and_bad_arguments():
    for foreground in (None, np.zeros(SHAPE, dtype=bool), np.zeros(SHAPE, dtype=np.uint8)):
        centres = foreground_aware_centres(SHAPE, foreground, n=100, p_random=0, seed=2)
        assert {c.kind for c in centres} == {"random"}
        assert len({c.centre for c in centres}) > 90
    with pytest.raises(ValueError, match="foreground: shape"):
        foreground_aware_patches(SHAPE, (8, 8, 8), np.zeros((4, 4, 4), dtype=bool), n=1)
    with pytest.raises(ValueError, match="foreground: needs an integer"):
        foreground_aware_patches(SHAPE, (8, 8, 8), np.zeros(SHAPE, dtype=np.float32), n=1)
    with pytest.raises(ValueError, match="p_random"):
        foreground_aware_patches(SHAPE, (8, 8, 8), None, n=1, p_random=-1)
    with pytest.raises(ValueError, match="roi_size"):
        foreground_aware_patches(SHAPE, (8, 8), None, n=1)


def test_random_case_scores_are_stable_and_uniform():
    assert foreground_aware_random_score("case-1", 0) == foreground_aware_random_score("case-1", 0)
    assert foreground_aware_random_score("case-1", 0) != foreground_aware_random_score("case-1", 1)
    scores = [foreground_aware_random_score(f"case-{i}", 0) for i in range(2000)]
    assert all(0.0 <= s < 1.0 for s in scores)
    assert np.mean(scores) == pytest.approx(0.5, abs=0.03)


def test_rank_highest_first_ties_by_id():
    scores = {"c": 0.5, "a": 0.9, "b": 0.5, "d": 0.1}
    assert rank(scores, "predictive_entropy") == ["a", "b", "c", "d"]
    assert rank({}, "bald") == []
    randoms = {f"case-{i}": foreground_aware_random_score(f"case-{i}", 5) for i in range(20)}
    assert rank(randoms, "foreground_aware_random") == sorted(randoms, key=lambda k: -randoms[k])
    with pytest.raises(ValueError, match="strategy"):
        rank(scores, "margin")
    with pytest.raises(ValueError, match="NaN"):
        rank({"a": float("nan")}, "bald")


def test_power_rank_is_seeded_noisy_and_puts_zero_scores_last():
    scores = {f"case-{i:02d}": 1.0 + i / 100 for i in range(30)} | {"zero": 0.0}
    first = rank(scores, "power_bald", seed=1)
    assert first == rank(scores, "power_bald", seed=1)
    assert first != rank(scores, "power_bald", seed=2)
    assert first != rank(scores, "bald")  # noise reorders near-equal scores
    assert first[-1] == "zero" and sorted(first) == sorted(scores)
    # a very large beta recovers the plain order
    assert rank(scores, "power_predictive_entropy", beta=1e6) == rank(scores, "predictive_entropy")
