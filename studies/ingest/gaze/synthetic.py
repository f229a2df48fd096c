"""Writers of synthetic but format-exact REFLACX and EGD-CXR recordings (tests, demo data).

``write_reflacx(root, recordings=[ReflacxSpec(...)])`` and ``write_egd(root, recordings=[EgdSpec(...)])``
write the files laid out, headed and ordered as docs/formats.md describes (CSV with CRLF line endings).
Values are deterministic: a spec without explicit fixations gets ones drawn from a seed derived from its
id, and ``spec.fixation_rows()`` returns exactly what is written. Bad input is injected with
``bad_cells`` (``{(file, data_row_index, column): raw_text}``, row index counted from 0 within the
recording), ``drop_columns`` (``{file: [column, ...]}``) and ``omit_files``.
"""

import csv
import json
import random
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from studies.ingest.gaze.egd import GAZEPOINT_COLUMNS, SCREEN_HEIGHT, SCREEN_WIDTH
from studies.ingest.gaze.reflacx import FIXATION_COLUMNS, METADATA_COLUMNS

REFLACX_PHASE1_LABELS = [
    "Atelectasis", "Consolidation", "Pulmonary edema", "Airway wall thickening", "Groundglass opacity",
    "Mass", "Nodule", "Pneumothorax", "Pleural effusion", "Pleural thickening", "Emphysema", "Fibrosis",
    "Wide mediastinum", "Enlarged cardiac silhouette", "Support devices", "Fracture", "Quality issue",
]  # fmt: skip
REFLACX_PHASE23_LABELS = [
    "Support devices", "Abnormal mediastinal contour", "Enlarged cardiac silhouette", "Enlarged hilum",
    "Hiatal hernia", "Pneumothorax", "Pleural abnormality", "Consolidation", "Groundglass opacity",
    "Atelectasis", "Lung nodule or mass", "Pulmonary edema", "High lung volume / emphysema",
    "Interstitial lung disease", "Acute fracture",
]  # fmt: skip
BOOLEAN_LABELS = {"Support devices", "Quality issue"}
DEFAULT_WORDS = [
    ("the", 1.2, 1.35), ("lungs", 1.35, 1.8), ("are", 1.8, 1.95), ("clear", 1.95, 2.4), (".", 2.4, 2.4),
    ("heart", 3.1, 3.45), ("size", 3.45, 3.8), ("is", 3.8, 3.9), ("normal", 3.9, 4.42), (",", 4.42, 4.42),
    ("no", 4.9, 5.05), ("effusion", 5.05, 5.71), (".", 5.71, 5.71),
]  # fmt: skip
EGD_MASTER_COLUMNS = [
    "dicom_id", "path", "study_id", "patient_id", "stay_id", "gender", "anchor_age",
    "image_top_pad", "image_bottom_pad", "image_left_pad", "image_right_pad",
    *[f"dx{i}" for i in range(1, 10)], *[f"dx{i}_icd" for i in range(1, 10)],
    "normal_reports", "Normal", "CHF", "pneumonia", "consolidation", "enlarged_cardiac_silhouette",
    "pleural_effusion_or_thickening", "pulmonary_edema__hazy_opacity",
    "atelectasis__chx", "cardiomegaly__chx", "consolidation__chx", "edema__chx", "pleural_effusion__chx",
    "pneumonia__chx", "no_finding__chx", "cxr_exam_indication",
]  # fmt: skip
# As in the dataset: one recognised word per phrase, its punctuation attached.
DEFAULT_PHRASES = [
    ("There", 0.84, 1.1), ("is", 1.1, 1.3), ("cardiomegaly.", 1.3, 2.9),
    ("Mild", 3.2, 3.6), ("pulmonary", 3.6, 4.3), ("vascular", 4.3, 5.0), ("congestion.", 5.0, 6.05),
    ("No", 6.6, 6.9), ("pleural", 6.9, 7.5), ("effusion.", 7.5, 8.12),
]  # fmt: skip
DEFAULT_BOXES = ["cardiac silhouette", "left clavicle", "left costophrenic angle", "right lung"]
MASK_NAMES = ("left_lung.png", "right_lung.png", "mediastanum.png", "aortic_knob.png")


