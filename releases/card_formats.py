"""What the dataset card says about label codes and export formats: the legend of every code a release can
hold (ReXGroundingCT categories, CheXpert observations, PET/CT seeds, anatomy context classes) and, per
export format, its file layout and a loading snippet that reads it with the format's own library.

Pure text, no database. The snippets read the files each exporter writes (``releases/formats/``) through
their published keys; ``tests/releases/test_release_card.py`` runs every snippet on a real export, so a
snippet that no longer fits its exporter fails there.
"""

from __future__ import annotations

from dataclasses import dataclass

from labeling.types import CHEXPERT_OBSERVATIONS
from labeling.vocabulary import REX_CATEGORIES

# Codes that are neither a ReXGroundingCT category nor a CheXpert observation but have a fixed meaning.
OTHER_CODES: dict[str, str] = {
    "suv": "PET/CT lesion seed from a report's SUVmax statement (SUVmax >= 2.5; PET/CT rules labeler)",
    "finding": "a mask label with neither a category nor a code (a finding drawn by hand)",
}


def rex_kind(code: str) -> str:
    return "typically non-focal" if code.startswith("1") else "typically focal"


def code_meaning(code: str, role: str = "finding") -> str:
    """What a class name or label code stands for, in words ("" when the platform does not know)."""
    if code in REX_CATEGORIES:
        return f"ReXGroundingCT {code}: {REX_CATEGORIES[code]} ({rex_kind(code)})"
    if code in CHEXPERT_OBSERVATIONS:
        return f"CheXpert observation {code}"
    if code in OTHER_CODES:
        return OTHER_CODES[code]
    if role == "context":
        return f"anatomy context mask ({code.replace('_', ' ')}) from a generator or model, not a finding"
    return ""


@dataclass(frozen=True)
class FormatDoc:
    name: str  # the exporter's NAME
    title: str
    dims: tuple[int, ...]  # image dimensions the format holds
    kinds: tuple[str, ...]  # label kinds it holds (its LABEL_KINDS)
    layout: str  # Markdown lines
    snippet: str  # Python, run in the export's folder


