"""The dataset card (the README.md of every export of a release) and what it reports: counts, how labels
were made, and the ReXGroundingCT metrics of the proposals the accepted masks started from."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import numpy as np
from django.utils import timezone

from core.storage import storage_local_copy
from labeling.models import RegionProposal
from releases.models import Dataset, DatasetRelease
from releases.records import LabelRecord


def _table(rows: list[list[Any]], head: list[str]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


class CardStats:
    """How the labels were made, gathered case by case while a release is frozen."""

    def __init__(self):
        self.labelers: Counter = Counter()
        self.models: Counter = Counter()
        self.readers: Counter = Counter()
        self.multi = 0  # labels read by several readers
        self.reader_counts: set[str] = set()
        self.methods: set[str] = set()
        self.sums = {"mean_dice": [0.0, 0], "mean_iou": [0.0, 0], "decision_agreement": [0.0, 0]}

    def add(self, case: dict) -> None:
        for e in case["labels"]:
            p = e["provenance"]
            if p.get("labeler"):
                self.labelers[f"{p['labeler']} (label run {p.get('label_run')})"] += 1
            if p.get("model_version") or (e["source"] == "model" and p.get("source")):
                self.models[p.get("model_version") or p["source"]] += 1
            if p.get("author"):
                self.readers[p["author"]] += 1
            several = p.get("readers")
            if several:
                self.multi += 1
                self.reader_counts.add(str(several["readers"]))
                self.methods.add(str(several["method"]))
                for name, acc in self.sums.items():
                    if several.get(name) is not None:
                        acc[0] += several[name]
                        acc[1] += 1

    def mean(self, name: str) -> str:
        total, n = self.sums[name]
        return f"{total / n:.3f}" if n else "n/a"


def dataset_card(dataset: Dataset, release: DatasetRelease, stats: CardStats) -> str:
    counts, metrics = release.counts, release.metrics
    splits = ["train", "val", "test"]
    labelers, models, readers = stats.labelers, stats.models, stats.readers
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
    lines += ["", "### Agreement between readers", ""]
    if stats.multi:
        lines.append(
            f"{stats.multi} labels were read independently by {', '.join(sorted(stats.reader_counts))}"
            f" readers, then merged ({', '.join(sorted(stats.methods))} consensus) and "
            f"confirmed by a radiologist: mean pairwise Dice {stats.mean('mean_dice')}, IoU "
            f"{stats.mean('mean_iou')}, share of reader pairs agreeing on the finding "
            f"{stats.mean('decision_agreement')}."
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


class Tally:
    """The release's counts, added up case by case."""

    def __init__(self):
        self.cases, self.gaze = Counter(), 0
        self.patients: dict[str, set[str]] = defaultdict(set)
        self.categories: dict[str, Counter] = defaultdict(Counter)
        self.sources, self.kinds = Counter(), Counter()

    def add(self, c: dict) -> None:
        self.cases[c["split"]] += 1
        self.patients[c["split"]].add(c["patient"])
        self.gaze += len(c["gaze"])
        for e in c["labels"]:
            self.sources[e["source"]] += 1
            self.kinds[e["kind"]] += 1
            if e["assertion"] == "present":
                self.categories[e["category"] or e["code"] or "(none)"][c["split"]] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "cases": sum(self.cases.values()),
            "patients": len(set().union(*self.patients.values())),
            "labels": sum(self.sources.values()),
            "cases_per_split": dict(self.cases),
            "patients_per_split": {split: len(p) for split, p in self.patients.items()},
            "labels_per_source": dict(self.sources),
            "labels_per_kind": dict(self.kinds),
            "categories": {k: dict(v) for k, v in sorted(self.categories.items())},
            "gaze_records": self.gaze,
        }


def proposal_results(c: dict) -> list[dict]:
    """ReXGroundingCT metrics of the proposals this case's accepted masks started from, against them."""
    from releases import metrics

    results = []
    for e in c["labels"]:
        region = e["provenance"].get("region_proposal") if e["source"] == "human" else None
        if e["kind"] != "mask" or region is None:
            continue
        proposal = RegionProposal.objects.filter(pk=region).first()
        if proposal is None or not proposal.mask:
            continue
        pred = _read_mask(proposal.mask.name)
        true = _read_mask(e["mask_key"])
        if pred is None or true is None or pred.shape != true.shape:
            continue
        spacing = [float(s) for s in c["spacing"]]
        if true.ndim == 2:  # PNG rows x columns: spacing (row, column)
            spacing = spacing[::-1]
        result = metrics.case_metrics(
            [pred], [true], spacing=spacing, categories=[e["category"] or e["code"]]
        )
        results.append(result)
    return results


def aggregate_metrics(results: list[dict]) -> dict[str, Any]:
    from releases import metrics

    if not results:
        return {"compared": 0}
    summary = metrics.aggregate(results)
    summary["compared"] = len(results)
    return summary


def _read_mask(key: str) -> np.ndarray | None:
    with storage_local_copy(key) as path:
        record = LabelRecord(label_id="", text="", mask_path=path)
        return record.load_mask()
