"""MONAI / Medical Segmentation Decathlon layout: images, integer label images, ``dataset.json``.

Files (``Tr`` for the training, validation and any other split, ``Ts`` for the test split, as MSD)::

    imagesTr/<case_id>.nii.gz             the image: gzipped NIfTI, the case's array and affine (2D or 3D)
    labelsTr/<case_id>.nii.gz             the expert-accepted finding masks (source human, role finding)
    labelsTr_unreviewed/<case_id>.nii.gz  unreviewed finding masks (source weak or model), if any case has one
    labelsTr_context/<case_id>.nii.gz     anatomy context masks (role context), if any case has one
    imagesTs/, labelsTs/, labelsTs_unreviewed/, labelsTs_context/   the same for the test split
    dataset.json                          Decathlon layout, read by ``monai.data.load_decathlon_datalist``

Every label image is on its image's grid with the same affine; 0 is background. Only masks an expert
accepted are in ``labelsTr`` / ``labelsTs``: a model's or a report labeler's proposal never overwrites one
there, and anatomy (a generator's left_lung, right_lung) is never in them. Every case has a ``labelsTr`` /
``labelsTs`` file (all background when it has no accepted mask: its report-only findings are listed under
``"cases"``). When any case of the export has an unreviewed (context) mask, every case has an
``_unreviewed`` (``_context``) file, all background where it has none, and every datalist item the key
``unreviewed`` (``context``): PyTorch's and MONAI's collation take a batch's keys from its first item, so
the keys of all items are the same.

Label values: the release's class table (``ReleaseMeta.classes``, frozen with the dataset's first release
and only extended, so a class keeps its value in every version and an untouched case's label files do not
change): a mask label's value is the value of its class (its category, else its code, else
``"finding"``), the same in all three kinds of label file. A class missing from the table is a
FormatError naming the case and label. Without a table (records from outside the release service; the
service derives one in name order for releases frozen before tables were kept) classes are numbered as
they are first met. ``dataset.json["labels"]`` is the table, Decathlon style: ``{"0": "background",
"1": "1f", ...}``, so value ``v`` is ``labels[str(v)]``. uint8, uint16 for values past 255. Where masks of
one label file overlap the later label (in label order) wins; each overwritten label is listed in the
summary's ``skipped`` with the voxel count lost. 2D images are ``(X, Y)`` NIfTI; their PNG masks ``(rows,
columns)`` are transposed onto that grid.

``dataset.json``::

    {"name", "description", "reference" (citation), "licence", "release" (version, as text),
     "tensorImageSize": "3D" | "2D" | "mixed", "modality": {"0": "CT"} (DICOM modalities joined by "/"
     when the release mixes them), "labels": {"0": "background", ...},
     "numTraining", "numValidation", "numTest" (the lengths of the three lists),
     "training":   [{"image": "imagesTr/<case_id>.nii.gz", "label": "labelsTr/<case_id>.nii.gz",
                     ["unreviewed": "labelsTr_unreviewed/...", "context": "labelsTr_context/...",]
                     "case_id": "<case_id>"}],
     "validation": [...], "test": [{"image": "imagesTs/...", "label": "labelsTs/...", ...}],
     "testing": the same items as "test" (Auto3DSeg reads that key),
     "cases": {"<case_id>": {"split", "segments": [{"value", "label_id", "text", "category", "code",
               "source", "role", "file"}], "report_only": [{"label_id", "text", "code", "category",
               "assertion", "source"}]}}}

Splits train, val and test go to ``training``, ``validation`` and ``test`` (always present, possibly
empty; MONAI 1.6.1's ``load_decathlon_datalist`` cannot read an empty ``test`` list, it can read an empty
``testing``); another split name gets a list of its own. Items hold only strings, so MONAI's default collation
accepts them.
"""

from __future__ import annotations