def _seed(text: str) -> int:
    return zlib.crc32(text.encode())


def fmt_number(value: Any, places: int = 5) -> str:
    """Shortest text of a number as a CSV export would write it (``7.08``, ``405``)."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = f"{value:.{places}f}".rstrip("0").rstrip(".")
        return text if text not in {"", "-0"} else "0"
    return str(value)


def _write_csv(
    path: Path, header: list[str], rows: list[dict[str, str]], drop: list[str] | tuple = ()
) -> None:
    """Write rows (column -> text) under ``header`` less ``drop``, with CRLF line endings."""
    columns = [c for c in header if c not in drop]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\r\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([row.get(c, "") for c in columns])


def _cells(values: dict[str, Any], bad: dict, file: str, index: int) -> dict[str, str]:
    row = {k: fmt_number(v) for k, v in values.items()}
    for (f, i, column), raw in bad.items():
        if f == file and i == index:
            row[column] = raw
    return row


# --------------------------------------------------------------------------------------------- REFLACX


@dataclass
class ReflacxSpec:
    """One REFLACX recording. ``image_size`` is (width, height) px; ``fixations`` are
    ``(start_s, end_s, x_px, y_px)``; ``words`` are ``(word, start_s, end_s)``; ``ellipses`` are
    ``(xmin, ymin, xmax, ymax, certainty, {labels})``."""

    id: str = "P102R108451"
    dicom_id: str = "3d9d0e4b-4c5f5b1e-8b7d2f0a-5e6c1d2b-7a8f9e0d"
    phase: int | None = None  # from the id: P1.. -> 1, P2.. -> 2, P3.. -> 3
    split: str = "train"
    image_size: tuple[int, int] = (2544, 3056)
    discarded: bool = False
    fixations: list[tuple[float, float, int, int]] | None = None
    n_fixations: int = 12
    words: list[tuple[str, float, float]] | None = None
    text: str | None = None
    chest_box: tuple[int, int, int, int] | None = None
    ellipses: list[tuple[int, int, int, int, int, set[str]]] | None = None
    labels: dict[str, Any] = field(default_factory=dict)
    bad_cells: dict[tuple[str, int, str], str] = field(default_factory=dict)
    drop_columns: dict[str, list[str]] = field(default_factory=dict)
    omit_files: tuple[str, ...] = ()

    @property
    def phase_number(self) -> int:
        return self.phase or int(self.id[1])

    @property
    def label_columns(self) -> list[str]:
        return REFLACX_PHASE1_LABELS if self.phase_number == 1 else REFLACX_PHASE23_LABELS

    def fixation_rows(self) -> list[dict[str, Any]]:
        """The fixations.csv rows as numbers, column -> value, before any injected bad cell."""
        width, height = self.image_size
        points = self.fixations
        if points is None:
            rng = random.Random(_seed(self.id))
            points, t = [], 0.35
            for _ in range(self.n_fixations):
                duration = rng.randint(80, 600) / 1000
                x, y = (
                    rng.randint(int(width * 0.1), int(width * 0.9)),
                    rng.randint(int(height * 0.1), height - 1),
                )
                points.append((round(t, 3), round(t + duration, 3), x, y))
                t += duration + rng.randint(20, 400) / 1000
        rows = []
        for i, (start, end, x, y) in enumerate(points):
            rows.append(
                dict(zip(FIXATION_COLUMNS, [
                    start, end, x, y, round(1.0 + 0.013 * (i % 9), 3), 94, 94, 0.99829, 0.49841,
                    0, 0, width, height, 661, 0, 3180, 2160,
                ], strict=True))
            )  # fmt: skip
        return rows

    def word_rows(self) -> list[tuple[str, float, float]]:
        return list(self.words if self.words is not None else DEFAULT_WORDS)

    def transcription(self) -> str:
        if self.text is not None:
            return self.text
        out = ""
        for word, _, _ in self.word_rows():
            out += word if word in {".", ","} or not out else " " + word
        return out

    def chest_box_values(self) -> tuple[int, int, int, int]:
        width, height = self.image_size
        return self.chest_box or (int(width * 0.08), int(height * 0.1), int(width * 0.93), int(height * 0.88))

    def ellipse_rows(self) -> list[tuple[int, int, int, int, int, set[str]]]:
        if self.ellipses is not None:
            return self.ellipses
        width, height = self.image_size
        return [(int(width * 0.3), int(height * 0.45), int(width * 0.75), int(height * 0.8), 5,
                 {"Enlarged cardiac silhouette"})]  # fmt: skip

    def metadata_row(self) -> dict[str, Any]:
        width, height = self.image_size
        row: dict[str, Any] = {
            "id": self.id,
            "split": self.split,
            "eye_tracking_data_discarded": self.discarded,
            "image": f"physionet.org/files/mimic-cxr/2.0.0/files/p10/p10000032/s50414267/{self.dicom_id}.dcm",
            "dicom_id": self.dicom_id,
            "subject_id": 10000032,
            "image_size_x": width,
            "image_size_y": height,
        }
        for label in self.label_columns:
            row[label] = self.labels.get(label, False if label in BOOLEAN_LABELS else 0)
        return row


def write_reflacx(root: Path, *, recordings: list[ReflacxSpec] | None = None) -> Path:
    """Write ``root/main_data/...`` for the given recordings (one default recording if none); returns root."""
    root = Path(root)
    main = root / "main_data"
    main.mkdir(parents=True, exist_ok=True)
    specs = recordings if recordings is not None else [ReflacxSpec()]
    for phase in (1, 2, 3):
        in_phase = [s for s in specs if s.phase_number == phase]
        if not in_phase:
            continue
        labels = REFLACX_PHASE1_LABELS if phase == 1 else REFLACX_PHASE23_LABELS
        rows = [_cells(s.metadata_row(), s.bad_cells, "metadata", 0) for s in in_phase]
        drop = [c for s in in_phase for c in s.drop_columns.get("metadata", [])]
        _write_csv(main / f"metadata_phase_{phase}.csv", METADATA_COLUMNS + labels, rows, drop)
    for spec in specs:
        _write_reflacx_recording(main / spec.id, spec)
    return root


def _write_reflacx_recording(folder: Path, spec: ReflacxSpec) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    bad, omit = spec.bad_cells, set(spec.omit_files)

    def drop(file: str) -> list[str]:
        return spec.drop_columns.get(file, [])

    if "fixations.csv" not in omit:
        rows = [_cells(r, bad, "fixations.csv", i) for i, r in enumerate(spec.fixation_rows())]
        _write_csv(folder / "fixations.csv", FIXATION_COLUMNS, rows, drop("fixations.csv"))
    if "timestamps_transcription.csv" not in omit:
        header = ["word", "timestamp_start_word", "timestamp_end_word"]
        rows = [
            _cells(dict(zip(header, w, strict=True)), bad, "timestamps_transcription.csv", i)
            for i, w in enumerate(spec.word_rows())
        ]
        _write_csv(
            folder / "timestamps_transcription.csv", header, rows, drop("timestamps_transcription.csv")
        )
    if "transcription.txt" not in omit:
        with open(folder / "transcription.txt", "w", newline="", encoding="utf-8") as fh:
            fh.write(spec.transcription())
    if "chest_bounding_box.csv" not in omit:
        header = ["xmin", "ymin", "xmax", "ymax"]
        row = _cells(
            dict(zip(header, spec.chest_box_values(), strict=True)), bad, "chest_bounding_box.csv", 0
        )
        _write_csv(folder / "chest_bounding_box.csv", header, [row], drop("chest_bounding_box.csv"))
    if "anomaly_location_ellipses.csv" not in omit:
        header = ["xmin", "ymin", "xmax", "ymax", "certainty", *spec.label_columns]
        rows = []
        for i, (x0, y0, x1, y1, certainty, names) in enumerate(spec.ellipse_rows()):
            values = {"xmin": x0, "ymin": y0, "xmax": x1, "ymax": y1, "certainty": certainty}
            values.update({label: label in names for label in spec.label_columns})
            rows.append(_cells(values, bad, "anomaly_location_ellipses.csv", i))
        _write_csv(
            folder / "anomaly_location_ellipses.csv", header, rows, drop("anomaly_location_ellipses.csv")
        )


# --------------------------------------------------------------------------------------------- EGD-CXR


@dataclass
class EgdFixation:
    """One fixation: screen fractions, start and duration in seconds on the image's clock."""

    fpogx: float
    fpogy: float
    start: float
    duration: float
    valid: int = 1


