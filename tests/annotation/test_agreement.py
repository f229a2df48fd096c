"""Agreement measures and consensus of several readers (annotation.agreement): pure numpy, no database."""

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from annotation.agreement import (
    cohen_kappa,
    dice,
    fleiss_kappa,
    iou,
    majority_vote,
    pairwise,
    per_reader,
    staple,
)

# Fleiss (1971) / Wikipedia "Fleiss' kappa" worked example: 10 subjects, 14 raters, 5 categories.
# Row i, column j = how many of the 14 raters put subject i in category j. Published kappa = 0.210.
FLEISS_TABLE = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]


def ball(shape, center, radius):
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum((g - c) ** 2 for g, c in zip(grid, center, strict=True)) <= radius**2


# ----------------------------------------------------------------------------------------------- overlaps


def test_dice_and_iou_of_known_overlap():
    a = np.zeros((4, 5), bool)
    b = np.zeros((4, 5), bool)
    a[0, :4] = True  # 4 voxels
    b[0, 2:] = True  # 3 voxels, 2 shared
    assert dice(a, b) == pytest.approx(2 * 2 / 7)
    assert iou(a, b) == pytest.approx(2 / 5)
    assert dice(a, a) == 1.0 and iou(a, a) == 1.0
    assert dice(a, ~a) == 0.0


def test_dice_works_in_any_dimension_and_on_0_1_integers():
    rng = np.random.default_rng(0)
    for shape in [(50,), (20, 30), (8, 9, 10), (3, 4, 5, 6)]:
        a = rng.random(shape) < 0.3
        b = rng.random(shape) < 0.3
        inter = np.logical_and(a, b).sum()
        assert dice(a, b) == pytest.approx(2 * inter / (a.sum() + b.sum()))
        assert iou(a, b) == pytest.approx(inter / np.logical_or(a, b).sum())
        assert dice(a.astype(np.uint8), b.astype(float)) == dice(a, b)


def test_two_empty_masks_agree_perfectly_one_empty_not_at_all():
    empty = np.zeros((3, 3, 3), bool)
    full = np.ones((3, 3, 3), bool)
    assert dice(empty, empty) == 1.0 and iou(empty, empty) == 1.0
    assert dice(empty, full) == 0.0 and iou(full, empty) == 0.0


def test_bad_masks_are_refused_naming_the_argument():
    a = np.zeros((3, 3), bool)
    with pytest.raises(ValueError, match=r"^b has shape \(3, 4\)"):
        dice(a, np.zeros((3, 4), bool))
    with pytest.raises(ValueError, match=r"^a is empty"):
        iou(np.zeros((0, 3), bool), np.zeros((0, 3), bool))
    with pytest.raises(ValueError, match=r"^b must be a binary mask.*2"):
        dice(a, np.full((3, 3), 2))
    with pytest.raises(ValueError, match=r"^a must be a binary mask"):
        dice(np.full((3, 3), 0.5), a)
    with pytest.raises(ValueError, match=r"^a must be a binary mask.*dtype"):
        dice(np.array([["x"]]), np.array([[True]]))


def test_pairwise_and_per_reader():
    a = np.zeros((10, 10), bool)
    a[:4] = True  # 40
    b = a.copy()
    c = np.zeros((10, 10), bool)
    c[2:6] = True  # 40, shares 20 with a and b
    masks = {"ann": a, "bob": b, "cat": c}
    pairs = pairwise(masks)
    assert pairs == {("ann", "bob"): 1.0, ("ann", "cat"): 0.5, ("bob", "cat"): 0.5}
    assert pairwise(masks, metric="iou")[("ann", "cat")] == pytest.approx(20 / 60)
    means = per_reader(masks, "dice")
    assert list(means) == ["ann", "bob", "cat"]
    assert means == pytest.approx({"ann": 0.75, "bob": 0.75, "cat": 0.5})


