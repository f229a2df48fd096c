"""Patient-level splits: seeded, stratified by finding category, stable across versions.

Every case of a patient lands in the patient's split (never a patient in two splits). Patients already
split in the previous version keep their split; new patients are placed one by one, rarest categories
first, in the split whose share of the patient's rarest category (then of all its categories, then of
patients) lags its target ratio most, so each category spreads over the splits in about the target
ratios. Ties and the order among equals follow a
hash of the seed and the patient, so the same inputs and seed give the same splits.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping

DEFAULT_RATIOS = {"train": 0.8, "val": 0.1, "test": 0.1}


def check_ratios(ratios: Mapping[str, float]) -> dict[str, float]:
    """The ratios as given, checked: names train/val/test, non-negative, summing to 1 (± 1e-6)."""
    unknown = set(ratios) - set(DEFAULT_RATIOS)
    if unknown:
        raise ValueError(f"ratios: unknown split {sorted(unknown)[0]!r} (use train, val, test)")
    out = {name: float(ratios.get(name, 0.0)) for name in DEFAULT_RATIOS}
    if any(v < 0 for v in out.values()) or abs(sum(out.values()) - 1.0) > 1e-6:
        raise ValueError(f"ratios: must be non-negative and sum to 1, got {out}")
    return out


def _rank(seed: int, patient: str) -> str:
    return hashlib.sha256(f"{seed}:{patient}".encode()).hexdigest()


def assign_splits(
    patients: Mapping[str, list[str]],
    *,
    previous: Mapping[str, str] | None = None,
    ratios: Mapping[str, float] = DEFAULT_RATIOS,
    seed: int = 0,
) -> dict[str, str]:
    """``patients``: patient -> the categories of its labels (repeats count). Returns patient -> split."""
    ratios = check_ratios(ratios)
    names = [n for n in ratios if ratios[n] > 0]
    previous = dict(previous or {})
    out = {p: previous[p] for p in patients if previous.get(p) in ratios}
    totals: Counter[str] = Counter()
    for cats in patients.values():
        totals.update(set(cats) or {""})
    have = {n: Counter() for n in ratios}
    count = Counter()
    for p, split in out.items():
        have[split].update(set(patients[p]) or {""})
        count[split] += 1

    def rarity(p: str) -> tuple[float, str]:
        cats = set(patients[p]) or {""}
        return (min(totals[c] for c in cats), _rank(seed, p))

    n_patients = len(patients)
    for p in sorted((p for p in patients if p not in out), key=rarity):
        cats = set(patients[p]) or {""}

        rarest = min(cats, key=lambda c: (totals[c], c))
        lags = []
        for name in names:
            by_rarest = ratios[name] - have[name][rarest] / totals[rarest]
            by_category = sum(ratios[name] - have[name][c] / totals[c] for c in cats) / len(cats)
            by_patients = ratios[name] - count[name] / n_patients
            lags.append((round(by_rarest, 9), by_category, by_patients, _rank(seed, f"{p}:{name}"), name))
        split = max(lags)[-1]
        out[p] = split
        have[split].update(cats)
        count[split] += 1
    return out
