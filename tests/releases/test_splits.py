"""Patient splits: one split per patient, seeded and deterministic, stratified by category, stable."""

import random
from collections import Counter

import pytest

from releases.splits import assign_splits, check_ratios


def _patients(n: int, seed: int = 1) -> dict[str, list[str]]:
    rng = random.Random(seed)
    cats = ["1a", "2b", "2d", "2e", "2d", "2d"]
    return {f"p{i}": [rng.choice(cats) for _ in range(rng.randint(1, 3))] for i in range(n)}


def test_stratified_deterministic_and_stable():
    patients = _patients(300)
    splits = assign_splits(patients, seed=3)
    assert splits == assign_splits(dict(reversed(patients.items())), seed=3)  # order does not matter
    assert splits != assign_splits(patients, seed=4)
    sizes = Counter(splits.values())
    assert sizes["train"] == pytest.approx(240, abs=6) and sizes["val"] == pytest.approx(30, abs=4)
    for category in ("1a", "2b", "2d", "2e"):
        having = [p for p, cats in patients.items() if category in cats]
        share = Counter(splits[p] for p in having)
        for split, ratio in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
            assert share[split] == pytest.approx(ratio * len(having), abs=max(3, 0.06 * len(having)))
    grown = {**patients, **{f"q{i}": ["2b"] for i in range(60)}}
    later = assign_splits(grown, previous=splits, seed=9)
    assert all(later[p] == splits[p] for p in splits)  # nobody moves
    new_b = Counter(later[f"q{i}"] for i in range(60))
    assert new_b["val"] >= 3 and new_b["test"] >= 3


def test_ratios_are_checked_and_zero_splits_stay_empty():
    with pytest.raises(ValueError, match="sum to 1"):
        check_ratios({"train": 0.9, "val": 0.2})
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        check_ratios({"train": 0.9, "dev": 0.1})
    splits = assign_splits(_patients(50), ratios={"train": 0.8, "val": 0.2})
    assert set(splits.values()) == {"train", "val"}
    assert assign_splits({"only": []}) == {"only": "train"}