def test_pairwise_refuses_one_reader_bad_metric_and_mixed_shapes():
    a = np.zeros((3, 3), bool)
    with pytest.raises(ValueError, match=r"^masks needs at least 2 readers, got 1"):
        pairwise({"ann": a})
    with pytest.raises(ValueError, match=r"^metric must be one of"):
        per_reader({"ann": a, "bob": a}, metric="hausdorff")
    with pytest.raises(ValueError, match=r"^masks\['bob'\] has shape"):
        pairwise({"ann": a, "bob": np.zeros((3, 2), bool)})
    with pytest.raises(ValueError, match=r"^masks\['bob'\] must be a binary mask"):
        pairwise({"ann": a, "bob": np.full((3, 3), 7)})


# ------------------------------------------------------------------------------------------------ kappas


def test_cohen_kappa_textbook_example():
    # 50 proposals: both yes 20, A yes B no 5, A no B yes 10, both no 15 -> po 0.7, pe 0.5, kappa 0.4
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))


@pytest.mark.parametrize("seed", range(8))
def test_cohen_kappa_equals_sklearn_on_random_labels(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    k = int(rng.integers(2, 6))
    a = rng.integers(0, k, n)
    # b copies a about half the time so kappa spans useful values
    b = np.where(rng.random(n) < rng.random(), a, rng.integers(0, k, n))
    assert cohen_kappa(a.tolist(), b.tolist()) == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)
    labels = np.array(["normal", "nodule", "mass", "effusion", "other"])
    assert cohen_kappa(list(labels[a]), list(labels[b])) == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)


def test_cohen_kappa_edge_cases():
    assert cohen_kappa([1, 0, 1, 0], [1, 0, 1, 0]) == 1.0
    assert cohen_kappa(["a", "a", "a"], ["a", "a", "a"]) == 1.0  # sklearn gives NaN here; documented
    assert cohen_kappa([1, 0, 1, 0], [0, 1, 0, 1]) == pytest.approx(-1.0)
    assert cohen_kappa([None, "x", 3], [None, "x", 3]) == 1.0  # any hashable label
    with pytest.raises(ValueError, match=r"^a is empty"):
        cohen_kappa([], [])
    with pytest.raises(ValueError, match=r"^b has 2 labels but a has 3"):
        cohen_kappa([1, 2, 3], [1, 2])


def test_fleiss_kappa_reproduces_the_published_worked_example():
    assert all(sum(row) == 14 for row in FLEISS_TABLE)
    categories = ["1", "2", "3", "4", "5"]
    ratings = [
        [cat for cat, n in zip(categories, row, strict=True) for _ in range(n)] for row in FLEISS_TABLE
    ]
    # intermediate values of the worked example: P-bar = 0.378, P-bar_e = 0.213
    counts = np.array(FLEISS_TABLE)
    assert ((counts**2).sum(axis=1) - 14).sum() / (10 * 14 * 13) == pytest.approx(0.378, abs=5e-4)
    assert ((counts.sum(axis=0) / 140) ** 2).sum() == pytest.approx(0.213, abs=5e-4)
    assert fleiss_kappa(ratings) == pytest.approx(0.20993070442195522, abs=1e-12)
    # the order of labels within an item does not matter
    assert fleiss_kappa([list(reversed(r)) for r in ratings]) == pytest.approx(0.20993070442195522, abs=1e-12)


def test_fleiss_kappa_trivial_cases():
    assert fleiss_kappa([["a", "a", "a"], ["b", "b", "b"], ["a", "a", "a"]]) == 1.0
    assert fleiss_kappa([["a", "a"], ["a", "a"]]) == 1.0  # one label everywhere: perfect, as cohen_kappa
    # two readers who never agree on a balanced binary label
    assert fleiss_kappa([["a", "b"], ["b", "a"]]) == pytest.approx(-1.0)
    # Fleiss pools the marginals: for two readers with equal marginals it equals Cohen's kappa
    a = ["x", "x", "y", "y", "x", "y"]
    b = ["x", "y", "y", "x", "x", "y"]
    assert fleiss_kappa(list(zip(a, b, strict=True))) == pytest.approx(cohen_kappa(a, b))


def test_fleiss_kappa_refuses_ragged_or_too_few_readers():
    with pytest.raises(ValueError, match=r"^ratings is empty"):
        fleiss_kappa([])
    with pytest.raises(ValueError, match=r"^ratings\[1\] has 2 labels but ratings\[0\] has 3"):
        fleiss_kappa([["a", "a", "b"], ["a", "b"]])
    with pytest.raises(ValueError, match=r"^ratings\[0\] needs at least 2 readers, got 1"):
        fleiss_kappa([["a"], ["b"]])


