"""ReXGroundingCT metrics on hand-computed examples. Pure numpy, no database."""

from __future__ import annotations

import numpy as np
import pytest

from releases import metrics as m


def box(shape, *ranges) -> np.ndarray:
    """A mask of ``shape`` with the given (start, stop) range on each axis set."""
    out = np.zeros(shape, dtype=bool)
    out[tuple(slice(a, b) for a, b in ranges)] = True
    return out


def sphere(shape, centre, radius) -> np.ndarray:
    grid = np.indices(shape, dtype=float)
    return sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius**2


S = (30, 30, 30)


# -- Dice and hit rate --------------------------------------------------------------------------------


def test_dice_of_two_cubes():
    a = box(S, (0, 10), (0, 10), (0, 10))
    b = box(S, (5, 15), (0, 10), (0, 10))  # half of each cube overlaps: 500 of 1000 voxels
    assert m.dice(a, b) == pytest.approx(2 * 500 / 2000)
    c = box(S, (5, 15), (5, 15), (0, 10))  # 5 x 5 x 10 = 250 overlap
    assert m.dice(a, c) == pytest.approx(2 * 250 / 2000)
    assert m.dice(a, a) == 1.0
    assert m.dice(a.astype(np.uint8) * 3, b.astype(np.float32)) == pytest.approx(0.5)  # non-zero = inside


def test_dice_edge_cases():
    empty = np.zeros(S, dtype=bool)
    a = box(S, (0, 10), (0, 10), (0, 10))
    assert m.dice(empty, empty) == 1.0  # documented choice
    assert m.dice(empty, a) == 0.0 and m.dice(a, empty) == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        m.dice(a, a[:-1])
    assert m.finding_dices([None, a], [a, a]) == [0.0, 1.0]  # a missing prediction is an empty one


def test_hit_rate():
    assert m.hit_rate([0.05, 0.1, 0.5]) == pytest.approx(2 / 3)  # 0.1 itself hits
    assert m.hit_rate([0.05, 0.1], threshold=0.2) == 0.0
    assert m.hit_rate([]) is None


# -- instances ----------------------------------------------------------------------------------------


def test_connectivity_is_full():
    corner3d = np.zeros((4, 4, 4), dtype=bool)
    corner3d[1, 1, 1] = corner3d[2, 2, 2] = True  # touch at a corner only
    assert m.instances(corner3d)[1] == 1
    corner2d = np.zeros((4, 4), dtype=bool)
    corner2d[1, 1] = corner2d[2, 2] = True
    assert m.instances(corner2d)[1] == 1
    corner2d[0, 3] = True
    assert m.instances(corner2d)[1] == 2


def test_instance_matched_missed_and_false_positive():
    truth = box(S, (1, 6), (1, 6), (1, 6)) | box(S, (20, 25), (20, 25), (20, 25))
    pred = box(S, (1, 6), (1, 6), (1, 6)) | box(S, (1, 6), (20, 25), (20, 25))
    assert m.instance_matches(pred, truth) == {"tp": 1, "fp": 1, "fn": 1}
    assert m.prf(1, 1, 1) == {"tp": 1, "fp": 1, "fn": 1, "precision": 0.5, "recall": 0.5, "f1": 0.5}


def test_instance_dice_threshold():
    truth = box(S, (0, 10), (0, 10), (0, 10))  # 1000 voxels
    thin = box(S, (0, 10), (0, 10), (0, 1))  # 100 inside: Dice 200 / 1100 = 0.18 < 0.2
    thicker = box(S, (0, 10), (0, 10), (0, 2))  # 200 inside: Dice 400 / 1200 = 0.33
    assert m.instance_matches(thin, truth) == {"tp": 0, "fp": 1, "fn": 1}
    assert m.instance_matches(thicker, truth) == {"tp": 1, "fp": 0, "fn": 0}


def test_instance_matching_is_one_to_one():
    truth = box(S, (0, 4), (0, 4), (0, 4)) | box(S, (5, 9), (0, 4), (0, 4))
    pred = box(S, (0, 9), (0, 4), (0, 4))  # one prediction over both truths: Dice 128 / 208 with each
    assert m.instance_matches(pred, truth) == {"tp": 1, "fp": 0, "fn": 1}


