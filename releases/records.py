"""What a release hands to its exporters: plain records, no database, no Django.

The release service (``releases/services.py``) turns a frozen manifest into a stream of ``CaseRecord``s,
one per scan, with its image, its labels and (for radiographs) its gaze anatomy records; each format in
``releases/formats/`` writes them through a ``Sink``. Arrays are loaded on demand (``load_*``), so an
exporter holds one case in memory at a time whatever the size of the release.

Geometry follows the platform's canonical NIfTI: arrays ``(X, Y[, Z])`` (X = image column, Y = image row,
Z = slice) with ``affine`` voxel → RAS+ mm. 2D masks and heatmaps of radiographs are given as ``(rows,
columns)`` = ``(Y, X)`` arrays, as PNGs store them. Boxes are voxel indices ``[xmin, ymin(, zmin), xmax,
ymax(, zmax)]`` with the max exclusive.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from studies.masks import mask_load

LABEL_KINDS = ("mask", "box", "none")
SOURCES = ("human", "weak", "model")


class FormatError(ValueError):
    """A release cannot be written in a format; ``field`` names what (a label, a case, an option)."""

    def __init__(self, field: str, reason: str):
        self.field, self.reason = field, reason
        super().__init__(f"{field}: {reason}")


@dataclass
class ImageRecord:
    path: Path  # the canonical NIfTI (.nii or .nii.gz), a local file
    shape: list[int]  # (X, Y[, Z])
    spacing: list[float]
    affine: np.ndarray  # 4x4 voxel -> RAS+ mm
    modality: str  # CT, PT, CR, DX, MR, ...
    study_uid: str = ""  # de-identified (remapped) UIDs
    series_uid: str = ""
    sop_uids: list[str] = field(default_factory=list)  # remapped SOP Instance UIDs, slice order; [] if none
    dicom_header: dict[str, Any] | None = None  # the de-identified first header (pydicom JSON dict)
    sha256: str = ""

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def load(self) -> np.ndarray:
        """The image array ``(X, Y[, Z])`` as stored (HU for CT)."""
        import nibabel as nib

        return np.asarray(nib.load(str(self.path)).dataobj)


@dataclass
class LabelRecord:
    """One label of a case: a grounded finding (kind mask or box) or a report-level one (kind none).

    ``source``: ``human`` (an expert accepted it in review), ``weak`` (a report labeler's proposal, not
    reviewed), ``model`` (a model's or generator's proposal, not reviewed). ``assertion``: present,
    absent or uncertain (accepted grounded findings are present)."""

    label_id: str  # stable across releases, e.g. "finding-12" or "proposal-40"
    text: str  # the finding sentence or phrase
    kind: str = "none"  # mask, box or none
    code: str = ""  # schema code: a CheXpert observation, a ReXGroundingCT F/I code, ...
    category: str = ""  # ReXGroundingCT category 1a..2h, or ""
    location: str = ""
    laterality: str = ""
    assertion: str = "present"
    source: str = "human"
    box: list[float] | None = None
    mask_path: Path | None = None  # NIfTI on the image grid, or PNG width = X (2D): studies/masks.py
    provenance: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""  # of the mask file
    # "finding": a finding class; "context": an anatomy mask from a generator (left_lung, heart, ...), which
    # formats keep apart from the finding classes (``releases/labels.py`` decides at freeze)
    role: str = "finding"

    def load_mask(self) -> np.ndarray | None:
        """The mask as a boolean array on the image grid, the canonical ``(X, Y[, Z])`` of the image array
        whatever the file (PNG or NIfTI): the codec's (``studies/masks.py``). Formats that write pictures
        take ``(rows, columns)`` from ``studies.masks.mask_rows``."""
        if self.mask_path is None:
            return None
        return mask_load(self.mask_path)


LABEL_FIELDS = (
    "label_id", "text", "kind", "code", "category", "location", "laterality", "assertion", "source",
    "provenance",
)  # fmt: skip
REPORT_ONLY_FIELDS = ("label_id", "text", "code", "category", "assertion", "source")


def label_dict(label: LabelRecord, fields: tuple[str, ...] = LABEL_FIELDS) -> dict[str, Any]:
    """A label's fields as exporters write them into their JSON files."""
    return {name: getattr(label, name) for name in fields}


