"""Issue 3 benchmark: the ``rules`` labeler's CheXpert labels against MeSH-derived truth on the IU reports,
beside a plain keyword + negation-regex baseline, and the rules labeler's speed on one core.

    .venv/bin/python bench/bench_labels.py [--csv PATH] [--show OBSERVATION]

Scoring: a report is predicted positive for an observation when its CheXpert value is 1.0 (U-zeros:
MeSH indexes stated findings, rarely differentials; ``--uones`` also counts -1.0); truth from ``mesh_map``.
Rules were tuned looking only at the first half of the file (uid order); the second half is held out.
"""

import argparse
import csv
import os
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from mesh_map import INFORMATION, SCORED, observations  # noqa: E402

from labeling.rules import chexpert_row, rules_label  # noqa: E402

DEFAULT_CSV = REPO.parent / "shared" / "data" / "reports" / "iu_reports_dev.csv"

# Baseline: one keyword regex per observation; negated when "no/not/without/negative for/free of" comes
# earlier in the same sentence.
BASELINE_KEYWORDS = {
    "Enlarged Cardiomediastinum": r"widened mediastinum|mediastinal widening|enlarged cardiomediastinal",
    "Cardiomegaly": r"cardiomegaly|enlarged heart|heart (?:is |size is )?enlarged",
    "Lung Lesion": r"nodules?|mass(?:es)?|lesions?",
    "Lung Opacity": r"opacit(?:y|ies)|infiltrates?|airspace disease",
    "Edema": r"edema|congestion",
    "Consolidation": r"consolidation",
    "Pneumonia": r"pneumonia",
    "Atelectasis": r"atelectasis|atelectatic",
    "Pneumothorax": r"pneumothorax",
    "Pleural Effusion": r"effusions?",
    "Pleural Other": r"pleural thickening|pleural scarring",
    "Fracture": r"fractures?",
    "Support Devices": r"pacemaker|catheter|tube|line|clips?|wires?|stent|device|port",
}
_BASE = {obs: re.compile(rf"\b(?:{kw})\b", re.I) for obs, kw in BASELINE_KEYWORDS.items()}
_BASE_NEG = re.compile(r"\b(?:no|not|without|negative for|free of)\b", re.I)
_BASE_SENT = re.compile(r"[^.]+")


def baseline_row(text: str) -> dict[str, float | None]:
    row: dict[str, float | None] = {}
    for sent in _BASE_SENT.findall(text):
        for obs, rx in _BASE.items():
            for m in rx.finditer(sent):
                neg = _BASE_NEG.search(sent, 0, m.start()) is not None
                row[obs] = max(row.get(obs, -9), 0.0 if neg else 1.0)
    findings = [o for o in BASELINE_KEYWORDS if o != "Support Devices"]
    row["No Finding"] = None if any(row.get(o) == 1.0 for o in findings) else 1.0
    return row


def sections_of(r: dict) -> dict[str, str]:
    return {k: r.get(k) or "" for k in ("indication", "comparison", "findings", "impression")}


POSITIVE = (1.0,)


def score(rows, preds, observations_list):
    out = {}
    for obs in observations_list:
        tp = fp = fn = 0
        for r, pred in zip(rows, preds, strict=True):
            truth = obs in r["_truth"]
            p = pred.get(obs) in POSITIVE
            tp += truth and p
            fp += p and not truth
            fn += truth and not p
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        out[obs] = (prec, rec, f1, tp + fn)
    return out


def speed(rows, repeats=3):
    try:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    except (AttributeError, OSError):
        pass
    texts = [sections_of(r) for r in rows]
    best = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        for s in texts:
            rules_label(s, schema="chexpert")
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    return len(texts) / best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", default=str(DEFAULT_CSV))
    ap.add_argument(
        "--show", default="", help="print false positives/negatives of this observation (first half)"
    )
    ap.add_argument("--uones", action="store_true", help="count uncertain (-1.0) as positive too")
    ap.add_argument(
        "--errors",
        default="",
        choices=("", "A"),
        help="print false positives/negatives of every scored observation (or of --show) in this half; "
        "only the tuning half A is offered",
    )
    args = ap.parse_args()
    global POSITIVE
    if args.uones:
        POSITIVE = (1.0, -1.0)
    with open(args.csv, encoding="utf-8", newline="") as fh:
        all_rows = list(csv.DictReader(fh))
    half = len(all_rows) // 2
    for i, r in enumerate(all_rows):
        r["_half"] = "A" if i < half else "B"
        r["_truth"] = observations(r["MeSH"], uncertain_positive=args.uones)
    rows = [r for r in all_rows if r["_truth"] is not None]
    rules_preds = [chexpert_row(rules_label(sections_of(r), schema="chexpert")) for r in rows]
    base_preds = [baseline_row((r["findings"] or "") + " . " + (r["impression"] or "")) for r in rows]
    print(f"{len(all_rows)} reports, {len(rows)} indexed (scored); half A = first {half} (tuning), B = rest")
    subsets = {
        "all": [i for i in range(len(rows))],
        "A": [i for i, r in enumerate(rows) if r["_half"] == "A"],
        "B": [i for i, r in enumerate(rows) if r["_half"] == "B"],
    }
    results = {}
    for name, idx in subsets.items():
        sub = [rows[i] for i in idx]
        results[name] = (
            score(sub, [rules_preds[i] for i in idx], SCORED + INFORMATION),
            score(sub, [base_preds[i] for i in idx], SCORED + INFORMATION),
        )
    print(f"\n{'observation':28s} {'n':>4s} | {'rules P':>7s} {'R':>5s} {'F1':>5s} | {'base P':>6s} {'R':>5s} {'F1':>5s}"  # noqa: E501
          f" | {'F1 A':>5s} {'F1 B':>5s} | {'bF1 A':>5s} {'bF1 B':>5s}")  # fmt: skip
    for obs in SCORED + INFORMATION:
        rp, rr, rf, n = results["all"][0][obs]
        bp, br, bf, _ = results["all"][1][obs]
        mark = "" if obs in SCORED else " (info)"
        print(f"{obs + mark:28s} {n:4d} | {rp:7.3f} {rr:5.3f} {rf:5.3f} | {bp:6.3f} {br:5.3f} {bf:5.3f} | "
              f"{results['A'][0][obs][2]:5.3f} {results['B'][0][obs][2]:5.3f} | "
              f"{results['A'][1][obs][2]:5.3f} {results['B'][1][obs][2]:5.3f}")  # fmt: skip
    for name in ("all", "A", "B"):
        mr = sum(results[name][0][o][2] for o in SCORED) / len(SCORED)
        mb = sum(results[name][1][o][2] for o in SCORED) / len(SCORED)
        print(
            f"macro-F1 ({len(SCORED)} scored) {name:3s}: rules {mr:.3f}  baseline {mb:.3f}  diff {mr - mb:+.3f}"  # noqa: E501
        )
    if args.show or args.errors:
        shown = (args.show,) if args.show else SCORED
        for r, p in zip(rows, rules_preds, strict=True):
            if r["_half"] != "A":
                continue
            for obs in shown:
                truth = obs in r["_truth"]
                pos = p.get(obs) in POSITIVE
                if truth != pos:
                    print(
                        f"\n{'FN' if truth else 'FP'} {obs} uid {r['uid']} MeSH={r['MeSH']}\n  F: {r['findings']}\n  I: {r['impression']}"  # noqa: E501
                    )
    rate = speed(all_rows)
    print(f"\nspeed: {rate:.0f} reports/s on one core (rules, chexpert, {len(all_rows)} reports, best of 3)")


if __name__ == "__main__":
    main()
