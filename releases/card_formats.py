"""What the dataset card says about label codes and export formats: the legend of every code a release can
hold (ReXGroundingCT categories, CheXpert observations, PET/CT seeds, anatomy context classes) and, per
export format, its file layout and a loading snippet that reads it with the format's own library.

Pure text, no database. The snippets (``releases/card_snippets/<format>.txt``) read the files each
exporter writes (``releases/formats/``) through their published keys; ``tests/releases/test_release_card.py``
runs every snippet on a real export, so a snippet that no longer fits its exporter fails there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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


SNIPPETS = Path(__file__).resolve().parent / "card_snippets"


def _snippet(name: str) -> str:
    """A format's loading snippet: Python for the card's readers, kept as text beside this module (it
    imports the format's own library, MONAI for one, which the web tier never imports)."""
    return (SNIPPETS / f"{name}.txt").read_text(encoding="utf-8")


@dataclass(frozen=True)
class FormatDoc:
    name: str  # the exporter's NAME
    title: str
    dims: tuple[int, ...]  # image dimensions the format holds
    kinds: tuple[str, ...]  # label kinds it holds (its LABEL_KINDS)
    layout: str  # Markdown lines
    snippet: str  # Python, run in the export's folder (releases/card_snippets/<name>.txt)


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
        snippet=_snippet("rexgroundingct"),
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
        snippet=_snippet("monai"),
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
        snippet=_snippet("dicom-seg"),
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
        snippet=_snippet("chexpert"),
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
        snippet=_snippet("radfact"),
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
        snippet=_snippet("fgcxr"),
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
        snippet=_snippet("iai"),
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
