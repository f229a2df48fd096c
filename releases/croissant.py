"""``croissant.json``: the Croissant 1.0 description (JSON-LD, http://mlcommons.org/croissant/1.0) of one
export of a release, so ``mlcroissant.Dataset(jsonld="croissant.json")`` finds its files and reads its
index as records.

What it holds:
- the dataset: name, description, version (``<version>.0.0``), ``datePublished`` (when the release was
  frozen), licence (the Creative Commons URL where the licence text names one, else the text), citation,
  keywords;
- ``distribution``: every file the export wrote before it, from the sink's file list (README.md and
  manifest.json included; SHA256SUMS, written after it, lists croissant.json in turn). Files at the top of
  the export, and a file alone of its kind in a folder, are ``cr:FileObject``s with their ``sha256`` and
  ``contentSize``; the per-case files are grouped into ``cr:FileSet``s by their fixed folders, the number
  of per-case folders below them (names holding digits) and extension, with a glob (``images/*.nii.gz``,
  ``series/*/*.dcm``, ``fgcxr/heatmaps/*.png``), their count and bytes in the description (each one's
  sha256 is in SHA256SUMS and manifest.json);
- ``recordSet``: the rows of the format's index file, one record set per split where the index keeps
  splits apart, each field read with the ``column`` (CSV) or ``jsonPath`` (JSON) the format documents.

The file list is streamed (the sink keeps it on disk) and grouped as it goes: memory holds one entry per
group, not per file. Deterministic for a given export: no clock is read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from labeling.types import CHEXPERT_OBSERVATIONS
from releases.card_meta import HUB_SPLITS, licence_parts, licence_url

CONTEXT: dict[str, Any] = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "samplingRate": "cr:samplingRate",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}
CONFORMS_TO = "http://mlcommons.org/croissant/1.0"

# file name ending -> encodingFormat (MIME type, or a URL describing the format where none is registered)
ENCODINGS = (
    (".nii.gz", "https://nifti.nimh.nih.gov/nifti-1/"),
    (".nii", "https://nifti.nimh.nih.gov/nifti-1/"),
    (".dcm", "application/dicom"),
    (".json", "application/json"),
    (".csv", "text/csv"),
    (".png", "image/png"),
    (".npy", "https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html"),
    (".md", "text/markdown"),
)
TEXT, FLOAT, INTEGER = "sc:Text", "sc:Float", "sc:Integer"
# The index files of each format: always a FileObject of their own (the record sets read them), never
# folded into a FileSet with the files beside them.
CHEXPERT_CSV = {"train": "chexpert/train.csv", "val": "chexpert/valid.csv", "test": "chexpert/test.csv"}
INDEX_FILES: dict[str, frozenset[str]] = {
    "rexgroundingct": frozenset({"dataset.json", "reports_dataset.json", "dataset_platform.json"}),
    "monai": frozenset({"dataset.json"}),
    "dicom-seg": frozenset({"index.json"}),
    "chexpert": frozenset({*CHEXPERT_CSV.values(), "chexpert/cases.csv"}),
    "radfact": frozenset({"radfact/grounded_reports.json"}),
    "fgcxr": frozenset({f"fgcxr/{n}.json" for n in ("full", "manifest", "definitions", "index")}),
    "iai": frozenset({"iai/train.csv", "iai/dev.csv", "iai/test.csv", "iai/definitions.json"}),
}
IAI_CSV = {"train": "iai/train.csv", "val": "iai/dev.csv", "test": "iai/test.csv"}


def encoding(relpath: str) -> str:
    name = relpath.rsplit("/", 1)[-1]
    for ending, fmt in ENCODINGS:
        if name.endswith(ending):
            return fmt
    return "text/plain"  # SHA256SUMS and other plain files


def _ending(name: str) -> str:
    """A file's extension from its first dot (``.nii.gz``, ``.heatmap.png``), "" without one."""
    return name[name.index(".") :] if "." in name else ""


@dataclass
class _Group:
    glob: str
    count: int = 0
    size: int = 0
    first: tuple[str, int, str] | None = None


