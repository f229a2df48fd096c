"""ReXGroundingCT layout, drop-in for code written for the published dataset (Hugging Face
``rajpurkarlab/ReXGroundingCT``; what its users' code reads is in docs/exports/rexgroundingct.md).

Files::

    dataset.json                    the published keys only: {"train": [entry], "val": [...], "test": [...]}
    segmentations/<name>            every case: (F, H, W, D) entity array of its reviewed findings
    dataset/<split>/<split>_<p>/<split>_<p>_<letter>/<name>
                                    the image, where CT-RATE (the published images) keeps it
    reports_dataset.json            every written label of every case, the same split lists
    dataset_platform.json           what the published files have no key for, per ``name``
    segmentations_unreviewed/<name> weak and model (unreviewed) finding masks, same layout; only if any
    segmentations_context/<name>    anatomy context masks (lungs, heart ...), same layout; only if any

Names: ``<split>_<p>_<letter>_<s>.nii.gz`` as CT-RATE's ``train_1741_b_2.nii.gz``: ``p`` the patient's
number, ``letter`` the study's rank among the patient's studies (a, b, ..., z, aa, ab, ...), ``s`` the
scan's rank in its study, from ``CaseRecord.numbering`` (fixed when the release was frozen). Releases
frozen before numbering was recorded (``numbering == {}``) are numbered here, in the release's case
order: ``p`` = 1 + the number of patients met before the case's patient, the study letter and scan
number by first appearance in the patient and in the study; the same release always gets the same
names. Splits are train, val and test only (the top-level keys). A name met twice is refused.

``dataset.json`` entry, exactly these keys, in this order::

    {"name": "<name>", "findings": {"0": text}, "entity_counts": {"0": n}, "shape": [H, W, D],
     "pixels": {"0": non-zero voxels}, "categories": {"0": "2b"}, "protocol": "groundlab-review"}

Findings are the case's mask labels with role ``finding`` and source ``human`` (accepted in review), in
label order; key ``"f"`` is channel ``f``. Weak and model masks (not reviewed) and context anatomy masks
are not findings: they go to their own folders and are described in ``dataset_platform.json``.
``protocol`` says how the masks were made: ``groundlab-review`` = drawn or accepted by an annotator and
approved by a radiologist in Groundlab; instances are not capped (the published ``protocol1`` /
``protocol2`` are the authors' own annotation rounds and are not claimed).

Segmentations: ``(H, W, D)`` are the image array's axes in the image file's order, so channel ``f``
voxel ``[i, j, k]`` is image voxel ``[i, j, k]`` (no flip, no reordering). Inside a channel each
26-connected component is one entity, numbered 1..n in ``scipy.ndimage.label`` raster order; uint8,
uint16 past 255 entities (uint32 past 65535). A case without findings gets one all-zero channel,
``(1, H, W, D)``, and empty ``findings``: NIfTI cannot hold a zero-length axis. The header holds the
image's affine (sform and qform), which readers apply to the first three array axes; the world position
of channel voxel ``[f, i, j, k]`` is ``affine @ [i, j, k, 1]`` (RAS+ mm) with the image file's affine.

``reports_dataset.json``: ``{"train": [{"name", "findings": {"k": text}, "categories": {"k": code}}],
"val": ..., "test": ...}`` with every written label (the findings first, under the same keys as in
``dataset.json``, then the report-only, unreviewed and context ones in label order).

``dataset_platform.json``: ``{"release": {name, version, description, licence, citation, format,
frozen_at, previous_version, protocol, naming, ...}, "cases": {"<name>": {"case_id", "split",
"patient", "study", "numbering", "numbered" ("release" | "export"), "image", "segmentation", "affine",
"report_id", "report": {section: text}, "findings": {"0": {label_id, source, code, category, location,
laterality, assertion, provenance}}, "unreviewed": {"file", "channels": {"0": {...label, text,
entity_count, pixels}}} | null, "context": same | null, "labels": {"k": {...label, "kind", "file",
"channel"}}}}}``; ``labels`` keys are those of ``reports_dataset.json``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from scipy import ndimage

from releases.formats.common import check_unique, mask_on_grid, put_image, put_nifti, split_labels
from releases.records import (
    CaseRecord,
    ExportSummary,
    FormatError,
    JsonSpool,
    LabelRecord,
    ReleaseMeta,
    Sink,
    label_dict,
)

NAME = "rexgroundingct"
LABEL_KINDS = ("mask", "none")

SPLITS = ("train", "val", "test")
PROTOCOL = "groundlab-review"
SIDECAR = "dataset_platform.json"
ENTRY_KEYS = ("name", "findings", "entity_counts", "shape", "pixels", "categories", "protocol")
FOLDERS = {
    "findings": "segmentations",
    "unreviewed": "segmentations_unreviewed",
    "context": "segmentations_context",
}
_CONNECTIVITY_26 = np.ones((3, 3, 3), dtype=bool)
_NAME = re.compile(r"^(?P<split>[a-z]+)_(?P<patient>\d+)_(?P<study>[a-z]+)_(?P<scan>\d+)\.nii\.gz$")


def study_letters(rank: int) -> str:
    """1 -> a, 26 -> z, 27 -> aa: the study letter of CT-RATE names (bijective base 26)."""
    if rank < 1:
        raise ValueError(f"study rank {rank} is not 1 or more")
    out = ""
    while rank:
        rank, rest = divmod(rank - 1, 26)
        out = chr(ord("a") + rest) + out
    return out


def image_path(name: str) -> str:
    """Where CT-RATE keeps volume ``name``: ``dataset/<split>/<split>_<p>/<split>_<p>_<letter>/<name>``."""
    found = _NAME.match(name)
    if found is None:
        raise ValueError(f"{name!r} is not a <split>_<patient>_<letter>_<scan>.nii.gz name")
    patient = f"{found['split']}_{found['patient']}"
    return f"dataset/{found['split']}/{patient}/{patient}_{found['study']}/{name}"


class _Numbers:
    """The numbers of cases without frozen numbering: patients, their studies and the studies' scans
    counted by first appearance in the release's case order."""

    def __init__(self) -> None:
        self.patients: dict[str, int] = {}
        self.studies_of: dict[str, int] = {}  # patient -> studies met
        self.studies: dict[tuple[str, str], int] = {}
        self.scans: dict[tuple[str, str], int] = {}

    def of(self, case: CaseRecord) -> dict[str, int]:
        patient = self.patients.setdefault(case.patient_id, len(self.patients) + 1)
        key = (case.patient_id, case.study_id)
        if key not in self.studies:
            self.studies_of[case.patient_id] = self.studies_of.get(case.patient_id, 0) + 1
            self.studies[key] = self.studies_of[case.patient_id]
        self.scans[key] = self.scans.get(key, 0) + 1
        return {"patient": patient, "study": self.studies[key], "scan": self.scans[key]}