def egd_paddings(image_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) padding of an image of (width, height) px fitted centred on the screen."""
    width, height = image_size
    scale = min(SCREEN_WIDTH / width, SCREEN_HEIGHT / height)
    shown_w, shown_h = round(width * scale), round(height * scale)
    left, top = (SCREEN_WIDTH - shown_w) // 2, (SCREEN_HEIGHT - shown_h) // 2
    return left, SCREEN_WIDTH - shown_w - left, top, SCREEN_HEIGHT - shown_h - top


@dataclass
class EgdSpec:
    """One EGD-CXR recording. ``image_size`` is (width, height) px (the size of the mask PNGs);
    ``paddings`` are (left, right, top, bottom) screen px; ``session_offset`` is the tracker clock (FPOGS)
    at the image's ``Time (in secs)`` zero; ``boxes`` are ``(name, x1, x2, y1, y2)``."""

    dicom_id: str = "1a2b3c4d-5e6f7a8b-9c0d1e2f-3a4b5c6d-7e8f9a0b"
    image_size: tuple[int, int] = (2544, 3056)
    paddings: tuple[int, int, int, int] | None = None
    fixations: list[EgdFixation] | None = None
    n_fixations: int = 10
    session_offset: float = 812.0327
    session_id: int = 3
    write_original: bool = True
    masks: tuple[str, ...] = MASK_NAMES
    mask_size: tuple[int, int] | None = None  # default: image_size
    phrases: list[tuple[str, float, float]] | None = None
    full_text: str | None = None
    transcript_json: str | None = None  # raw transcript.json text instead of the generated one
    boxes: list[tuple[str, int, int, int, int]] | None = None
    in_master: bool = True  # False: fixations only, like a calibration image
    dx: tuple[str, ...] = ("Heart failure, unspecified",)
    dx_icd: tuple[str, ...] = ("I509",)
    labels: dict[str, Any] = field(default_factory=lambda: {"CHF": 1, "cardiomegaly__chx": 1.0})
    bad_cells: dict[tuple[str, int, str], str] = field(default_factory=dict)

    def padding_values(self) -> tuple[int, int, int, int]:
        return self.paddings or egd_paddings(self.image_size)

    def fixation_list(self) -> list[EgdFixation]:
        if self.fixations is not None:
            return self.fixations
        rng = random.Random(_seed(self.dicom_id))
        left, right, top, bottom = self.padding_values()
        out, t = [], 0.25
        for i in range(self.n_fixations):
            duration = rng.randint(120, 700) / 1000
            if i == 2:  # a look at the screen beside the image
                xs, ys = rng.uniform(5, max(6, left - 5)), rng.uniform(100, 900)
            else:
                xs = rng.uniform(left + 10, SCREEN_WIDTH - right - 10)
                ys = rng.uniform(top + 10, SCREEN_HEIGHT - bottom - 10)
            out.append(EgdFixation(round(xs / SCREEN_WIDTH, 5), round(ys / SCREEN_HEIGHT, 5), round(t, 3),
                                   duration, valid=0 if i == 5 else 1))  # fmt: skip
            t += duration + rng.randint(30, 300) / 1000
        return out

    def fixation_rows(self) -> list[dict[str, Any]]:
        """fixations.csv rows (Gazepoint columns) as numbers, before any injected bad cell."""
        width, height = self.image_size
        left, right, top, bottom = self.padding_values()
        rows = []
        for i, fix in enumerate(self.fixation_list()):
            xs, ys = fix.fpogx * SCREEN_WIDTH, fix.fpogy * SCREEN_HEIGHT
            inside = left < xs < SCREEN_WIDTH - right and top < ys < SCREEN_HEIGHT - bottom
            # The dataset's own mapping (create_heatmap_images_and_or_videos.py): -1 scaled when outside.
            x_orig = int(width / (SCREEN_WIDTH - left - right) * ((xs - left) if inside else -1))
            y_orig = int(height / (SCREEN_HEIGHT - top - bottom) * ((ys - top) if inside else -1))
            end = round(fix.start + fix.duration, 5)
            values: dict[str, Any] = dict.fromkeys(GAZEPOINT_COLUMNS, 0)
            values.update({
                "SESSION_ID": self.session_id, "MEDIA_ID": 0, "DICOM_ID": self.dicom_id, "CNT": 1000 + 37 * i,
                "Time (in secs)": end,
                "TIMETICK(f=10000000)": int((self.session_offset + end) * 1e7) + 51234567,
                "FPOGX": fix.fpogx, "FPOGY": fix.fpogy, "FPOGS": round(self.session_offset + fix.start, 5),
                "FPOGD": fix.duration, "FPOGID": 40 + i, "FPOGV": fix.valid, "BPOGX": fix.fpogx,
                "BPOGY": fix.fpogy, "BPOGV": fix.valid, "LPCX": 0.3571, "LPCY": 0.6204, "LPD": 21.3,
                "LPS": 0.91,
                "LPV": 1, "RPCX": 0.6502, "RPCY": 0.6133, "RPD": 20.8, "RPS": 0.93, "RPV": 1, "LPMM": 4.21,
                "LPMMV": 1, "RPMM": 4.13, "RPMMV": 1, "SACCADE_MAG": 211.4, "SACCADE_DIR": 132.7,
                "VID_FRAME": 0, "X_ORIGINAL": x_orig if self.write_original else "",
                "Y_ORIGINAL": y_orig if self.write_original else "",
            })  # fmt: skip
            rows.append(values)
        return rows

    def phrase_rows(self) -> list[tuple[str, float, float]]:
        return list(self.phrases if self.phrases is not None else DEFAULT_PHRASES)

    def transcript_text(self) -> str:
        if self.transcript_json is not None:
            return self.transcript_json
        full = self.full_text if self.full_text is not None else " ".join(p for p, _, _ in self.phrase_rows())
        stamped = [{"phrase": p, "begin_time": b, "end_time": e} for p, b, e in self.phrase_rows()]
        return json.dumps({"full_text": full, "time_stamped_text": stamped}, indent=2)

    def box_rows(self) -> list[tuple[str, int, int, int, int]]:
        if self.boxes is not None:
            return self.boxes
        width, height = self.image_size
        out = []
        for i, name in enumerate(DEFAULT_BOXES):
            x1, y1 = int(width * (0.1 + 0.15 * i)), int(height * (0.1 + 0.12 * i))
            out.append((name, x1, x1 + int(width * 0.2), y1, y1 + int(height * 0.25)))
        return out

    def master_row(self) -> dict[str, Any]:
        left, right, top, bottom = self.padding_values()
        row: dict[str, Any] = dict.fromkeys(EGD_MASTER_COLUMNS, "")
        row.update({
            "dicom_id": self.dicom_id, "path": f"files/p15/p15628804/s58573295/{self.dicom_id}.dcm",
            "study_id": 58573295, "patient_id": 15628804, "stay_id": 33101922, "gender": "F",
            "anchor_age": 57, "image_top_pad": top, "image_bottom_pad": bottom, "image_left_pad": left,
            "image_right_pad": right,
            "normal_reports": 0, "Normal": 0, "CHF": 0, "pneumonia": 0, "consolidation": 0,
            "enlarged_cardiac_silhouette": 0, "pleural_effusion_or_thickening": 0,
            "pulmonary_edema__hazy_opacity": 0, "cxr_exam_indication": "___F with shortness of breath",
        })  # fmt: skip
        for i, (text, icd) in enumerate(zip(self.dx, self.dx_icd, strict=True), start=1):
            row[f"dx{i}"], row[f"dx{i}_icd"] = text, icd
        row.update(self.labels)
        return row

    def mask_images(self) -> dict[str, Image.Image]:
        """Binary (0/255, mode L) anatomy masks; left lung on the image's right (patient's left)."""
        width, height = self.mask_size or self.image_size
        shapes = {
            "left_lung.png": (0.55, 0.12, 0.9, 0.82),
            "right_lung.png": (0.1, 0.12, 0.45, 0.8),
            "mediastanum.png": (0.42, 0.1, 0.6, 0.75),
            "aortic_knob.png": (0.52, 0.2, 0.6, 0.27),
        }
        out = {}
        for name in self.masks:
            x0, y0, x1, y1 = shapes.get(name, (0.4, 0.4, 0.6, 0.6))
            image = Image.new("L", (width, height), 0)
            ImageDraw.Draw(image).ellipse((x0 * width, y0 * height, x1 * width, y1 * height), fill=255)
            out[name] = image
        return out