@dataclass
class FileGroups:
    """The export's files, grouped while they stream by."""

    index: frozenset[str] = frozenset()  # files that are FileObjects wherever they are
    groups: dict[tuple[str, int, str], _Group] = field(default_factory=dict)
    top: list[tuple[str, int, str]] = field(default_factory=list)  # top-level and index files

    def add(self, relpath: str, size: int, digest: str) -> None:
        parts = relpath.split("/")
        if len(parts) == 1 or relpath in self.index:
            self.top.append((relpath, size, digest))
            return
        folders = parts[:-1]
        # the folders named alike for every case (images, seg, fgcxr/heatmaps, chexpert/train) stay; from the
        # first one named after a case, patient or study (they hold digits: P1A2B3C4D5E6F-s12, patient00002,
        # train_12) each is a '*'
        fixed = next((i for i, name in enumerate(folders) if re.search(r"\d", name)), len(folders))
        ending = _ending(parts[-1])
        key = ("/".join(folders[:fixed]), len(folders) - fixed, ending)
        group = self.groups.get(key)
        if group is None:
            glob = "/".join([*folders[:fixed], *["*"] * (len(folders) - fixed), "*"]) + ending
            group = self.groups[key] = _Group(glob=glob)
        group.count += 1
        group.size += size
        if group.first is None:
            group.first = (relpath, size, digest)

    def distribution(self) -> list[dict[str, Any]]:
        out = [file_object(*entry) for entry in sorted(self.top)]
        for (_, starred, _), group in sorted(self.groups.items()):
            if group.count == 1 and not starred and group.first is not None:
                out.append(file_object(*group.first))  # a file alone of its kind in its folder
            else:
                out.append(
                    {
                        "@type": "cr:FileSet",
                        "@id": group.glob,
                        "name": group.glob,
                        "description": f"{group.count} files, {group.size} bytes; the sha256 of each is in "
                        "SHA256SUMS and manifest.json",
                        "encodingFormat": encoding(group.glob),
                        "includes": group.glob,
                    }
                )
        return out


def file_object(relpath: str, size: int, digest: str) -> dict[str, Any]:
    return {
        "@type": "cr:FileObject",
        "@id": relpath,
        "name": relpath,
        "contentUrl": relpath,
        "contentSize": f"{size} B",
        "encodingFormat": encoding(relpath),
        "sha256": digest,
    }


# --- Record sets per format ------------------------------------------------------------------------------