def case_name(case: CaseRecord, numbers: _Numbers) -> tuple[str, dict[str, int], str]:
    """The case's published-style name, the numbers it was made from and where they came from."""
    frozen = case.numbering or {}
    if all(isinstance(frozen.get(k), int) and frozen[k] >= 1 for k in ("patient", "study", "scan")):
        used, origin = {k: int(frozen[k]) for k in ("patient", "study", "scan")}, "release"
    elif frozen:
        raise FormatError(f"{case.case_id}.numbering", f"expected positive patient, study, scan: {frozen}")
    else:
        used, origin = numbers.of(case), "export"
    name = f"{case.split}_{used['patient']}_{study_letters(used['study'])}_{used['scan']}.nii.gz"
    return name, used, origin


def export(
    cases: Iterable[CaseRecord],
    sink: Sink,
    meta: ReleaseMeta,
    progress: Callable[[int], None] | None = None,
) -> ExportSummary:
    summary = ExportSummary(format=NAME)
    dataset = JsonSpool(sink, "rex-dataset")  # entries on disk until the end: memory stays one case
    reports = JsonSpool(sink, "rex-reports")
    platform = JsonSpool(sink, "rex-platform")
    seen: set[str] = set()
    names: dict[str, str] = {}
    numbers = _Numbers()
    origins: set[str] = set()
    try:
        for case in cases:
            check_unique(case, seen)
            if case.image.ndim != 3:
                raise FormatError(
                    f"{case.case_id}.image", f"ReXGroundingCT holds 3D images, got {case.image.ndim}D"
                )
            if case.split not in SPLITS:
                raise FormatError(
                    f"{case.case_id}.split", f"split {case.split!r} is not one of {', '.join(SPLITS)}"
                )
            name, used, origin = case_name(case, numbers)
            if name in names:
                raise FormatError(f"{case.case_id}.name", f"{name} is already the name of {names[name]}")
            names[name] = case.case_id
            origins.add(origin)
            summary.files += _write_case(case, name, used, origin, sink, summary, dataset, reports, platform)
            summary.cases += 1
            if progress is not None:
                progress(summary.cases)
        dataset.write(sink, "dataset.json", {}, SPLITS)
        reports.write(sink, "reports_dataset.json", {}, SPLITS)
        platform.write(sink, SIDECAR, {"release": _release_head(meta, origins)}, ["cases"], maps=["cases"])
    finally:
        dataset.close()
        reports.close()
        platform.close()
    summary.files += 3
    return summary


