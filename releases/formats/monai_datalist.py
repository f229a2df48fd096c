"""MONAI / Medical Segmentation Decathlon datalist: images, one integer label image per case, dataset.json.

Files::

    imagesTr/<case_id>.nii.gz   the image: gzipped NIfTI, the case's array and affine (2D or 3D)
    labelsTr/<case_id>.nii.gz   the label image on the image grid, the same affine
    dataset.json                Decathlon layout, read by ``monai.data.load_decathlon_datalist``

Every case, whatever its split, has its image in ``imagesTr`` and a label image in ``labelsTr`` (all
background when the case has no mask label: its report-only findings are listed under ``"cases"``).
Label values: 0 is background; a mask label gets ``1 + index`` of its name in the release's label list,
the name being the label's category (ReXGroundingCT 1a..2h), else its code, else ``"finding"``. The
list grows as the release streams (first seen, first numbered) and ``dataset.json["labels"]`` written
at the end holds it, Decathlon style: ``{"0": "background", "1": "2b", ...}``, so value ``v`` is
``labels[str(v)]``. uint8, uint16 past 255 values. Where masks overlap the later label (in label order)
wins; each overwritten label is listed in the summary's ``skipped`` with the voxel count lost (the
label itself is still written). 2D images are ``(X, Y)`` NIfTI; their PNG masks ``(rows, columns)`` are
transposed onto that grid.

``dataset.json``::

    {"name", "description", "reference" (citation), "licence", "release" (version, as text),
     "tensorImageSize": "3D" | "2D" | "mixed", "modality": {"0": "CT"}, "labels": {"0": "background", ...},
     "numTraining", "numValidation", "numTest",
     "training":   [{"image": "imagesTr/<case_id>.nii.gz", "label": "labelsTr/<case_id>.nii.gz",
                     "case_id": "<case_id>"}, ...],
     "validation": [...], "test": [...],
     "cases": {"<case_id>": {"split", "segments": [{"value", "label_id", "text", "category", "code",
               "source"}], "report_only": [{"label_id", "text", "code", "category", "assertion",
               "source"}]}}}

Splits train, val and test go to ``training``, ``validation`` and ``test``; another split name gets a
list of its own. Items hold only strings so MONAI's default collation accepts them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from releases.formats.common import check_unique, mask_on_grid, put_image, put_nifti, split_labels
from releases.records import (
    REPORT_ONLY_FIELDS,
    CaseRecord,
    ExportSummary,
    FormatError,
    JsonSpool,
    LabelRecord,
    ReleaseMeta,
    Sink,
    label_dict,
)

NAME = "monai"
LABEL_KINDS = ("mask", "none")

SPLIT_KEYS = {"train": "training", "val": "validation", "test": "test"}
_RESERVED = (
    "name",
    "description",
    "reference",
    "licence",
    "release",
    "tensorImageSize",
    "modality",
    "labels",
    "numTraining",
    "numValidation",
    "numTest",
    "cases",
)


def label_name(label: LabelRecord) -> str:
    """The name a mask label is counted under in ``dataset.json["labels"]``."""
    return label.category or label.code or "finding"


def export(
    cases: Iterable[CaseRecord],
    sink: Sink,
    meta: ReleaseMeta,
    progress: Callable[[int], None] | None = None,
) -> ExportSummary:
    summary = ExportSummary(format=NAME)
    values: dict[str, int] = {}  # label name -> label value, first seen first
    spool = JsonSpool(sink, "monai")  # the lists and the case map, on disk until the end
    dims: set[int] = set()
    modalities: list[str] = []
    seen: set[str] = set()
    for case in cases:
        check_unique(case, seen)
        key = SPLIT_KEYS.get(case.split, case.split)
        if key in _RESERVED:
            raise FormatError(f"{case.case_id}.split", f"split name {case.split!r} is a reserved key")
        if case.image.ndim not in (2, 3):
            raise FormatError(f"{case.case_id}.image", f"expected a 2D or 3D image, got {case.image.ndim}D")
        labels = split_labels(case, LABEL_KINDS, summary.skipped)
        masks = [label for label in labels if label.kind == "mask"]
        for label in masks:
            values.setdefault(label_name(label), len(values) + 1)
        name = f"{case.case_id}.nii.gz"
        put_image(sink, f"imagesTr/{name}", case.image, case.case_id)
        put_nifti(sink, f"labelsTr/{name}", _label_image(case, masks, values, summary), case.image.affine)
        summary.files += 2
        spool.add(key, {"image": f"imagesTr/{name}", "label": f"labelsTr/{name}", "case_id": case.case_id})
        spool.add(
            "cases",
            name=case.case_id,
            item={
                "split": case.split,
                "segments": [
                    {
                        "value": values[label_name(label)],
                        "label_id": label.label_id,
                        "text": label.text,
                        "category": label.category,
                        "code": label.code,
                        "source": label.source,
                    }
                    for label in masks
                ],
                "report_only": [
                    label_dict(label, REPORT_ONLY_FIELDS) for label in labels if label.kind != "mask"
                ],
            },
        )
        dims.add(case.image.ndim)
        if case.image.modality not in modalities:
            modalities.append(case.image.modality)
        summary.cases += 1
        summary.labels += len(labels)
        if progress is not None:
            progress(summary.cases)
    head = {
        "name": meta.name,
        "description": meta.description,
        "reference": meta.citation,
        "licence": meta.licence,
        "release": str(meta.version),
        "tensorImageSize": f"{dims.pop()}D" if len(dims) == 1 else ("mixed" if dims else "3D"),
        "modality": {"0": "/".join(modalities)},
        "labels": {"0": "background", **{str(v): name for name, v in values.items()}},
        "numTraining": spool.count("training"),
        "numValidation": spool.count("validation"),
        "numTest": spool.count("test"),
    }
    other = [k for k in spool.parts if k not in (*SPLIT_KEYS.values(), "cases")]
    try:
        spool.write(sink, "dataset.json", head, [*SPLIT_KEYS.values(), *other, "cases"], maps=["cases"])
    finally:
        spool.close()
    summary.files += 1
    return summary


def _label_image(
    case: CaseRecord, masks: list[LabelRecord], values: dict[str, int], summary: ExportSummary
) -> np.ndarray:
    """The case's label image on the image grid; later masks overwrite earlier ones (reported)."""
    shape = tuple(int(n) for n in case.image.shape)
    owner = np.zeros(shape, dtype=np.uint8 if len(masks) < 256 else np.uint16, order="F")
    for index, label in enumerate(masks, start=1):
        mask = mask_on_grid(case, label)
        previous = owner[mask]
        if previous.any():
            owners, counts = np.unique(previous[previous != 0], return_counts=True)
            for earlier, count in zip(owners, counts):
                lost = masks[int(earlier) - 1]
                summary.skipped.append(
                    f"{case.case_id}/{lost.label_id}: {int(count)} voxels overlap {label.label_id}, "
                    "which is later and wins in the label image"
                )
        owner[mask] = index
        del mask, previous
    top = max((values[label_name(label)] for label in masks), default=0)
    lut = np.zeros(len(masks) + 1, dtype=np.uint8 if top <= 255 else np.uint16)
    for index, label in enumerate(masks, start=1):
        lut[index] = values[label_name(label)]
    return np.asfortranarray(lut[owner])