import json
import tempfile
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
# datalist item key -> its folder for cases outside the test split, and in it
FOLDERS = {
    "image": ("imagesTr", "imagesTs"),
    "label": ("labelsTr", "labelsTs"),
    "unreviewed": ("labelsTr_unreviewed", "labelsTs_unreviewed"),
    "context": ("labelsTr_context", "labelsTs_context"),
}
EXTRA = ("unreviewed", "context")  # label files an export has only when some case has such a mask
_WHERE = {
    "label": "the label image",
    "unreviewed": "the unreviewed label image",
    "context": "the context image",
}
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
    "testing",
    "cases",
)


def label_name(label: LabelRecord) -> str:
    """The class a mask label is counted under (``releases.labels.class_name`` of its manifest entry)."""
    return label.category or label.code or "finding"


def label_file(label: LabelRecord) -> str:
    """The label image of its case a mask label goes to: ``label`` (an expert accepted it), ``unreviewed``
    (a report labeler's or a model's proposal) or ``context`` (anatomy, whatever its source)."""
    if label.role == "context":
        return "context"
    return "label" if label.source == "human" else "unreviewed"


class ClassValues:
    """Class name -> label value: the release's frozen table, or numbered as first met when it has none."""

    def __init__(self, classes: dict[int, str]):
        self.frozen = bool(classes)
        self.by_name: dict[str, int] = {}
        for value, name in sorted(classes.items()):
            if int(value) < 1:
                raise FormatError("classes", f"value {value} of class {name!r}: 0 is the background")
            if name in self.by_name:
                raise FormatError(
                    "classes", f"class {name!r} has two values, {self.by_name[name]} and {value}"
                )
            self.by_name[name] = int(value)

    def of(self, case: CaseRecord, label: LabelRecord) -> int:
        name = label_name(label)
        value = self.by_name.get(name)
        if value is None:
            if self.frozen:
                raise FormatError(
                    f"{case.case_id}/{label.label_id}",
                    f"class {name!r} is not in the release's class table "
                    f"({', '.join(sorted(self.by_name)) or 'empty'}): freeze the release again",
                )
            value = self.by_name[name] = len(self.by_name) + 1
        return value

    def labels(self) -> dict[str, str]:
        ordered = sorted(self.by_name.items(), key=lambda kv: kv[1])
        return {"0": "background", **{str(value): name for name, value in ordered}}