@dataclass
class GazeAnatomyRecord:
    """FG-CXR / I-AI style: one anatomy of one radiograph as one reader looked at it and spoke."""

    anatomy: str  # left lung, right lung, heart, ...
    caption: str  # the reader's sentences about it, joined
    sentences: list[str]
    dwell_s: float
    fixations: int
    time_to_first_s: float | None
    dwell_share: float
    reader: str
    recording_id: str
    load_heatmap: Callable[[], np.ndarray]  # float32 (rows, columns), at image resolution
    load_mask: Callable[[], np.ndarray | None]  # bool (rows, columns) anatomy mask, or None
    load_focus: Callable[[], np.ndarray]  # bool (rows, columns) intense-focus mask
    provenance: dict[str, Any] = field(default_factory=dict)


@dataclass
class CaseRecord:
    case_id: str  # stable across releases; file names are made from it
    patient_id: str  # the patient's pseudonym
    study_id: str
    split: str  # train, val or test
    image: ImageRecord
    report: dict[str, str] = field(default_factory=dict)  # section -> text (findings, impression, ...)
    report_id: str = ""
    labels: list[LabelRecord] = field(default_factory=list)
    gaze: list[GazeAnatomyRecord] = field(default_factory=list)
    # the radiograph's gaze recordings its gaze label run gave no anatomy record:
    # [{"recording_id", "reader", "gaze_run", "status", "problems"}] (the FG-CXR and I-AI exports name them)
    gaze_lacking: list[dict[str, Any]] = field(default_factory=list)
    # stable numbers for datasets that name files by patient / study / series (ReXGroundingCT's
    # ``train_1741_b_2``): {"patient": int, "study": int (1 = the patient's first study), "scan": int
    # (1 = the study's first scan)}, fixed at freeze; {} in releases frozen before they were recorded
    numbering: dict[str, int] = field(default_factory=dict)


@dataclass
class ReleaseMeta:
    name: str
    version: int
    description: str = ""
    licence: str = ""
    citation: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    frozen_at: datetime | None = None  # when the release was frozen: dates written into files come from it
    # the dataset's class table, label value -> class name, frozen at its first release and only extended
    # ({} when the release has no mask class); formats with integer label images use these values
    classes: dict[int, str] = field(default_factory=dict)
    previous_version: int | None = None


@dataclass
class ExportSummary:
    format: str
    cases: int = 0
    labels: int = 0
    skipped: list[str] = field(default_factory=list)  # "<case>/<label>: reason"
    files: int = 0


class Sink(Protocol):
    """Where an export's files go: a folder, or the platform's storage. Paths are relative, with '/'."""

    def put_bytes(self, relpath: str, data: bytes) -> str: ...  # returns the file's sha256

    def put_file(self, relpath: str, local: Path) -> str: ...  # copies (or moves) a finished local file

    def scratch(self) -> Path: ...  # a private temporary folder for writers that need a file name


class JsonSpool:
    """The lists and maps of a JSON index kept in scratch files while cases stream by, written out as one
    JSON object at the end: an export's memory does not grow with the release's size.

    ``add(key, item)`` appends to the list ``key``; ``add(key, item, name=...)`` sets ``name`` in the map
    ``key``. ``write(sink, relpath, head, keys)`` writes ``{**head, key: [...] or {...} for key in keys}``
    (keys never added are written empty; ``maps`` names the keys that are maps)."""

    def __init__(self, sink: Sink, prefix: str = "index"):
        import tempfile

        self.folder = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=sink.scratch()))
        self.parts: dict[str, tuple[Any, int]] = {}

    def add(self, key: str, item: Any, name: str | None = None) -> None:
        import json

        fh, count = self.parts.get(key, (None, 0))
        if fh is None:
            fh = open(self.folder / f"{len(self.parts)}.part", "w+", encoding="utf-8")  # noqa: SIM115
        text = json.dumps(item, ensure_ascii=False, default=str)
        if name is not None:
            text = f"{json.dumps(name, ensure_ascii=False)}: {text}"
        fh.write((",\n" if count else "\n") + text)
        self.parts[key] = (fh, count + 1)

    def count(self, key: str) -> int:
        return self.parts.get(key, (None, 0))[1]

    def write(
        self, sink: Sink, relpath: str, head: dict[str, Any], keys: Iterable[str], maps: Iterable[str] = ()
    ) -> str:
        import json
        import shutil

        maps = set(maps)
        out = self.folder / "out.json"
        with open(out, "w", encoding="utf-8") as f:
            fields = (f"{json.dumps(k)}: {json.dumps(v, default=str)}" for k, v in head.items())
            f.write("{" + ",\n".join(fields))
            for n, key in enumerate(keys):
                f.write(("," if head or n else "") + f"\n{json.dumps(key)}: " + ("{" if key in maps else "["))
                fh, _ = self.parts.get(key, (None, 0))
                if fh is not None:
                    fh.seek(0)
                    shutil.copyfileobj(fh, f, 1 << 20)
                f.write("\n" + ("}" if key in maps else "]"))
            f.write("\n}\n")
        return sink.put_file(relpath, out)

    def close(self) -> None:
        import shutil

        for fh, _ in self.parts.values():
            fh.close()
        self.parts = {}
        shutil.rmtree(self.folder, ignore_errors=True)