def test_matching_maximises_the_number_of_matches():
    # on one row: t1 = [0, 10), t2 = [11, 21); p1 = [3, 15) has Dice 14/22 with t1 and 8/22 with t2,
    # p2 = [0, 2) has Dice 4/12 with t1 only. Greedy by Dice takes p1-t1 and stops at one match; the
    # assignment finds p1-t2 and p2-t1.
    row = np.zeros((1, 30), dtype=bool)
    t = row.copy()
    t[0, 0:10] = t[0, 11:21] = True
    p = row.copy()
    p[0, 3:15] = p[0, 0:2] = True
    assert m.instances(t)[1] == 2 and m.instances(p)[1] == 2
    assert m.instance_matches(p, t) == {"tp": 2, "fp": 0, "fn": 0}


def test_border_instances_are_not_lost_by_cropping():
    truth = box(S, (0, 3), (0, 3), (27, 30))
    pred = box(S, (0, 3), (0, 3), (28, 30))
    assert m.instance_matches(pred, truth) == {"tp": 1, "fp": 0, "fn": 0}
    assert m.dice(pred, truth) == pytest.approx(2 * 18 / 45)


# -- distances ----------------------------------------------------------------------------------------


def test_centroid_threshold():
    truth = box(S, (10, 14), (10, 14), (10, 14))
    shift1 = box(S, (11, 15), (10, 14), (10, 14))
    shift3 = box(S, (13, 17), (10, 14), (10, 14))
    iso = (1.0, 1.0, 1.0)  # threshold 2 mm
    assert m.centroid_matches(shift1, truth, iso) == {"tp": 1, "fp": 0, "fn": 0}
    assert m.centroid_matches(shift3, truth, iso) == {"tp": 0, "fp": 1, "fn": 1}
    # 2 voxels along z at 2.5 mm = 5.0 mm = 2 x the largest spacing: still a match (≤)
    z2 = box(S, (10, 14), (10, 14), (12, 16))
    assert m.centroid_matches(z2, truth, (1.0, 1.0, 2.5)) == {"tp": 1, "fp": 0, "fn": 0}
    x6 = box(S, (16, 20), (10, 14), (10, 14))  # 6 mm along x at 1 mm
    assert m.centroid_matches(x6, truth, (1.0, 1.0, 2.5)) == {"tp": 0, "fp": 1, "fn": 1}
    assert m.centroid_matches(np.zeros(S, bool), truth, iso) == {"tp": 0, "fp": 0, "fn": 1}


def test_assd_of_spheres():
    shape = (40, 40, 40)
    inner, outer = sphere(shape, (20, 20, 20), 8), sphere(shape, (20, 20, 20), 11)
    # concentric: every surface point is ~3 voxels from the other surface
    assert m.assd(inner, outer, (1, 1, 1)) == pytest.approx(3.0, abs=0.4)
    # shifted by s along x: the distance from a point at angle t to the other sphere is ~s |cos t|, whose
    # mean over a sphere is s / 2 (not s: only the caps move by the full shift)
    a, b = sphere(shape, (18, 20, 20), 9), sphere(shape, (22, 20, 20), 9)
    assert m.assd(a, b, (1, 1, 1)) == pytest.approx(2.0, abs=0.4)
    # distances scale with the spacing
    assert m.assd(a, b, (2, 2, 2)) == pytest.approx(2 * m.assd(a, b, (1, 1, 1)))
    assert m.assd(a, a, (1, 1, 1)) == 0.0
    assert m.assd(a, np.zeros(shape, bool), (1, 1, 1)) == float("inf")


def test_assd_of_parallel_faces_is_exact():
    # two 1-voxel-thick plates 4 voxels apart: every surface voxel is 4 voxels (= 4 x 0.5 mm) from the other
    shape = (10, 6, 6)
    a, b = box(shape, (2, 3), (0, 6), (0, 6)), box(shape, (6, 7), (0, 6), (0, 6))
    assert m.assd(a, b, (0.5, 1.0, 1.0)) == pytest.approx(2.0)