def _json_fields(rs: str, path: str, items: str, names: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
    return [
        {
            "@type": "cr:Field",
            "@id": f"{rs}/{name}",
            "name": name,
            "dataType": kind,
            "source": {"fileObject": {"@id": path}, "extract": {"jsonPath": f"{items}.{name}"}},
        }
        for name, kind in names
    ]


def _record_set(rs: str, description: str, fields: list[dict[str, Any]]) -> dict[str, Any]:
    return {"@type": "cr:RecordSet", "@id": rs, "name": rs, "description": description, "field": fields}


def record_sets(fmt_name: str, splits: list[str], files: set[str]) -> list[dict[str, Any]]:
    """The record sets of an export in ``fmt_name`` whose release has cases in ``splits``; ``files`` are
    the top-level and single files written (a record set whose file is missing is left out)."""
    sets: list[dict[str, Any]] = []
    if fmt_name == "rexgroundingct" and "dataset.json" in files:
        for split in splits:
            sets.append(
                _record_set(
                    f"{split}_cases",
                    f"The {split} entries of dataset.json: one CT each, its findings in "
                    f"segmentations/<name> (channel f = finding f)",
                    _json_fields(
                        f"{split}_cases",
                        "dataset.json",
                        f"$.{split}[*]",
                        [("name", TEXT), ("protocol", TEXT)],
                    ),
                )
            )
    elif fmt_name == "monai" and "dataset.json" in files:
        for split in splits:
            key = {"train": "training", "val": "validation"}.get(split, split)
            sets.append(
                _record_set(
                    f"{HUB_SPLITS.get(split, split)}_items",
                    f"dataset.json[{key!r}]: image and label image of each case",
                    _json_fields(
                        f"{HUB_SPLITS.get(split, split)}_items",
                        "dataset.json",
                        f"$.{key}[*]",
                        [("image", TEXT), ("label", TEXT), ("case_id", TEXT)],
                    ),  # fmt: skip
                )
            )
    elif fmt_name == "dicom-seg" and "index.json" in files:
        names = [("case_id", TEXT), ("split", TEXT), ("patient_id", TEXT), ("study_uid", TEXT),
                 ("series_uid", TEXT), ("modality", TEXT)]  # fmt: skip
        sets.append(
            _record_set(
                "cases",
                "index.json cases: the series and its SEG",
                _json_fields("cases", "index.json", "$.cases[*]", names),
            )
        )
    elif fmt_name == "chexpert":
        columns = [("Path", TEXT), ("Sex", TEXT), ("Age", FLOAT), ("Frontal/Lateral", TEXT), ("AP/PA", TEXT)]
        columns += [(obs, FLOAT) for obs in CHEXPERT_OBSERVATIONS]
        for split in splits:
            path = CHEXPERT_CSV.get(split)
            if path not in files:
                continue
            rs = f"{HUB_SPLITS.get(split, split)}_labels"
            fields = [
                {
                    "@type": "cr:Field",
                    "@id": f"{rs}/{re.sub(r'[^A-Za-z0-9_]+', '_', name)}",
                    "name": name,
                    "dataType": kind,
                    "source": {"fileObject": {"@id": path}, "extract": {"column": name}},
                }
                for name, kind in columns
            ]
            sets.append(_record_set(rs, f"{path}: one row per radiograph, its image at Path", fields))
    elif fmt_name == "radfact" and "radfact/grounded_reports.json" in files:
        sets.append(
            _record_set(
                "examples",
                "radfact/grounded_reports.json: one example per radiograph (target and prediction phrases)",
                _json_fields(
                    "examples",
                    "radfact/grounded_reports.json",
                    "$[*]",
                    [("example_id", TEXT), ("split", TEXT)],
                ),
            )
        )
    elif fmt_name == "iai":
        columns = [("reflacx_id", TEXT), ("path", TEXT), ("_type", TEXT), ("severity", INTEGER),
                   ("has finding", INTEGER)]  # fmt: skip
        for split, path in IAI_CSV.items():
            if path not in files:
                continue
            rs = f"{HUB_SPLITS.get(split, split)}_table"
            fields = [
                {
                    "@type": "cr:Field",
                    "@id": f"{rs}/{re.sub(r'[^A-Za-z0-9_]+', '_', name)}",
                    "name": name,
                    "dataType": kind,
                    "source": {"fileObject": {"@id": path}, "extract": {"column": name}},
                }
                for name, kind in columns
            ]
            sets.append(
                _record_set(rs, f"{path}: one row per gaze recording and anatomy type (c, l, r)", fields)
            )
    elif fmt_name == "fgcxr" and "fgcxr/manifest.json" in files:
        names = [("study_id", TEXT), ("dicom_id", TEXT), ("image", TEXT), ("split", TEXT)]
        sets.append(
            _record_set(
                "studies",
                "fgcxr/manifest.json studies: one gaze recording of a radiograph each, its seven regions' "
                "sentences and heatmaps (paths below fgcxr/)",
                _json_fields("studies", "fgcxr/manifest.json", "$.studies[*]", names),
            )
        )
    return sets


# --- The document ----------------------------------------------------------------------------------------


def croissant(
    *,
    name: str,
    title: str,
    description: str,
    version: int,
    frozen_at: datetime | None,
    licence: str,
    citation: str,
    fmt_name: str,
    splits: list[str],
    files: Iterable[tuple[str, int, str]],
    keywords: list[str] | None = None,
) -> dict[str, Any]:
    """The Croissant JSON-LD of an export whose files (relpath, size, sha256) are ``files``."""
    groups = FileGroups(index=INDEX_FILES.get(fmt_name, frozenset()))
    for relpath, size, digest in files:
        groups.add(relpath, size, digest)
    distribution = groups.distribution()
    singles = {d["@id"] for d in distribution if d["@type"] == "cr:FileObject"}
    licences = [licence_url(ident) or part if ident else part for part, ident in licence_parts(licence)]
    doc: dict[str, Any] = {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "name": name,
        "alternateName": title,
        "description": description or f"{title}: a release of the Groundlab platform, {fmt_name} export",
        "conformsTo": CONFORMS_TO,
        "version": f"{version}.0.0",
        "citeAs": citation or f"{title}, version {version}",
        "license": licences or ["Not stated: ask the dataset's maintainers before use."],
        "keywords": keywords or [],
        "distribution": distribution,
        "recordSet": record_sets(fmt_name, splits, singles),
    }
    if frozen_at is not None:
        doc["datePublished"] = frozen_at.isoformat()
    return doc


def croissant_bytes(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, indent=1, ensure_ascii=False) + "\n").encode("utf-8")