def sha256_path(path: Path, chunk: int = 4 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class FileList:
    """The (relpath, size, sha256) of every file an export wrote, kept in a temporary file rather than in
    memory (a release may have millions of files); ``write_sums`` gives it as ``SHA256SUMS`` lines
    (``sha256sum -c`` reads them)."""

    def __init__(self):
        import tempfile

        self._fh = tempfile.TemporaryFile("w+", encoding="utf-8")
        self._n = 0
        self.bytes = 0

    def append(self, item: tuple[str, int, str]) -> None:
        relpath, size, digest = item
        if "\n" in relpath:
            raise FormatError("path", f"{relpath!r}: a file name cannot hold a line break")
        self._fh.seek(0, 2)
        self._fh.write(f"{digest}  {size}  {relpath}\n")
        self._n += 1
        self.bytes += size

    def __len__(self) -> int:
        return self._n

    def __bool__(self) -> bool:
        return self._n > 0

    def __iter__(self) -> Iterator[tuple[str, int, str]]:
        self._fh.seek(0)
        for line in self._fh:
            digest, size, relpath = line.rstrip("\n").split("  ", 2)
            yield relpath, int(size), digest

    def write_sums(self, out) -> None:
        """``<sha256>  <relpath>`` per file into the text file ``out``."""
        for relpath, _size, digest in self:
            out.write(f"{digest}  {relpath}\n")


class DirSink:
    """Writes into a local folder; ``files`` lists (relpath, size, sha256) of everything written."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.files = FileList()
        self._scratch = self.root / ".scratch"

    def _target(self, relpath: str) -> Path:
        if relpath.startswith("/") or ".." in relpath.split("/"):
            raise FormatError("path", f"{relpath!r} is not a relative path inside the export")
        target = self.root / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def put_bytes(self, relpath: str, data: bytes) -> str:
        target = self._target(relpath)
        target.write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        self.files.append((relpath, len(data), digest))
        return digest

    def put_file(self, relpath: str, local: Path) -> str:
        target = self._target(relpath)
        os.replace(local, target) if Path(local).parent == self._scratch else _copy(local, target)
        os.chmod(target, FILE_MODE)
        digest = sha256_path(target)
        self.files.append((relpath, target.stat().st_size, digest))
        return digest

    def scratch(self) -> Path:
        self._scratch.mkdir(parents=True, exist_ok=True)
        return self._scratch

    def close(self) -> None:
        import shutil

        shutil.rmtree(self._scratch, ignore_errors=True)


def _copy(src: Path, dst: Path) -> None:
    import shutil

    shutil.copyfile(src, dst)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() gives a new file: scratch files made by mkstemp are 0600


def cases_with_kind(cases: Iterable[CaseRecord], kinds: Iterable[str]) -> list[str]:
    """``"<case>/<label>"`` of every label whose kind is not in ``kinds``."""
    allowed = set(kinds)
    return [f"{c.case_id}/{label.label_id}" for c in cases for label in c.labels if label.kind not in allowed]