def write_egd(
    root: Path, *, recordings: list[EgdSpec] | None = None, drop_columns: dict[str, list[str]] | None = None,
    write_boxes: bool = True,
) -> Path:  # fmt: skip
    """Write an EGD-CXR folder (master_sheet.csv, fixations.csv, bounding_boxes.csv,
    audio_segmentation_transcripts/<dicom_id>/...) for the recordings (one default if none); returns root."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    specs = recordings if recordings is not None else [EgdSpec()]
    drop = drop_columns or {}
    masters = [_cells(s.master_row(), s.bad_cells, "master_sheet.csv", 0) for s in specs if s.in_master]
    _write_csv(root / "master_sheet.csv", EGD_MASTER_COLUMNS, masters, drop.get("master_sheet.csv", []))
    fixations = [
        _cells(values, s.bad_cells, "fixations.csv", i)
        for s in specs
        for i, values in enumerate(s.fixation_rows())
    ]
    _write_csv(root / "fixations.csv", GAZEPOINT_COLUMNS, fixations, drop.get("fixations.csv", []))
    if write_boxes:
        header = ["dicom_id", "bbox_name", "x1", "x2", "y1", "y2"]
        boxes = [
            _cells(dict(zip(header, (s.dicom_id, *b), strict=True)), s.bad_cells, "bounding_boxes.csv", i)
            for s in specs
            for i, b in enumerate(s.box_rows())
        ]
        _write_csv(root / "bounding_boxes.csv", header, boxes, drop.get("bounding_boxes.csv", []))
    for spec in specs:
        if not spec.in_master:
            continue
        folder = root / "audio_segmentation_transcripts" / spec.dicom_id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "transcript.json").write_text(spec.transcript_text(), encoding="utf-8")
        for name, image in spec.mask_images().items():
            image.save(folder / name)
    return root