def _write_case(
    case: CaseRecord,
    name: str,
    used: dict[str, int],
    origin: str,
    sink: Sink,
    summary: ExportSummary,
    dataset: JsonSpool,
    reports: JsonSpool,
    platform: JsonSpool,
) -> int:
    """Write one case's files and index entries; returns the number of files written."""
    labels = split_labels(case, LABEL_KINDS, summary.skipped)
    summary.labels += len(labels)
    groups: dict[str, list[LabelRecord]] = {"findings": [], "unreviewed": [], "context": []}
    for label in labels:
        if label.kind != "mask":
            continue
        if label.role == "context":
            groups["context"].append(label)
        elif label.source == "human":
            groups["findings"].append(label)
        else:
            groups["unreviewed"].append(label)
    image = image_path(name)
    put_image(sink, image, case.image, case.case_id)
    files = 1
    stats: dict[str, list[tuple[int, int]]] = {}
    for group, members in groups.items():
        if not members and group != "findings":
            continue  # every case has a findings file; the others only when they have masks
        seg, stats[group] = _segmentation(case, members)
        put_nifti(sink, f"{FOLDERS[group]}/{name}", seg, case.image.affine)
        del seg
        files += 1

    findings = groups["findings"]
    entry: dict[str, Any] = {
        "name": name,
        "findings": {str(f): label.text for f, label in enumerate(findings)},
        "entity_counts": {str(f): stats["findings"][f][0] for f in range(len(findings))},
        "shape": [int(n) for n in case.image.shape],
        "pixels": {str(f): stats["findings"][f][1] for f in range(len(findings))},
        "categories": {str(f): label.category for f, label in enumerate(findings)},
        "protocol": PROTOCOL,
    }
    dataset.add(case.split, entry)

    # reports: the findings under their dataset.json keys, then every other written label in label order
    placed = {id(label): ("findings", f) for f, label in enumerate(findings)}
    for group in ("unreviewed", "context"):
        placed.update({id(label): (group, c) for c, label in enumerate(groups[group])})
    ordered = findings + [label for label in labels if placed.get(id(label), ("", 0))[0] != "findings"]
    reports.add(
        case.split,
        {
            "name": name,
            "findings": {str(k): label.text for k, label in enumerate(ordered)},
            "categories": {str(k): label.category for k, label in enumerate(ordered)},
        },
    )
    described: dict[str, Any] = {}
    for k, label in enumerate(ordered):
        group, channel = placed.get(id(label), (None, None))
        described[str(k)] = {
            **label_dict(label),
            "role": label.role,
            "file": f"{FOLDERS[group]}/{name}" if group else None,
            "channel": channel,
        }
    platform.add(
        "cases",
        {
            "case_id": case.case_id,
            "split": case.split,
            "patient": case.patient_id,
            "study": case.study_id,
            "numbering": used,
            "numbered": origin,
            "image": image,
            "segmentation": f"{FOLDERS['findings']}/{name}",
            "affine": np.asarray(case.image.affine, dtype=float).tolist(),
            "report_id": case.report_id,
            "report": dict(case.report),
            "findings": {
                str(f): {k: v for k, v in label_dict(label).items() if k not in ("text", "kind")}
                for f, label in enumerate(findings)
            },
            "unreviewed": _group_sidecar(groups["unreviewed"], stats.get("unreviewed"), "unreviewed", name),
            "context": _group_sidecar(groups["context"], stats.get("context"), "context", name),
            "labels": described,
        },
        name=name,
    )
    return files


def _group_sidecar(
    members: list[LabelRecord], stats: list[tuple[int, int]] | None, group: str, name: str
) -> dict[str, Any] | None:
    if not members or stats is None:
        return None
    return {
        "file": f"{FOLDERS[group]}/{name}",
        "channels": {
            str(c): {**label_dict(label), "role": label.role, "entity_count": count, "pixels": pixels}
            for c, (label, (count, pixels)) in enumerate(zip(members, stats, strict=True))
        },
    }


def _segmentation(case: CaseRecord, masks: list[LabelRecord]) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The (F, X, Y, Z) entity array of ``masks`` (one zero channel when there are none) and per channel
    (entities, non-zero voxels)."""
    shape = tuple(int(n) for n in case.image.shape)
    seg = np.zeros((max(len(masks), 1), *shape), dtype=np.uint8, order="F")
    stats = []
    for f, label in enumerate(masks):
        mask = mask_on_grid(case, label)
        count = 0
        found = ndimage.find_objects(mask.view(np.uint8))
        if found and found[0] is not None:
            box = found[0]  # label only inside the mask's bounding box: all its components lie there
            entities, count = ndimage.label(mask[box], structure=_CONNECTIVITY_26)
            if count > np.iinfo(seg.dtype).max:
                seg = seg.astype(np.uint16 if count <= 65535 else np.uint32, order="F")
            seg[(f, *box)] = entities
        stats.append((int(count), int(np.count_nonzero(mask))))
    return seg, stats


def _release_head(meta: ReleaseMeta, origins: set[str]) -> dict[str, Any]:
    return {
        "name": meta.name,
        "version": meta.version,
        "description": meta.description,
        "licence": meta.licence,
        "citation": meta.citation,
        "format": NAME,
        "frozen_at": meta.frozen_at.isoformat() if meta.frozen_at else None,
        "previous_version": meta.previous_version,
        "title": meta.extra.get("title", ""),
        "manifest_sha256": meta.extra.get("manifest_sha256", ""),
        "protocol": {
            PROTOCOL: "every dataset.json finding was drawn or accepted by an annotator and approved by a "
            "radiologist in Groundlab; instances are not capped per finding"
        },
        "naming": sorted(origins),
        "folders": {
            "images": "dataset/<split>/<split>_<p>/<split>_<p>_<letter>/<name>",
            **{group: f"{folder}/<name>" for group, folder in FOLDERS.items()},
        },
    }