def export(
    cases: Iterable[CaseRecord],
    sink: Sink,
    meta: ReleaseMeta,
    progress: Callable[[int], None] | None = None,
) -> ExportSummary:
    summary = ExportSummary(format=NAME)
    values = ClassValues(meta.classes)
    spool = JsonSpool(sink, "monai")  # the lists and the case map, on disk until the end
    # the cases' items until the end, when it is known which extra label files every case needs
    pending = tempfile.TemporaryFile("w+", encoding="utf-8", dir=sink.scratch())
    extra_used: set[str] = set()
    dims: set[int] = set()
    modalities: set[str] = set()
    seen: set[str] = set()
    try:
        for case in cases:
            check_unique(case, seen)
            key = SPLIT_KEYS.get(case.split, case.split)
            if key in _RESERVED:
                raise FormatError(f"{case.case_id}.split", f"split name {case.split!r} is a reserved key")
            if case.image.ndim not in (2, 3):
                raise FormatError(
                    f"{case.case_id}.image", f"expected a 2D or 3D image, got {case.image.ndim}D"
                )
            labels = split_labels(case, LABEL_KINDS, summary.skipped)
            groups: dict[str, list[tuple[LabelRecord, int]]] = {"label": [], "unreviewed": [], "context": []}
            for label in labels:
                if label.kind == "mask":
                    groups[label_file(label)].append((label, values.of(case, label)))
            test = int(case.split == "test")
            name = f"{case.case_id}.nii.gz"
            paths = {kind: f"{folders[test]}/{name}" for kind, folders in FOLDERS.items()}
            put_image(sink, paths["image"], case.image, case.case_id)
            summary.files += 1
            has = []
            for kind, masks in groups.items():
                if kind == "label" or masks:
                    image = _label_image(case, masks, summary, _WHERE[kind])
                    put_nifti(sink, paths[kind], image, case.image.affine)
                    summary.files += 1
                    del image
                    if kind != "label":
                        has.append(kind)
                        extra_used.add(kind)
            record = {
                "key": key,
                "case_id": case.case_id,
                "test": test,
                "name": name,
                "shape": [int(n) for n in case.image.shape],
                "affine": np.asarray(case.image.affine, dtype=float).tolist(),
                "has": has,
            }
            pending.write(json.dumps(record) + "\n")
            spool.add(
                "cases",
                name=case.case_id,
                item={
                    "split": case.split,
                    "segments": [
                        {
                            "value": value,
                            "label_id": label.label_id,
                            "text": label.text,
                            "category": label.category,
                            "code": label.code,
                            "source": label.source,
                            "role": label.role,
                            "file": paths[kind],
                        }
                        for kind, masks in groups.items()
                        for label, value in masks
                    ],
                    "report_only": [
                        label_dict(label, REPORT_ONLY_FIELDS) for label in labels if label.kind != "mask"
                    ],
                },
            )
            dims.add(case.image.ndim)
            modalities.add(case.image.modality)
            summary.cases += 1
            summary.labels += len(labels)
            if progress is not None:
                progress(summary.cases)
        extra = [kind for kind in EXTRA if kind in extra_used]
        pending.seek(0)
        for line in pending:
            record = json.loads(line)
            item = {"image": f"{FOLDERS['image'][record['test']]}/{record['name']}"}
            item["label"] = f"{FOLDERS['label'][record['test']]}/{record['name']}"
            for kind in extra:
                item[kind] = f"{FOLDERS[kind][record['test']]}/{record['name']}"
                if kind not in record["has"]:  # all background, so that every item has the same keys
                    empty = np.zeros(record["shape"], dtype=np.uint8, order="F")
                    put_nifti(sink, item[kind], empty, np.asarray(record["affine"]))
                    summary.files += 1
            item["case_id"] = record["case_id"]
            spool.add(record["key"], item)
            if record["key"] == "test":
                spool.add("testing", item)  # Auto3DSeg's key for the images it predicts
        head = {
            "name": meta.name,
            "description": meta.description,
            "reference": meta.citation,
            "licence": meta.licence,
            "release": str(meta.version),
            "tensorImageSize": f"{dims.pop()}D" if len(dims) == 1 else ("mixed" if dims else "3D"),
            "modality": {"0": "/".join(sorted(modalities))},
            "labels": values.labels(),
            "numTraining": spool.count("training"),
            "numValidation": spool.count("validation"),
            "numTest": spool.count("test"),
        }
        lists = [*SPLIT_KEYS.values(), "testing"]
        other = [k for k in spool.parts if k not in (*lists, "cases")]
        spool.write(sink, "dataset.json", head, [*lists, *other, "cases"], maps=["cases"])
    finally:
        pending.close()
        spool.close()
    summary.files += 1
    return summary


def _label_image(
    case: CaseRecord, masks: list[tuple[LabelRecord, int]], summary: ExportSummary, where: str
) -> np.ndarray:
    """One label image of the case on its image grid: each mask gets its class value; later masks
    overwrite earlier ones (reported)."""
    shape = tuple(int(n) for n in case.image.shape)
    owner = np.zeros(shape, dtype=np.uint8 if len(masks) < 256 else np.uint16, order="F")
    for index, (label, _value) in enumerate(masks, start=1):
        mask = mask_on_grid(case, label)
        previous = owner[mask]
        if previous.any():
            owners, counts = np.unique(previous[previous != 0], return_counts=True)
            for earlier, count in zip(owners, counts):
                lost = masks[int(earlier) - 1][0]
                summary.skipped.append(
                    f"{case.case_id}/{lost.label_id}: {int(count)} voxels overlap {label.label_id}, "
                    f"which is later and wins in {where}"
                )
        owner[mask] = index
        del mask, previous
    top = max((value for _label, value in masks), default=0)
    lut = np.zeros(len(masks) + 1, dtype=np.uint8 if top <= 255 else np.uint16)
    for index, (_label, value) in enumerate(masks, start=1):
        lut[index] = value
    return np.asfortranarray(lut[owner])