FORMATS: tuple[FormatDoc, ...] = (
    FormatDoc(
        name="rexgroundingct",
        title="ReXGroundingCT (nibabel + json)",
        dims=(3,),
        kinds=("mask", "none"),
        layout="""\
- `dataset.json`: `{"train": [entry], "val": [...], "test": [...]}`, an entry per CT with the published
  keys `name`, `findings` (`{"0": sentence}`), `entity_counts`, `shape` `[H, W, D]`, `pixels`, `categories`
  (`{"0": "2b"}`), `protocol`
- `segmentations/<name>`: `(F, H, W, D)` array, channel `f` = finding `"f"`, one value per entity
  (26-connected component), on the image grid (no axis flipped)
- `dataset/<split>/<split>_<p>/<split>_<p>_<letter>/<name>`: the CT, where CT-RATE keeps its volumes
- `reports_dataset.json` (every label, negative and report-only ones too), `dataset_platform.json`
  (provenance, affine; the unreviewed and context masks in `segmentations_unreviewed/` and
  `segmentations_context/`)""",
        snippet="""\
import json

import nibabel as nib
import numpy as np

data = json.load(open("dataset.json"))
for split in ("train", "val", "test"):
    for entry in data[split]:
        name = entry["name"]  # e.g. train_12_a_1.nii.gz
        s, patient, letter, _ = name[: -len(".nii.gz")].split("_")
        image = nib.load(f"dataset/{s}/{s}_{patient}/{s}_{patient}_{letter}/{name}")
        seg = np.asarray(nib.load(f"segmentations/{name}").dataobj)  # (F, H, W, D)
        assert seg.shape[1:] == image.shape
        for f, sentence in entry["findings"].items():
            entities = seg[int(f)]  # 0 background, 1..n one value per entity
            print(name, entry["categories"][f], sentence, int(entities.max()), "entities")
""",
    ),
    FormatDoc(
        name="monai",
        title="MONAI / Medical Segmentation Decathlon (load_decathlon_datalist + LoadImaged)",
        dims=(2, 3),
        kinds=("mask", "none"),
        layout="""\
- `dataset.json`: Decathlon layout; `training` / `validation` / `test` lists of `{"image", "label",
  "case_id"}`, `labels` `{"0": "background", "1": ...}` = the class table below; `cases` per case id
- `imagesTr/<case>.nii.gz`, `labelsTr/<case>.nii.gz`: image and integer label image on one grid""",
        snippet="""\
import json

from monai.data import load_decathlon_datalist
from monai.transforms import LoadImaged

load = LoadImaged(keys=["image", "label"])
for key in ("training", "validation", "test"):
    if not json.load(open("dataset.json"))[key]:
        continue  # load_decathlon_datalist fails on an empty "test" list
    for item in load_decathlon_datalist("dataset.json", True, key, base_dir="."):
        data = load(item)  # data["image"], data["label"]: arrays on one grid
        print(key, item["case_id"], tuple(data["image"].shape), sorted(set(data["label"].unique().tolist())))
""",
    ),
    FormatDoc(
        name="dicom-seg",
        title="DICOM series + DICOM SEG (pydicom + highdicom segread)",
        dims=(3,),
        kinds=("mask", "none"),
        layout="""\
- `series/<case>/<nnnn>.dcm`: the de-identified series rebuilt from the stored image, one file per slice
- `seg/<case>.dcm`: a BINARY Segmentation of that series, one segment per mask label
- `index.json`: `cases` with their files, UIDs and `segments` (`segment_number` <-> `label_id`, text,
  code)""",
        snippet="""\
import json

import highdicom as hd
import pydicom

index = json.load(open("index.json"))
for case in index["cases"]:
    series = [pydicom.dcmread(path) for path in case["files"]]  # slice order
    if case["seg"] is None:
        continue
    seg = hd.seg.segread(case["seg"])
    for segment in case["segments"]:
        mask = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[ds.SOPInstanceUID for ds in series],
            segment_numbers=[segment["segment_number"]],
            assert_missing_frames_are_empty=True,
        )[..., 0]  # (slices, rows, columns)
        print(case["case_id"], segment["label_id"], segment["text"], int(mask.sum()), "voxels")
""",
    ),
    FormatDoc(
        name="chexpert",
        title="CheXpert CSVs and image tree (pandas + PIL)",
        dims=(2,),
        kinds=("mask", "box", "none"),
        layout="""\
- `chexpert/train.csv`, `chexpert/valid.csv`, `chexpert/test.csv` (the release's train, val and test
  splits): CheXpert's columns `Path, Sex, Age, Frontal/Lateral, AP/PA`, then the 14 observations in
  CheXpert's order: `1.0` positive, `0.0` negative, `-1.0` uncertain, empty = not mentioned
- `chexpert/<split>/patient<NNNNN>/study<S>/view<V>_<frontal|lateral|unknown>.png`: the radiographs; `Path`
  is relative to the export's folder (`chexpert/` plays the part of `CheXpert-v1.0-small/`)
- `chexpert/cases.csv`: `Path` -> the platform's case id, split, patient, study and report ids""",
        snippet="""\
import os

import pandas as pd
from PIL import Image

root = "."  # the export's folder, the parent of chexpert/
for name in ("train.csv", "valid.csv", "test.csv"):
    labels = pd.read_csv(os.path.join(root, "chexpert", name))
    for row in labels.itertuples():
        image = Image.open(os.path.join(root, row.Path))  # 8-bit grayscale, rows x columns
        assert image.size[0] > 0
    print(name, len(labels), "radiographs; positive:", labels.iloc[:, 5:].eq(1.0).sum().to_dict())
""",
    ),
    FormatDoc(
        name="radfact",
        title="Grounded reports for RadFact (json)",
        dims=(2,),
        kinds=("mask", "box", "none"),
        layout="""\
- `radfact/grounded_reports.json`: a list of `{"example_id", "split", "target", "prediction"}`; each phrase
  `{"text", "boxes"}`, boxes `{"x_min", "y_min", "x_max", "y_max"}` in [0, 1] or `null`; `target` = the
  reviewed findings, `prediction` = the unreviewed proposals of the same radiograph""",
        snippet="""\
import json

examples = json.load(open("radfact/grounded_reports.json"))
for example in examples:
    for phrase in example["target"]:
        print(example["example_id"], phrase["text"], phrase["boxes"])
""",
    ),
    FormatDoc(
        name="fgcxr",
        title="FG-CXR gaze regions and sentences (json + PIL, as the authors' data.py)",
        dims=(2,),
        kinds=("mask", "box", "none"),
        layout="""\
- `fgcxr/full.json`: `{study_id: {"dicom_id", "type": [the 7 regions], "sentence": [7 sentences]}}`; a
  study is one reader's gaze recording of one radiograph
- `fgcxr/manifest.json`: `regions` (heart, left, upper left, lower left, right, upper right, lower
  right) and `studies` `[{"study_id", "dicom_id", "image", "anatomy_mask", "regions": [{"name",
  "sentence", "heatmap"}], "split"}]`, paths below `fgcxr/`
- `fgcxr/images/<dicom_id>.jpg`, `fgcxr/heatmaps/<study_id>_<region>.png` (8-bit, maximum 255),
  `fgcxr/masks/<study_id>_mask.png`; `fgcxr/definitions.json` (how each heatmap was made, its maximum),
  `fgcxr/index.json` (per radiograph its report and grounded findings, `fgcxr/findings/`)""",
        snippet="""\
import json

import numpy as np
from PIL import Image

root = "fgcxr"
manifest = json.load(open(f"{root}/manifest.json"))
for study in manifest["studies"]:
    image = Image.open(f"{root}/{study['image']}").convert("RGB")
    for region in study["regions"]:  # the seven regions, in FG-CXR's order
        heatmap = np.asarray(Image.open(f"{root}/{region['heatmap']}").convert("L"))
        assert heatmap.shape == (image.height, image.width)
        print(study["study_id"], study["split"], region["name"], region["sentence"])
""",
    ),
    FormatDoc(
        name="iai",
        title="I-AI intense-focus table (pandas + SimpleITK + PIL, as I-AI's register_tiai_e2e_v2)",
        dims=(2,),
        kinds=("mask", "box", "none"),
        layout="""\
- `iai/train.csv`, `iai/dev.csv`, `iai/test.csv`: one row per gaze recording and type (`_type` c = heart,
  l = left lung, r = right lung) with `reflacx_id`, `path`, `mask (…)`, `heatmap (…)`, `sentence (…)` per
  type, `severity`, `has finding`; paths relative to `iai/`
- `iai/images/<case_id>.dcm` (the radiograph, a DICOM SimpleITK reads as one slice),
  `iai/heatmaps/<reflacx_id>_<type>.png` (8-bit, maximum 255), `iai/masks/<reflacx_id>_<type>.png` (0/255),
  `iai/definitions.json` (how each heatmap was made, the label rules)""",
        snippet="""\
import numpy as np
import pandas as pd
import SimpleITK as sitk
from PIL import Image

COLUMNS = {"c": "cardiomegaly", "l": "left lung", "r": "right lung"}
table = pd.read_csv("iai/train.csv")
for _, row in table.iterrows():
    kind = COLUMNS[row["_type"]]
    image = sitk.GetArrayFromImage(sitk.ReadImage(f"iai/{row['path']}"))  # (1, rows, columns)
    heatmap = np.asarray(Image.open(f"iai/{row[f'heatmap ({kind})']}").convert("L").resize((224, 224)))
    focus = heatmap > np.unique(heatmap)[len(np.unique(heatmap)) // 5]  # I-AI's intense focus
    print(row["reflacx_id"], row["_type"], image.shape, int(focus.sum()))
""",
    ),
)

FORMATS_BY_NAME = {f.name: f for f in FORMATS}


def format_fit(doc: FormatDoc, dims: set[int], kinds: set[str]) -> str:
    """Why a release with images of ``dims`` and labels of ``kinds`` cannot be exported in ``doc`` ("" if
    it can)."""
    reasons = []
    if dims - set(doc.dims):
        reasons.append(f"holds {' and '.join(f'{d}D' for d in doc.dims)} images only")
    if kinds - set(doc.kinds):
        reasons.append(f"holds no {', '.join(sorted(kinds - set(doc.kinds)))} labels")
    return "; ".join(reasons)
