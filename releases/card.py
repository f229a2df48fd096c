"""The dataset card (the README.md of every export of a release) and what it reports.

``dataset_card`` writes, for a release being frozen: a YAML block the Hugging Face Hub reads (licence,
tasks, size, tags: ``releases/card_meta.py``), then the counts (cases, patients and images per split and
modality, labels per source and kind), the legend of every class and code, the images' scanners and
geometry, how the labels were made (with the ReXGroundingCT metrics of the proposals the accepted masks
started from), the files and a loading snippet per export format (``releases/card_formats.py``), the
de-identification applied at ingest, intended use and limitations, the changes from the previous version,
and the licence per project. Each export adds its format's ``configs`` (``card_meta.export_readme``).

The card is deterministic for a given release: the only date is the release's ``frozen_at``, every table is
sorted. ``CardStats`` gathers what it needs case by case while the release is frozen: counters keyed by
modality, class, code or scanner, never a list per case; the scans' rows and de-identified headers are read
a batch at a time (``SCAN_BATCH``).
"""

from __future__ import annotations

import gzip
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.core.files.storage import default_storage

from labeling.models import RegionProposal
from releases.models import Dataset, DatasetRelease, ReleaseStatus
from studies.masks import mask_read

SCAN_BATCH = 500  # scans whose rows and headers are read together
SPLITS = ("train", "val", "test")