# -- case and release ---------------------------------------------------------------------------------


def test_case_metrics_and_aggregate():
    spacing = (1.0, 1.0, 1.5)  # threshold 3 mm
    nodule_true = box(S, (2, 6), (2, 6), (2, 6)) | box(S, (20, 24), (20, 24), (20, 24))
    nodule_pred = box(S, (2, 6), (2, 6), (3, 7)) | box(S, (10, 12), (20, 24), (20, 24))
    emph_true = sphere(S, (15, 15, 15), 6)
    emph_pred = sphere(S, (15, 15, 16), 6)  # 1.5 mm off: ASSD well under 3 mm
    case1 = m.case_metrics(
        {"n": nodule_pred, "e": emph_pred},
        {"n": nodule_true, "e": emph_true},
        spacing,
        {"n": "2d", "e": "1c"},
    )
    n, e = case1["findings"]
    assert (n["finding"], n["category"], n["focal"], e["focal"]) == ("n", "2d", True, False)
    # truth 2 x 64 voxels; prediction 64 (48 shared with the first nodule) + 32 elsewhere
    assert n["dice"] == pytest.approx(2 * 48 / (128 + 96))
    assert (n["true_instances"], n["pred_instances"]) == (2, 2)
    assert n["instance"] == {"tp": 1, "fp": 1, "fn": 1}
    assert n["distance"] == {"tp": 1, "fp": 1, "fn": 1}  # one centroid 1.5 mm away, one far
    assert e["assd_mm"] < 3.0 and e["distance"] == {"tp": 1, "fp": 0, "fn": 0}
    assert case1["distance_threshold_mm"] == 3.0

    # second case: nothing predicted for a diffuse finding
    case2 = m.case_metrics([None], [emph_true], spacing, ["1c"])
    [f] = case2["findings"]
    assert f["dice"] == 0.0 and not f["hit"] and f["assd_mm"] == float("inf")
    assert f["instance"] == {"tp": 0, "fp": 0, "fn": 1} and f["distance"] == {"tp": 0, "fp": 0, "fn": 1}

    total = m.aggregate([case1, case2])
    assert total["cases"] == 2 and total["findings"] == 3
    dices = [n["dice"], e["dice"], 0.0]
    assert total["dice_mean"] == pytest.approx(np.mean(dices))
    assert total["hit_rate"] == pytest.approx(2 / 3)
    assert total["instance"] == pytest.approx(
        {
            "tp": 2,
            "fp": 1,
            "fn": 2,
            "precision": 2 / 3,
            "recall": 0.5,
            "f1": 2 * (2 / 3 * 0.5) / (2 / 3 + 0.5),
        }
    )
    assert total["distance"]["tp"] == 2 and total["distance"]["fn"] == 2
    assert set(total["by_category"]) == {"1c", "2d"}
    assert total["by_category"]["1c"]["findings"] == 2 and total["by_category"]["2d"]["findings"] == 1


def test_case_metrics_2d_and_inputs():
    truth = np.zeros((20, 30), bool)
    truth[2:6, 2:6] = True
    truth[6, 6] = True  # diagonal neighbour: same instance in 2D (8-connectivity)
    result = m.case_metrics({"f": truth}, {"f": truth}, (0.5, 0.5))
    [f] = result["findings"]
    assert f["dice"] == 1.0 and f["true_instances"] == 1 and f["category"] == "" and f["focal"]
    assert result["instance"]["f1"] == 1.0 and result["distance"]["f1"] == 1.0
    missing = m.case_metrics({}, {"f": truth}, (0.5, 0.5))
    assert missing["findings"][0]["dice"] == 0.0 and missing["instance"]["precision"] == 0.0
    with pytest.raises(ValueError, match="unknown findings"):
        m.case_metrics({"g": truth}, {"f": truth}, (0.5, 0.5))
    with pytest.raises(ValueError, match="shapes differ"):
        m.case_metrics([truth[:-1]], [truth], (0.5, 0.5))
    assert m.aggregate([])["dice_mean"] is None and m.aggregate([])["hit_rate"] is None
    assert m.is_focal("2e") and not m.is_focal("1a") and m.is_focal("")