# -------------------------------------------------------------------------------------------- consensus


def test_majority_vote_with_odd_and_even_numbers_of_readers():
    r = [np.array([1, 1, 0, 0, 1], bool), np.array([1, 0, 1, 0, 0], bool), np.array([1, 1, 0, 0, 0], bool)]
    assert majority_vote(r).tolist() == [True, True, False, False, False]
    two = [np.array([1, 1, 0, 0], bool), np.array([1, 0, 1, 0], bool)]
    assert majority_vote(two, tie="include").tolist() == [True, True, True, False]
    assert majority_vote(two, tie="exclude").tolist() == [True, False, False, False]
    four = [np.array([1, 1, 1, 0]), np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0]), np.array([1, 0, 0, 0])]
    assert majority_vote(four, tie="exclude").tolist() == [True, False, False, False]
    assert majority_vote(four, tie="include").tolist() == [True, True, False, False]
    assert majority_vote(np.stack(r)).tolist() == majority_vote(r).tolist()  # stacked (R, ...) array


def test_majority_vote_keeps_shape_and_handles_empty_masks():
    empty = np.zeros((20, 20, 20), bool)
    out = majority_vote([empty, empty, empty])
    assert out.shape == (20, 20, 20) and out.dtype == bool and not out.any()
    a = ball((20, 20, 20), (10, 10, 10), 5)
    assert np.array_equal(majority_vote([a, a, empty]), a)


def test_majority_vote_refuses_bad_input():
    a = np.zeros((3, 3), bool)
    with pytest.raises(ValueError, match=r"^masks needs at least 2 readers, got 1"):
        majority_vote([a])
    with pytest.raises(ValueError, match=r"^masks\[1\] has shape \(2, 3\) but masks\[0\] has shape \(3, 3\)"):
        majority_vote([a, np.zeros((2, 3), bool)])
    with pytest.raises(ValueError, match=r"^masks\[2\] must be a binary mask"):
        majority_vote([a, a, np.full((3, 3), 3)])
    with pytest.raises(ValueError, match=r"^tie must be"):
        majority_vote([a, a], tie="random")


def reference_staple(masks, prior=None, max_iter=50, tol=1e-6):
    """Voxel-by-voxel STAPLE over the whole image, unanimous voxels fixed to their value (the documented
    model), written as plainly as possible to check the pattern-grouped implementation."""
    d = np.stack([m.ravel() for m in masks]).astype(float)  # (R, N)
    r = d.shape[0]
    f = d.mean() if prior is None else prior
    votes = d.sum(axis=0)
    p = np.full(r, 0.99)
    q = np.full(r, 0.99)

    def e_step(p, q):
        a = f * np.prod(np.where(d == 1, p[:, None], 1 - p[:, None]), axis=0)
        b = (1 - f) * np.prod(np.where(d == 1, 1 - q[:, None], q[:, None]), axis=0)
        w = a / (a + b)
        w[votes == r] = 1.0
        w[votes == 0] = 0.0
        return w

    for _ in range(max_iter):
        w = e_step(p, q)
        new_p = (w * d).sum(axis=1) / w.sum()
        new_q = ((1 - w) * (1 - d)).sum(axis=1) / (1 - w).sum()
        change = max(np.abs(new_p - p).max(), np.abs(new_q - q).max())
        p, q = new_p, new_q
        if change < tol:
            break
    return e_step(p, q).reshape(masks[0].shape), p, q


@pytest.mark.parametrize("n_readers", [2, 3, 5])
def test_staple_equals_a_plain_voxelwise_em(n_readers):
    rng = np.random.default_rng(n_readers)
    truth = ball((30, 30, 12), (15, 14, 6), 7)
    masks = [truth ^ (rng.random(truth.shape) < rate) for rate in np.linspace(0.02, 0.2, n_readers)]
    prob, params = staple(masks)
    ref_prob, ref_p, ref_q = reference_staple(masks)
    assert prob.shape == truth.shape and prob.dtype == np.float32
    np.testing.assert_allclose(prob, ref_prob, atol=1e-6)
    np.testing.assert_allclose(params["sensitivity"], ref_p, atol=1e-12)
    np.testing.assert_allclose(params["specificity"], ref_q, atol=1e-12)
    prob2, _ = staple(masks, prior=0.3)
    np.testing.assert_allclose(prob2, reference_staple(masks, prior=0.3)[0], atol=1e-6)