def _table(rows: list[list[Any]], head: list[str]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


class Range:
    """The smallest and largest of the values added (None until one is)."""

    def __init__(self):
        self.low: float | None = None
        self.high: float | None = None

    def add(self, value: float | None) -> None:
        if value is None or not np.isfinite(value):
            return
        value = float(value)
        self.low = value if self.low is None else min(self.low, value)
        self.high = value if self.high is None else max(self.high, value)

    def text(self, unit: str = "") -> str:
        if self.low is None or self.high is None:
            return "n/a"
        low, high = f"{self.low:.4g}", f"{self.high:.4g}"
        return (low if low == high else f"{low} – {high}") + unit


@dataclass
class ModalityStats:
    """What the card reports about the images of one modality."""

    scans: Counter = field(default_factory=Counter)  # split -> scans
    dims: Counter = field(default_factory=Counter)  # 2 or 3 -> scans
    sources: Counter = field(default_factory=Counter)  # source format (dicom, nifti, png, jpeg) -> scans
    scanners: Counter = field(default_factory=Counter)  # "manufacturer model" -> scans
    burned_in: Counter = field(default_factory=Counter)  # YES / UNKNOWN / NO -> scans
    labels: Counter = field(default_factory=Counter)  # (source, kind) -> labels
    columns: Range = field(default_factory=Range)
    rows: Range = field(default_factory=Range)
    slices: Range = field(default_factory=Range)
    pixel_spacing: Range = field(default_factory=Range)  # in-plane, mm (measured sources only)
    slice_spacing: Range = field(default_factory=Range)  # between slice centres, mm
    thickness: Range = field(default_factory=Range)  # SliceThickness of the header, mm
    unmeasured: int = 0  # scans whose spacing the source did not give (PNG/JPEG: 1.0 mm assumed)


class CardStats:
    """How the labels were made and what the images are, gathered case by case while a release is frozen."""

    def __init__(self):
        self.labelers: Counter = Counter()
        self.models: Counter = Counter()
        self.readers: Counter = Counter()
        self.multi = 0  # labels read by several readers
        self.reader_counts: set[str] = set()
        self.methods: set[str] = set()
        self.sums = {"mean_dice": [0.0, 0], "mean_iou": [0.0, 0], "decision_agreement": [0.0, 0]}
        self.modalities: dict[str, ModalityStats] = defaultdict(ModalityStats)
        self.projects: Counter = Counter()  # (project id, modality) -> scans
        self.classes: Counter = Counter()  # (class name, role) -> mask labels
        self.codes: Counter = Counter()  # (code, assertion) -> labels
        self.kinds: set[str] = set()
        self.sources: set[str] = set()
        self.context = 0  # context (anatomy) labels
        self.boxed_masks = 0  # mask labels with the finding's drawn box beside the mask
        self._pending: list[tuple[int, str, list[float]]] = []  # (scan id, modality, spacing) to read

    def add(self, case: dict) -> None:
        from releases.labels import class_name

        modality = case["modality"] or "OT"
        mod = self.modalities[modality]
        mod.scans[case["split"]] += 1
        shape, spacing = list(case["shape"]), [float(s) for s in case["spacing"]]
        mod.dims[len(shape)] += 1
        mod.columns.add(shape[0])
        mod.rows.add(shape[1] if len(shape) > 1 else None)
        if len(shape) == 3:
            mod.slices.add(shape[2])
        self.projects[(case.get("project"), modality)] += 1
        self._pending.append((case["scan"], modality, spacing))
        if len(self._pending) >= SCAN_BATCH:
            self.flush()
        for e in case["labels"]:
            mod.labels[(e["source"], e["kind"])] += 1
            self.kinds.add(e["kind"])
            self.sources.add(e["source"])
            role = e.get("role", "finding")
            if role == "context":
                self.context += 1
            if e["kind"] == "mask":
                self.classes[(class_name(e), role)] += 1
                if e.get("box") is not None:
                    self.boxed_masks += 1
            self.codes[(e["category"] or e["code"] or "", e["assertion"])] += 1
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

    def flush(self) -> None:
        """Read the pending scans' rows and de-identified headers: source format, burned-in flag,
        scanner, spacing and slice thickness."""
        from studies.models import Scan

        pending, self._pending = self._pending, []
        if not pending:
            return
        rows = {
            row["id"]: row
            for row in Scan.objects.filter(pk__in=[p[0] for p in pending]).values(
                "id", "source_format", "burned_in_annotation", "meta"
            )
        }
        for scan_id, modality, spacing in pending:
            mod = self.modalities[modality]
            row = rows.get(scan_id) or {"source_format": "", "burned_in_annotation": "", "meta": {}}
            source = row["source_format"] or "unknown"
            mod.sources[source] += 1
            mod.burned_in[row["burned_in_annotation"] or "unknown"] += 1
            if source in ("png", "jpeg"):
                mod.unmeasured += 1
            else:
                for s in spacing[:2]:
                    mod.pixel_spacing.add(s)
                if len(spacing) == 3:
                    mod.slice_spacing.add(spacing[2])
            header = _header((row["meta"] or {}).get("header_file"))
            if header is not None:
                maker = " ".join(v for v in (_tag(header, "00080070"), _tag(header, "00081090")) if v)
                mod.scanners[maker or "not recorded"] += 1
                thickness = _tag(header, "00180050")
                try:
                    mod.thickness.add(float(thickness) if thickness else None)
                except ValueError:
                    pass
            else:
                mod.scanners["no DICOM header (" + source + ")"] += 1

    def mean(self, name: str) -> str:
        total, n = self.sums[name]
        return f"{total / n:.3f}" if n else "n/a"


def _header(key: str | None) -> dict | None:
    """A scan's de-identified DICOM header (pydicom's JSON dict), or None."""
    if not key or not default_storage.exists(key):
        return None
    with default_storage.open(key, "rb") as fh:
        return json.loads(gzip.decompress(fh.read()))


def _tag(header: dict, tag: str) -> str:
    values = (header.get(tag) or {}).get("Value") or []
    return str(values[0]).strip() if values else ""


def dataset_card(dataset: Dataset, release: DatasetRelease, stats: CardStats) -> str:
    """The card of ``release`` (being frozen: its case and label rows are stored)."""
    from releases import card_sections as sections

    stats.flush()
    previous = (
        DatasetRelease.objects.filter(
            dataset=dataset, version__lt=release.version, status=ReleaseStatus.FROZEN
        )
        .order_by("-version")
        .first()
    )
    projects = list(dataset.projects.order_by("slug"))
    lines = [
        sections.front_matter(dataset, release, stats).rstrip("\n"),
        f"# {dataset.name} — version {release.version}",
        "",
        *([dataset.description, ""] if dataset.description else []),
        (f"Frozen {release.frozen_at:%Y-%m-%d %H:%M} UTC" if release.frozen_at else "Not frozen yet")
        + f" from the projects {', '.join(p.slug for p in projects)}; `manifest.json` lists every file "
        "with its sha256 and every label with its provenance.",
        "",
    ]
    lines += sections.contents(release, stats)
    lines += sections.legend(release, stats)
    lines += sections.images(stats)
    lines += sections.labels_made(release, stats)
    lines += sections.files(stats, release)
    lines += sections.deidentification(stats)
    lines += sections.intended_use(release, stats)
    lines += sections.changes(release, previous)
    lines += sections.licence(dataset, projects, stats)
    lines += ["## Citation", "", dataset.citation or "Not stated.", ""]
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
        spacing = [float(s) for s in c["spacing"]]  # (X, Y[, Z]) as the masks (studies/masks.py)
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
    return mask_read(key)
