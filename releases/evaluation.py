"""Evaluating a grounding model (a sentence in, a mask out) with the ReXGroundingCT metrics of
``releases.metrics``, on a release's split or on a project's accepted findings.

What is evaluated: every *human* (expert-accepted), *present* finding with a *mask* of the chosen cases,
one entity per finding: its report sentence (``text``) and its mask on the scan's grid. The model gives
one mask per finding from the sentence alone (``predict(case)`` returns them in the order of
``case.findings``; None = nothing predicted), and ``releases.metrics.case_metrics`` scores them per case
(Dice, hit at Dice ≥ 0.1, instance matches at Dice ≥ 0.2, distance matches), ``aggregate`` pools the cases
(mean Dice and hit rate over all findings, micro-averaged P/R/F1, the same by category).

Sources:

- ``release_cases(release, "val")``: the cases of a frozen release's split (``ReleaseCase.split``), with
  the labels as frozen (mask files checked against their sha256). This is the figure to publish: a
  release's patient-level split is stable across versions, so the validation patients are never trained on
  (``ml.training`` leaves them out of the training cases).
- ``finding_cases(project, finding_ids)``: accepted findings' current masks, for a project with no release
  (the held-out findings of a training run).

No torch here: the caller brings the model through ``predict``. Masks are ``(X, Y[, Z])`` boolean arrays
(a radiograph's PNG, stored rows × columns, is transposed), with the scan's spacing in the same order.
"""

from __future__ import annotations

import gzip
import hashlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.core.files.storage import default_storage

from releases.metrics import aggregate, case_metrics


class EvaluationError(ValueError):
    """The cases cannot be evaluated: ``field`` names what (a release, a split, a mask)."""

    def __init__(self, field: str, reason: str):
        self.field, self.reason = field, reason
        super().__init__(f"{field}: {reason}")


@dataclass
class EvalFinding:
    key: str  # "finding-12" (a release's label id) or the finding id
    text: str  # the report sentence the model grounds
    mask: np.ndarray  # bool, the scan's grid (X, Y[, Z])
    category: str = ""  # ReXGroundingCT category (1a..2h) or "" (focal)
    code: str = ""


@dataclass
class EvalCase:
    case_id: str
    scan_id: int
    spacing: list[float]
    affine: Any
    findings: list[EvalFinding] = field(default_factory=list)

    @property
    def scan(self):
        from studies.models import Scan

        return Scan.objects.get(pk=self.scan_id)


def mask_load(key: str, sha256: str | None = None) -> np.ndarray:
    """A stored mask as a boolean ``(X, Y[, Z])`` array (NIfTI, gzipped or not, or a PNG of rows ×
    columns), checked against ``sha256`` when given."""
    with default_storage.open(key, "rb") as fh:
        data = fh.read()
    if sha256 and hashlib.sha256(data).hexdigest() != sha256:
        raise EvaluationError("mask", f"{key} changed since it was frozen (sha256 differs)")
    if key.endswith(".png"):
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("L")).T != 0
    import nibabel as nib

    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return np.asarray(nib.Nifti1Image.from_bytes(data).dataobj) != 0


def release_cases(release, split: str = "val", *, project=None, ndim: int | None = None) -> list[EvalCase]:
    """The cases of ``release``'s ``split`` that hold at least one human, present mask label (those of
    ``project`` and of ``ndim``-D scans only, when given), in case order."""
    from releases.models import ReleaseCase, ReleaseLabel, ReleaseStatus

    if release.status != ReleaseStatus.FROZEN:
        raise EvaluationError("release", f"{release} is {release.status}, not frozen")
    if split not in ("train", "val", "test"):
        raise EvaluationError("split", f"{split!r}: train, val or test")
    cases = ReleaseCase.objects.filter(release=release, split=split, scan__isnull=False).select_related(
        "scan"
    )
    if project is not None:
        cases = cases.filter(scan__project=project)
    if ndim is not None:
        cases = cases.filter(scan__ndim=ndim)
    out = []
    for case in cases.order_by("case_id"):
        labels = ReleaseLabel.objects.filter(
            release=release, case=case, source="human", kind="mask", assertion="present"
        ).exclude(mask_key="")
        findings = [
            EvalFinding(
                key=label.label_id,
                text=label.text,
                mask=mask_load(label.mask_key, label.mask_sha256),
                category=label.category,
                code=label.code,
            )  # fmt: skip
            for label in labels.order_by("label_id")
        ]
        if findings:
            scan = case.scan
            out.append(
                EvalCase(
                    case_id=case.case_id,
                    scan_id=scan.pk,
                    spacing=[float(s) for s in scan.spacing],
                    affine=scan.affine,
                    findings=findings,
                )  # fmt: skip
            )
    return out


def finding_cases(project, finding_ids: Sequence[int]) -> list[EvalCase]:
    """Accepted findings' newest masks (by id, in ``project``; a box saved after the mask leaves it the
    finding's mask: ``annotation.versions.groundings``), grouped by scan."""
    from annotation.models import Finding, FindingStatus
    from annotation.versions import groundings
    from releases.labels import _category

    findings = list(
        Finding.objects.filter(
            project=project, pk__in=list(finding_ids), status=FindingStatus.ACCEPTED, scan__isnull=False
        )
        .select_related("scan")
        .order_by("scan_id", "id")
    )
    grounded = groundings(findings)
    by_scan: dict[int, EvalCase] = {}
    for f in findings:
        current = grounded[f.pk].mask
        if current is None:
            continue
        case = by_scan.get(f.scan_id)
        if case is None:
            scan = f.scan
            case = by_scan[f.scan_id] = EvalCase(
                case_id=f"scan-{scan.pk}", scan_id=scan.pk, spacing=[float(s) for s in scan.spacing],
                affine=scan.affine,
            )  # fmt: skip
        case.findings.append(
            EvalFinding(
                key=str(f.pk),
                text=f.text,
                mask=mask_load(current.mask.name),
                category=_category(f.code),
                code=f.code,
            )  # fmt: skip
        )
    return list(by_scan.values())


def evaluate(
    cases: Sequence[EvalCase], predict: Callable[[EvalCase], Sequence[np.ndarray | None]]
) -> dict[str, Any]:
    """``releases.metrics.aggregate`` over ``cases`` of the masks ``predict`` gives for each case's
    findings (in order), with ``per_case`` Dice means; ``EvaluationError`` when there is nothing to
    evaluate."""
    if not cases:
        raise EvaluationError("cases", "no case with an accepted (human) mask to evaluate on")
    results, per_case = [], {}
    for case in cases:
        predicted = list(predict(case))
        if len(predicted) != len(case.findings):
            raise EvaluationError("predict", f"{len(predicted)} masks for {len(case.findings)} findings")
        metrics = case_metrics(
            {f.key: p for f, p in zip(case.findings, predicted, strict=True)},
            {f.key: f.mask for f in case.findings},
            case.spacing,
            {f.key: f.category for f in case.findings},
        )
        results.append(metrics)
        per_case[case.case_id] = {
            "dice_mean": metrics["dice_mean"],
            "findings": {f["finding"]: round(float(f["dice"]), 4) for f in metrics["findings"]},
        }
    out = aggregate(results)
    out["per_case"] = per_case
    return out