def test_staple_ranks_a_noisy_reader_lowest_and_beats_it():
    # Given a true lesion, two careful readers (one shifted by a voxel, one over-segmenting by a little)
    # and one noisy reader who flips 15 % of all voxels at random
    rng = np.random.default_rng(7)
    shape = (64, 64, 32)
    truth = ball(shape, (32, 30, 16), 12)
    careful_small = ball(shape, (33, 30, 16), 12)
    careful_large = ball(shape, (32, 30, 16), 12.4)
    noisy = truth ^ (rng.random(shape) < 0.15)
    # When STAPLE combines them
    prob, params = staple([careful_small, noisy, careful_large])
    consensus = prob >= 0.5
    # Then the noisy reader has the lowest sensitivity and specificity
    assert int(np.argmin(params["sensitivity"])) == 1
    assert int(np.argmin(params["specificity"])) == 1
    assert all(0.0 <= v <= 1.0 for v in params["sensitivity"] + params["specificity"])
    # and the consensus is closer to the truth than the noisy reader
    assert dice(consensus, truth) > dice(noisy, truth)
    assert dice(consensus, truth) > 0.9
    # and unanimous voxels keep their value
    assert np.all(prob[careful_small & noisy & careful_large] == 1.0)
    assert np.all(prob[~(careful_small | noisy | careful_large)] == 0.0)


def test_staple_of_identical_readers_is_that_reader_and_deterministic():
    rng = np.random.default_rng(3)
    a = rng.random((16, 17, 18)) < 0.2
    prob, params = staple([a, a.copy(), a.copy()])
    assert np.array_equal(prob >= 0.5, a)
    assert set(np.unique(prob).tolist()) <= {0.0, 1.0}
    assert params["sensitivity"] == pytest.approx([1.0] * 3)
    assert params["specificity"] == pytest.approx([1.0] * 3)

    b = a ^ (rng.random(a.shape) < 0.1)
    c = a ^ (rng.random(a.shape) < 0.05)
    first = staple([a, b, c])
    second = staple([a, b, c])
    assert np.array_equal(first[0], second[0]) and first[1] == second[1]


def test_staple_edge_cases():
    empty = np.zeros((5, 6), bool)
    prob, params = staple([empty, empty])
    assert prob.shape == (5, 6) and not prob.any()
    assert params["specificity"] == [1.0, 1.0]
    full = np.ones((5, 6), bool)
    prob, params = staple([full, full, full])
    assert np.all(prob == 1.0) and params["sensitivity"] == [1.0, 1.0, 1.0]
    # more than 16 readers goes through the generic pattern path
    rng = np.random.default_rng(11)
    truth = ball((20, 20, 20), (10, 10, 10), 6)
    many = [truth ^ (rng.random(truth.shape) < 0.05) for _ in range(18)]
    prob, params = staple(many)
    np.testing.assert_allclose(prob, reference_staple(many)[0], atol=1e-6)
    assert dice(prob >= 0.5, truth) > 0.99


def test_staple_refuses_bad_input():
    a = np.zeros((3, 3), bool)
    with pytest.raises(ValueError, match=r"^masks needs at least 2 readers"):
        staple([a])
    with pytest.raises(ValueError, match=r"^masks\[1\] has shape"):
        staple([a, np.zeros((3, 4), bool)])
    with pytest.raises(ValueError, match=r"^masks\[0\] is empty"):
        staple([np.zeros(0, bool), np.zeros(0, bool)])
    with pytest.raises(ValueError, match=r"^prior must lie strictly between 0 and 1"):
        staple([a, a], prior=1.0)
    with pytest.raises(ValueError, match=r"^max_iter must be a positive integer"):
        staple([a, a], max_iter=0)
    with pytest.raises(ValueError, match=r"^masks must be a sequence"):
        staple({"ann": a, "bob": a})
