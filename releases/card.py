"""The dataset card: the README.md of every export of a release."""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.utils import timezone

from releases.models import Dataset, DatasetRelease


def _table(rows: list[list[Any]], head: list[str]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def dataset_card(dataset: Dataset, release: DatasetRelease, cases: list[dict]) -> str:
    counts, metrics = release.counts, release.metrics
    splits = ["train", "val", "test"]
    labelers: Counter = Counter()
    models: Counter = Counter()
    readers: Counter = Counter()
    for c in cases:
        for e in c["labels"]:
            p = e["provenance"]
            if p.get("labeler"):
                labelers[f"{p['labeler']} (label run {p.get('label_run')})"] += 1
            if p.get("model_version") or (e["source"] == "model" and p.get("source")):
                models[p.get("model_version") or p["source"]] += 1
            if p.get("author"):
                readers[p["author"]] += 1
    total = max(1, counts["labels"])
    src = counts["labels_per_source"]
    cats = counts["categories"]
    lines = [
        f"# {dataset.name} — version {release.version}",
        "",
        dataset.description or "",
        "",
        f"Frozen {release.frozen_at or timezone.now():%Y-%m-%d %H:%M} UTC from the projects "
        f"{', '.join(p.slug for p in dataset.projects.all())}; manifest `manifest.json` lists every file "
        "with its sha256 and every label with its provenance.",
        "",
        "## Contents",
        "",
        _table(
            [
                ["cases", *[counts["cases_per_split"].get(s, 0) for s in splits], counts["cases"]],
                ["patients", *[counts["patients_per_split"].get(s, 0) for s in splits], counts["patients"]],
            ],
            ["", *splits, "total"],
        ),
        "",
        "Splits are by patient (no patient in two splits), seeded "
        f"(seed {release.selection.get('seed', 0)}, ratios {release.selection.get('ratios')}), stratified by "
        "finding category, and stable: a patient keeps its split in later versions.",
        "",
        "Positive labels per category and split:",
        "",
        _table(
            [[k, *[v.get(s, 0) for s in splits]] for k, v in cats.items()] or [["(none)", 0, 0, 0]],
            ["category", *splits],
        ),  # fmt: skip
        "",
        "## How the labels were made",
        "",
        f"Selection: finding statuses {', '.join(release.selection.get('statuses', []))}; sources "
        f"{', '.join(release.selection.get('sources', []))}.",
        "",
        f"- human-reviewed: {src.get('human', 0)} ({src.get('human', 0) / total:.0%}) — grounded by "
        "annotators and approved by radiologists in the platform's review"
        + (f" (annotators: {', '.join(f'{k} {v}' for k, v in readers.most_common())})" if readers else ""),
        f"- weak (report labelers, not reviewed): {src.get('weak', 0)} ({src.get('weak', 0) / total:.0%})",
        f"- model proposals (not reviewed): {src.get('model', 0)} ({src.get('model', 0) / total:.0%})",
    ]
    if labelers:
        lines.append("- labelers: " + ", ".join(f"{k}: {v}" for k, v in labelers.most_common()))
    if models:
        lines.append("- models and generators: " + ", ".join(f"{k}: {v}" for k, v in models.most_common()))
    multi = [e["provenance"]["readers"] for c in cases for e in c["labels"] if e["provenance"].get("readers")]
    lines += ["", "### Agreement between readers", ""]
    if multi:
        dice = [m["mean_dice"] for m in multi if m.get("mean_dice") is not None]
        iou = [m["mean_iou"] for m in multi if m.get("mean_iou") is not None]
        agree = [m["decision_agreement"] for m in multi if m.get("decision_agreement") is not None]

        def mean(xs: list[float]) -> str:
            return f"{sum(xs) / len(xs):.3f}" if xs else "n/a"

        counts_of_readers = ", ".join(sorted({str(m["readers"]) for m in multi}))
        methods = ", ".join(sorted({str(m["method"]) for m in multi}))
        lines.append(
            f"{len(multi)} labels were read independently by {counts_of_readers}"
            f" readers, then merged ({methods} consensus) and "
            f"confirmed by a radiologist: mean pairwise Dice {mean(dice)}, IoU {mean(iou)}, share of reader "
            f"pairs agreeing on the finding {mean(agree)}."
        )
    else:
        lines.append("Each human-reviewed label was grounded by one annotator and approved by a radiologist.")
    lines += ["", "### Proposals against the accepted labels (ReXGroundingCT metrics)", ""]
    if metrics.get("compared"):

        def row(name: str, m: dict) -> list[Any]:
            inst, dist = m.get("instance", {}), m.get("distance", {})
            return [
                name, m.get("findings", 0), f"{m.get('dice_mean') or 0:.3f}", f"{m.get('hit_rate') or 0:.3f}",
                f"{inst.get('precision', 0):.3f} / {inst.get('recall', 0):.3f} / {inst.get('f1', 0):.3f}",
                f"{dist.get('precision', 0):.3f} / {dist.get('recall', 0):.3f} / {dist.get('f1', 0):.3f}",
            ]  # fmt: skip

        rows = [row("all", metrics)] + [row(k, v) for k, v in sorted(metrics.get("by_category", {}).items())]
        lines += [
            f"Over {metrics['compared']} accepted masks that started from a model or generator proposal "
            "(Dice per finding; hit rate = share with Dice ≥ 0.1; instances match one-to-one at Dice ≥ 0.2; "
            "distance matches within 2 × the largest voxel spacing, by centroid for focal findings and ASSD "
            "for non-focal ones):",
            "",
            _table(
                rows,
                [
                    "category",
                    "findings",
                    "mean Dice",
                    "hit rate",
                    "instance P / R / F1",
                    "distance P / R / F1",
                ],
            ),  # fmt: skip
        ]
    else:
        lines.append("No accepted mask in this release started from a model or generator proposal.")
    lines += [
        "",
        "## Licence",
        "",
        dataset.licence or "Not stated: ask the dataset's maintainers before use.",
        "",
        "## Citation",
        "",
        dataset.citation or "Not stated.",
        "",
    ]
    return "\n".join(lines)
