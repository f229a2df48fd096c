"""Eye-gaze import: REFLACX and EGD-CXR readers (exact values), the import service (rows, mask files,
idempotency, all-or-nothing per recording) and linking to scans by name."""

import json
from pathlib import Path

import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.db import IntegrityError
from PIL import Image

from studies.ingest.gaze import read_egd, read_reflacx
from studies.ingest.gaze.common import GazeRecordingData, GazeSkipped
from studies.ingest.gaze.egd import egd_units, read_egd_fixations
from studies.ingest.types import IngestError
from studies.models import GazeAnatomyMask, GazeRecording, Patient, Scan, Study
from studies.services.gaze import gaze_import, gaze_link_scans
from tests.studies.gaze_files import EgdFixation, EgdSpec, ReflacxSpec, write_egd, write_reflacx

EGD_SIZE = (1000, 1200)  # (width, height): small masks keep the tests quick


def _by_id(items):
    return {(i.external_id if not isinstance(i, IngestError) else i.file): i for i in items}


def _media_files(root: str) -> list[Path]:
    return [p for p in Path(root).rglob("*") if p.is_file()]


def _scan(project, name: str, shape: list[int]) -> Scan:
    n = Scan.objects.count() + 1
    patient = Patient.objects.create(project=project, pseudonym=f"P{n:04d}", identity_hash=f"{n:064d}",
                                     date_shift_days=0)  # fmt: skip
    study = Study.objects.create(project=project, patient=patient, study_uid=f"2.25.{n}")
    return Scan.objects.create(
        project=project, study=study, series_uid=f"2.25.{n}.1", name=name, modality="CR",
        source_format="png", ndim=len(shape), shape=shape, spacing=[0.139] * len(shape),
        affine=np.eye(4).tolist(), dtype="uint16", file="projects/alpha/scans/x.nii.gz",
        source_checksum="0" * 64,
    )  # fmt: skip


def _expected_egd_xy(spec: EgdSpec, fix: EgdFixation) -> tuple[int, int]:
    """docs/formats.md: x_screen = FPOGX·1920, minus the left pad, times width / (1920 − left − right)."""
    width, height = spec.image_size
    left, right, top, bottom = spec.padding_values()
    xs, ys = fix.fpogx * 1920, fix.fpogy * 1080
    if not (left < xs < 1920 - right and top < ys < 1080 - bottom):
        return -1, -1
    return int((xs - left) * width / (1920 - left - right)), int((ys - top) * height / (1080 - top - bottom))


# ------------------------------------------------------------------------------------------ REFLACX


def test_reflacx_values_exactly_as_written(tmp_path):
    spec = ReflacxSpec(labels={"Atelectasis": 3, "Support devices": True})
    root = write_reflacx(tmp_path / "reflacx", recordings=[spec])
    assert b"\r\n" in (root / "main_data" / spec.id / "fixations.csv").read_bytes()

    [data] = list(read_reflacx(root))

    assert isinstance(data, GazeRecordingData)
    assert (data.external_id, data.image_ref, data.reader) == (spec.id, spec.dicom_id, "")
    assert (data.image_width, data.image_height) == spec.image_size
    rows = spec.fixation_rows()
    assert data.fixations["start"] == [r["timestamp_start_fixation"] for r in rows]
    assert data.fixations["end"] == [r["timestamp_end_fixation"] for r in rows]
    assert data.fixations["x"] == [r["x_position"] for r in rows]
    assert data.fixations["y"] == [r["y_position"] for r in rows]
    assert data.fixations["pupil"] == [r["pupil_area_normalized"] for r in rows]
    assert data.fixations["ang_res_x"] == [94] * len(rows)
    assert data.fixations["shown_rect"][0] == [0, 0, *spec.image_size]
    assert data.transcript == [{"text": w, "start": s, "end": e} for w, s, e in spec.word_rows()]
    assert [w["text"] for w in data.transcript].count(".") == 2
    assert data.transcript_text == "the lungs are clear. heart size is normal, no effusion."
    assert data.meta["split"] == "train" and data.meta["phase"] == 1
    assert data.meta["labels"]["Atelectasis"] == 3 and data.meta["labels"]["Support devices"] is True
    assert data.meta["labels"]["Quality issue"] is False
    assert data.meta["chest_box"] == list(spec.chest_box_values())
    assert data.meta["ellipses"] == [
        {"box": list(spec.ellipse_rows()[0][:4]), "certainty": 5, "labels": ["Enlarged cardiac silhouette"]}
    ]
    dumped = json.dumps(data.meta)
    assert "10000032" not in dumped and "physionet.org" not in dumped  # subject id and image path dropped
    assert len(data.checksum) == 64 and data.problems == []


def test_reflacx_main_data_folder_discarded_and_phase3(tmp_path):
    kept = ReflacxSpec(id="P300R512345", dicom_id="b1", image_size=(2000, 2500))
    gone = ReflacxSpec(id="P102R000001", discarded=True)
    root = write_reflacx(tmp_path, recordings=[kept, gone])

    items = _by_id(read_reflacx(root / "main_data"))

    assert isinstance(items[gone.id], GazeSkipped) and "eye_tracking_data_discarded" in items[gone.id].reason
    assert items[kept.id].meta["phase"] == 3
    assert "Lung nodule or mass" in items[kept.id].meta["labels"]


@pytest.mark.parametrize(
    "file, row, column, raw, reason",
    [
        ("fixations.csv", 3, "x_position", "4o5", "not a number"),
        ("fixations.csv", 2, "timestamp_end_fixation", "0.1", "before it starts"),
        ("timestamps_transcription.csv", 1, "timestamp_end_word", "0.5", "before it starts"),
        ("chest_bounding_box.csv", 0, "xmax", "", "not a number"),
    ],
)
def test_reflacx_bad_cell_names_file_row_and_column(tmp_path, file, row, column, raw, reason):
    bad = ReflacxSpec(id="P102R000002", bad_cells={(file, row, column): raw})
    good = ReflacxSpec(id="P102R000003")
    root = write_reflacx(tmp_path, recordings=[bad, good])

    items = list(read_reflacx(root))

    [error] = [i for i in items if isinstance(i, IngestError)]
    assert error.file == f"main_data/{bad.id}/{file}"
    assert error.field == column
    assert error.reason.startswith(f"row {row + 2}:") and reason in error.reason
    assert [i.external_id for i in items if isinstance(i, GazeRecordingData)] == [good.id]


def test_reflacx_missing_column_and_bad_metadata(tmp_path):
    no_x = ReflacxSpec(id="P102R000004", drop_columns={"fixations.csv": ["x_position"]})
    bad_size = ReflacxSpec(id="P102R000005", bad_cells={("metadata", 0, "image_size_x"): "wide"})
    root = write_reflacx(tmp_path, recordings=[no_x, bad_size])

    errors = [i for i in read_reflacx(root) if isinstance(i, IngestError)]

    assert [(e.file, e.field) for e in errors] == [
        (f"main_data/{no_x.id}/fixations.csv", "x_position"),
        ("main_data/metadata_phase_1.csv", "image_size_x"),
    ]
    assert "missing column" in errors[0].reason and errors[1].reason.startswith("row 3:")


# ------------------------------------------------------------------------------------------ EGD-CXR


@pytest.mark.parametrize("write_original", [True, False])
def test_egd_values_and_screen_to_image_mapping(tmp_path, write_original):
    spec = EgdSpec(image_size=EGD_SIZE, write_original=write_original)
    root = write_egd(tmp_path, recordings=[spec])
    assert b"\r\n" in (root / "fixations.csv").read_bytes()

    [data] = list(read_egd(root))

    valid = [f for f in spec.fixation_list() if f.valid == 1]
    assert len(valid) == len(spec.fixation_list()) - 1  # one row has FPOGV=0
    expected = [_expected_egd_xy(spec, f) for f in valid]
    assert list(zip(data.fixations["x"], data.fixations["y"], strict=True)) == expected
    assert data.fixations["inside"] == [x >= 0 for x, _ in expected]
    assert False in data.fixations["inside"]  # the generated look beside the image
    assert data.fixations["start"] == pytest.approx([f.start for f in valid], abs=1e-6)
    assert data.fixations["end"] == pytest.approx([f.start + f.duration for f in valid], abs=1e-6)
    assert (data.image_width, data.image_height) == EGD_SIZE
    assert data.transcript == [{"text": p, "start": b, "end": e} for p, b, e in spec.phrase_rows()]
    assert data.transcript_text == " ".join(p for p, _, _ in spec.phrase_rows())
    left, right, top, bottom = spec.padding_values()
    assert data.meta["paddings"] == {"left": left, "right": right, "top": top, "bottom": bottom}
    assert data.meta["dx"] == [{"text": "Heart failure, unspecified", "icd": "I509"}]
    assert data.meta["labels"]["CHF"] == 1 and data.meta["chexpert"]["cardiomegaly"] == 1
    name, x1, x2, y1, y2 = spec.box_rows()[0]
    assert data.meta["bounding_boxes"][0] == {"name": name, "box": [x1, y1, x2, y2]}
    dumped = json.dumps(data.meta)
    assert "15628804" not in dumped and "shortness" not in dumped and "anchor_age" not in dumped
    assert sorted(data.anatomy_masks) == ["aortic_knob", "left_lung", "mediastinum", "right_lung"]
    assert data.anatomy_masks["mediastinum"].name == "mediastanum.png"
    for anatomy, path in data.anatomy_masks.items():
        assert data.anatomy_mask_pixels[anatomy] == np.count_nonzero(np.asarray(Image.open(path)))


def test_egd_prefers_valid_original_coordinates(tmp_path):
    spec = EgdSpec(
        image_size=EGD_SIZE,
        bad_cells={
            ("fixations.csv", 0, "X_ORIGINAL"): "123",
            ("fixations.csv", 0, "Y_ORIGINAL"): "456",
            ("fixations.csv", 1, "X_ORIGINAL"): str(EGD_SIZE[0]),  # not within the image: recomputed
        },
    )
    [data] = list(read_egd(write_egd(tmp_path, recordings=[spec])))

    fixes = spec.fixation_list()
    assert (data.fixations["x"][0], data.fixations["y"][0]) == (123, 456)
    assert (data.fixations["x"][1], data.fixations["y"][1]) == _expected_egd_xy(spec, fixes[1])


def test_egd_image_size_from_caller_and_calibration_skipped(tmp_path):
    no_masks = EgdSpec(dicom_id="nomask", image_size=EGD_SIZE, masks=())
    calibration = EgdSpec(dicom_id="calib", image_size=EGD_SIZE, in_master=False)
    root = write_egd(tmp_path, recordings=[no_masks, calibration])

    unknown = _by_id(read_egd(root))
    known = _by_id(read_egd(root, image_sizes={"nomask": EGD_SIZE}))

    error = unknown["audio_segmentation_transcripts/nomask"]
    assert error.field == "image_size" and "nomask" in error.reason
    assert (known["nomask"].image_width, known["nomask"].image_height) == EGD_SIZE
    assert known["nomask"].anatomy_masks == {}
    assert isinstance(known["calib"], GazeSkipped)


@pytest.mark.parametrize(
    "row, column, raw, reason",
    [
        (0, "FPOGX", "1.2", "not a screen fraction"),
        (3, "FPOGY", "-0.01", "not a screen fraction"),
        (4, "FPOGD", "-0.2", "negative fixation duration"),
        (7, "FPOGV", "yes", "not a number"),
    ],
)
def test_egd_bad_fixation_row(tmp_path, row, column, raw, reason):
    good = EgdSpec(dicom_id="good", image_size=EGD_SIZE)
    bad = EgdSpec(dicom_id="bad", image_size=EGD_SIZE, bad_cells={("fixations.csv", row, column): raw})
    root = write_egd(tmp_path, recordings=[good, bad])

    items = _by_id(read_egd(root))

    error = items["fixations.csv"]
    assert error.field == column
    assert error.reason.startswith(f"row {len(good.fixation_rows()) + row + 2}:") and reason in error.reason
    assert isinstance(items["good"], GazeRecordingData)


def test_egd_out_of_range_on_invalid_row_is_ignored(tmp_path):
    spec = EgdSpec(image_size=EGD_SIZE, bad_cells={("fixations.csv", 5, "FPOGX"): "1.7"})  # row 5: FPOGV=0
    [data] = list(read_egd(write_egd(tmp_path, recordings=[spec])))
    assert isinstance(data, GazeRecordingData)


def test_egd_transcript_and_column_errors(tmp_path):
    backwards = EgdSpec(dicom_id="bw", image_size=EGD_SIZE, phrases=[("a", 0.5, 0.9), ("b", 2.0, 1.5)])
    root = write_egd(tmp_path / "a", recordings=[backwards])
    [error] = list(read_egd(root))
    assert error.file == "audio_segmentation_transcripts/bw/transcript.json"
    assert error.field == "time_stamped_text[1].end_time"

    root = write_egd(
        tmp_path / "b", recordings=[EgdSpec(image_size=EGD_SIZE)], drop_columns={"fixations.csv": ["FPOGS"]}
    )
    with pytest.raises(IngestError) as caught:
        egd_units(root)
    assert (caught.value.file, caught.value.field) == ("fixations.csv", "FPOGS")


# ------------------------------------------------------------------------------------------ service


@pytest.mark.django_db
def test_import_reflacx_stores_rows_and_reports_progress(project, tmp_path):
    specs = [ReflacxSpec(), ReflacxSpec(id="P102R000010", discarded=True)]
    root = write_reflacx(tmp_path, recordings=specs)
    calls = []

    summary = gaze_import(
        project=project, path=root, fmt="reflacx", progress=lambda d, t: calls.append((d, t))
    )

    assert calls == [(1, 2), (2, 2)]
    assert summary.errors == []
    assert summary.skipped == [{"external_id": "P102R000010", "reason": summary.skipped[0]["reason"]}]
    [stored] = summary.stored
    recording = GazeRecording.objects.get(pk=stored["id"])
    assert stored == {"id": recording.id, "external_id": specs[0].id, "fixations": 12, "scan_id": None}
    assert recording.source_format == "reflacx" and recording.fixation_count == 12
    assert recording.fixations["x"] == [r["x_position"] for r in specs[0].fixation_rows()]
    assert recording.transcript[4] == {"text": ".", "start": 2.4, "end": 2.4}
    assert recording.usable and recording.meta["phase"] == 1


@pytest.mark.django_db
def test_import_egd_stores_masks_and_is_idempotent(project, tmp_path, settings):
    spec = EgdSpec(image_size=EGD_SIZE)
    root = write_egd(tmp_path / "egd", recordings=[spec])

    first = gaze_import(project=project, path=root, fmt="auto")
    files_after_first = sorted(_media_files(settings.MEDIA_ROOT))
    again = gaze_import(project=project, path=root, fmt="egd")

    assert first.errors == [] and len(first.stored) == 1
    recording = GazeRecording.objects.get()
    masks = {m.name: m for m in recording.anatomy_masks.all()}
    assert sorted(masks) == ["aortic_knob", "left_lung", "mediastinum", "right_lung"]
    source = root / "audio_segmentation_transcripts" / spec.dicom_id / "mediastanum.png"
    assert masks["mediastinum"].file.name == f"projects/alpha/gaze/egd/{spec.dicom_id}/mediastinum.png"
    with default_storage.open(masks["mediastinum"].file.name, "rb") as fh:
        assert fh.read() == source.read_bytes()
    assert masks["left_lung"].pixel_count == np.count_nonzero(
        np.asarray(Image.open(source.parent / "left_lung.png"))
    )
    assert again.stored == [] and again.skipped == [{"external_id": spec.dicom_id, "reason": "duplicate"}]
    assert GazeRecording.objects.count() == 1 and GazeAnatomyMask.objects.count() == 4
    assert sorted(_media_files(settings.MEDIA_ROOT)) == files_after_first


@pytest.mark.django_db
def test_changed_recording_is_an_error_not_a_silent_replace(project, tmp_path):
    gaze_import(project=project, path=write_reflacx(tmp_path / "a"), fmt="reflacx")
    changed = write_reflacx(tmp_path / "b", recordings=[ReflacxSpec(words=[("clear", 0.5, 0.9)])])

    summary = gaze_import(project=project, path=changed, fmt="reflacx")

    [error] = summary.errors
    assert error["field"] == "checksum" and error["external_id"] == "P102R108451"
    assert GazeRecording.objects.get().transcript[0]["text"] == "the"


@pytest.mark.django_db
def test_bad_recordings_leave_nothing_and_good_ones_are_stored(project, tmp_path, settings):
    good = EgdSpec(dicom_id="good", image_size=EGD_SIZE)
    bad = EgdSpec(dicom_id="bad", image_size=EGD_SIZE, bad_cells={("fixations.csv", 2, "FPOGD"): "abc"})
    egd = gaze_import(project=project, path=write_egd(tmp_path / "egd", recordings=[bad, good]), fmt="egd")
    reflacx_bad = ReflacxSpec(id="P102R000020", bad_cells={("fixations.csv", 1, "y_position"): "9x99"})
    reflacx = gaze_import(
        project=project,
        path=write_reflacx(tmp_path / "r", recordings=[reflacx_bad, ReflacxSpec()]),
        fmt="reflacx",
    )

    assert egd.errors == [
        {
            "file": "fixations.csv",
            "reason": "row 4: not a number: 'abc'",
            "field": "FPOGD",
            "external_id": "bad",
        }
    ]
    assert reflacx.errors[0]["file"] == "main_data/P102R000020/fixations.csv"
    assert reflacx.errors[0]["field"] == "y_position" and reflacx.errors[0]["reason"].startswith("row 3:")
    assert sorted(GazeRecording.objects.values_list("external_id", flat=True)) == ["P102R108451", "good"]
    assert not (Path(settings.MEDIA_ROOT) / "projects/alpha/gaze/egd/bad").exists()
    assert len(list((Path(settings.MEDIA_ROOT) / "projects/alpha/gaze/egd/good").iterdir())) == 4


@pytest.mark.django_db
def test_failure_while_storing_removes_written_mask_files(project, tmp_path, settings, monkeypatch):
    root = write_egd(tmp_path, recordings=[EgdSpec(dicom_id="a", image_size=EGD_SIZE)])
    create = GazeAnatomyMask.objects.create

    def failing_create(**kwargs):
        if kwargs["name"] == "mediastinum":  # after aortic_knob, left_lung and the mediastinum file
            raise IntegrityError("disk said no")
        return create(**kwargs)

    monkeypatch.setattr(GazeAnatomyMask.objects, "create", failing_create)
    summary = gaze_import(project=project, path=root, fmt="egd")

    assert summary.stored == [] and "disk said no" in summary.errors[0]["reason"]
    assert GazeRecording.objects.count() == 0 and GazeAnatomyMask.objects.count() == 0
    assert _media_files(settings.MEDIA_ROOT) == []


@pytest.mark.django_db
def test_links_to_scan_by_name_and_checks_its_size(project, tmp_path):
    spec = ReflacxSpec(image_size=(2544, 3056))
    scan = _scan(project, spec.dicom_id, [2544, 3056])
    summary = gaze_import(
        project=project, path=write_reflacx(tmp_path / "a", recordings=[spec]), fmt="reflacx"
    )
    assert summary.stored[0]["scan_id"] == scan.id
    recording = GazeRecording.objects.get()
    assert (recording.scan_id, recording.study_id) == (scan.id, scan.study_id)

    other = ReflacxSpec(id="P102R000030", dicom_id="otherimg", image_size=(2000, 2000))
    _scan(project, "otherimg", [2000, 2500])
    summary = gaze_import(
        project=project, path=write_reflacx(tmp_path / "b", recordings=[other]), fmt="reflacx"
    )
    assert summary.errors[0]["field"] == "image_size" and "2000x2000" in summary.errors[0]["reason"]
    assert GazeRecording.objects.count() == 1


@pytest.mark.django_db
def test_link_scans_ingested_later_and_egd_size_from_scan(project, tmp_path):
    gaze_import(project=project, path=write_reflacx(tmp_path / "r"), fmt="reflacx")
    no_masks = EgdSpec(dicom_id="egd1", image_size=EGD_SIZE, masks=())
    assert gaze_import(
        project=project, path=write_egd(tmp_path / "e", recordings=[no_masks]), fmt="egd"
    ).errors

    scan = _scan(project, ReflacxSpec().dicom_id, [2544, 3056])
    egd_scan = _scan(project, "egd1", list(EGD_SIZE))
    linked = gaze_link_scans(project=project)
    egd = gaze_import(project=project, path=tmp_path / "e", fmt="egd")

    assert linked == 1 and gaze_link_scans(project=project) == 0
    assert GazeRecording.objects.get(source_format="reflacx").scan_id == scan.id
    assert egd.errors == [] and egd.stored[0]["scan_id"] == egd_scan.id
    stored = GazeRecording.objects.get(source_format="egd")
    assert (stored.image_width, stored.image_height) == EGD_SIZE


@pytest.mark.django_db
def test_not_a_gaze_folder_is_one_error(project, tmp_path):
    summary = gaze_import(project=project, path=tmp_path, fmt="reflacx")
    assert summary.stored == [] and len(summary.errors) == 1 and "main_data" in summary.errors[0]["reason"]


def test_reflacx_fixations_outside_the_image_are_kept_flagged_and_reported(tmp_path):
    spec = ReflacxSpec(
        id="P102R000020",
        bad_cells={("fixations.csv", 0, "x_position"): "2544", ("fixations.csv", 5, "y_position"): "-1"},
    )
    root = write_reflacx(tmp_path, recordings=[spec])
    [item] = list(read_reflacx(root))
    assert isinstance(item, GazeRecordingData)
    inside = item.fixations["inside"]
    assert inside[0] is False and inside[5] is False and sum(inside) == len(inside) - 2
    assert item.fixations["x"][0] == 2544
    assert any("2 of 12 fixations outside the 2544x3056 image (rows 2, 7)" in p for p in item.problems)


def test_reflacx_all_fixations_outside_is_an_error(tmp_path):
    spec = ReflacxSpec(id="P102R000021", fixations=[(0.1, 0.3, 5000, 10), (0.4, 0.6, 6000, 20)])
    root = write_reflacx(tmp_path, recordings=[spec])
    [error] = list(read_reflacx(root))
    assert isinstance(error, IngestError) and error.field == "x_position"
    assert "2 of 2 fixations outside" in error.reason and "image_size_x" in error.reason


# ------------------------------------------------------------------------------ rows the authors skip
# Issue 15 item 7. The authors read these files with pandas.read_csv (ricbl/eyetracking generate_heatmaps.py,
# ricbl/eye-tracking-localization find_fixations_all_sentences.py, EGD-CXR
# create_heatmap_images_and_or_videos.py) and neither drop nor sort rows: a NaN cell gives NaN there (no
# heatmap contribution), and rows are used in file order. Restated here: drop the rows with an empty or NaN
# cell in a column that is read, keep every other row in file order.


def test_na_strings_are_what_pandas_reads_as_nan(tmp_path):
    pd = pytest.importorskip("pandas")
    from studies.ingest.gaze.common import NA_STRINGS

    path = tmp_path / "cells.csv"
    cells = sorted(NA_STRINGS - {""}) + ["", "0", "abc", "inf"]
    path.write_text("x\n" + "\n".join(f'"{c}"' for c in cells) + "\n")
    read = pd.read_csv(path, keep_default_na=True, skip_blank_lines=False)["x"].tolist()
    assert [c for c, v in zip(cells, read, strict=True) if isinstance(v, float) and v != v] == cells[:-3]


def test_reflacx_nan_fixation_and_word_rows_are_skipped_and_reported(tmp_path):
    spec = ReflacxSpec(
        id="P102R000040",
        bad_cells={
            ("fixations.csv", 3, "x_position"): "",
            ("fixations.csv", 7, "angular_resolution_y_pixels_per_degree"): "NaN",
            ("fixations.csv", 9, "pupil_area_normalized"): "null",  # not read by the heatmaps: row kept
            ("timestamps_transcription.csv", 2, "timestamp_start_word"): "nan",
        },
    )
    [data] = list(read_reflacx(write_reflacx(tmp_path, recordings=[spec])))

    assert isinstance(data, GazeRecordingData)
    rows = spec.fixation_rows()
    kept = [r for i, r in enumerate(rows) if i not in (3, 7)]
    assert data.fixations["x"] == [r["x_position"] for r in kept]
    assert data.fixations["start"] == [r["timestamp_start_fixation"] for r in kept]
    assert data.fixations["pupil"] == [None if r is rows[9] else r["pupil_area_normalized"] for r in kept]
    words = [w for i, w in enumerate(spec.word_rows()) if i != 2]
    assert data.transcript == [{"text": w, "start": s, "end": e} for w, s, e in words]
    name = f"main_data/{spec.id}"
    assert (
        f"{name}/fixations.csv: 2 rows with an empty or NaN value skipped "
        "(rows 5, 9; x_position, angular_resolution_y_pixels_per_degree)"
    ) in data.problems
    assert f"{name}/fixations.csv: pupil_area_normalized empty or NaN in rows 11; kept with pupil null" in (
        data.problems
    )
    assert f"{name}/timestamps_transcription.csv: 1 row with an empty or NaN value skipped (row 4; " \
        "timestamp_start_word)" in data.problems  # fmt: skip


def test_reflacx_rows_out_of_order_are_kept_in_file_order_and_reported(tmp_path):
    rows = [(0.1, 0.4, 100, 100), (0.5, 0.9, 120, 130), (0.3, 0.45, 140, 150), (1.0, 1.2, 160, 170)]
    words = [("lungs", 1.0, 1.4), ("clear", 0.9, 1.3), (".", 1.4, 1.4)]
    spec = ReflacxSpec(id="P102R000041", image_size=(400, 400), fixations=rows, words=words)
    [data] = list(read_reflacx(write_reflacx(tmp_path, recordings=[spec])))

    assert data.fixations["start"] == [r[0] for r in rows] and data.fixations["x"] == [r[2] for r in rows]
    assert [w["text"] for w in data.transcript] == ["lungs", "clear", "."]
    said = "fixations.csv: 1 fixation(s) start before the row above (rows 4); kept in file order"
    assert any(p.endswith(said) for p in data.problems)
    assert any("timestamps_transcription.csv: 1 word(s) start before the row above (rows 3)" in p
               for p in data.problems)  # fmt: skip


def test_egd_nan_and_unordered_rows_do_not_reject_the_recording(tmp_path):
    spec = EgdSpec(
        dicom_id="rows",
        image_size=EGD_SIZE,
        bad_cells={
            ("fixations.csv", 1, "FPOGY"): "",
            ("fixations.csv", 3, "FPOGD"): "NaN",
            ("fixations.csv", 5, "FPOGX"): "nan",  # FPOGV=0: never read
            ("fixations.csv", 7, "FPOGS"): "800",  # before the row above (the session clock is ~812 s)
        },
    )
    root = write_egd(tmp_path, recordings=[spec])
    [data] = list(read_egd(root))

    assert isinstance(data, GazeRecordingData)
    said: list[str] = []
    alone = read_egd_fixations(root / "fixations.csv", root / "master_sheet.csv", "rows", *EGD_SIZE, said)
    named = [
        f"{root / 'fixations.csv'}{p[len('fixations.csv') :]}" for p in data.problems if p.startswith("fix")
    ]
    assert alone == data.fixations and said == named and len(said) == 2
    fixes = spec.fixation_list()
    kept = [i for i, f in enumerate(fixes) if f.valid == 1 and i not in (1, 3)]
    expected = [_expected_egd_xy(spec, fixes[i]) for i in kept]
    assert list(zip(data.fixations["x"], data.fixations["y"], strict=True)) == expected
    starts = [800 - spec.session_offset if i == 7 else fixes[i].start for i in kept]
    assert data.fixations["start"] == pytest.approx(starts, abs=1e-6)
    assert (
        "fixations.csv: 2 rows with an empty or NaN value skipped (rows 3, 5; FPOGY, FPOGD)" in data.problems
    )
    assert "fixations.csv: 1 fixation(s) start (FPOGS) before the row above (rows 9); kept in file order" in (
        data.problems
    )


def test_egd_rows_without_dicom_id_are_one_skipped_item(tmp_path):
    spec = EgdSpec(dicom_id="img", image_size=EGD_SIZE, bad_cells={("fixations.csv", 2, "DICOM_ID"): ""})
    items = list(read_egd(write_egd(tmp_path, recordings=[spec])))

    [data] = [i for i in items if isinstance(i, GazeRecordingData)]
    [skipped] = [i for i in items if isinstance(i, GazeSkipped)]
    assert skipped.reason == "fixations.csv: 1 row(s) without a DICOM_ID (rows 4)"
    assert data.fixation_count == sum(f.valid for f in spec.fixation_list()) - 1


def test_egd_transcript_phrase_with_nan_time_is_skipped(tmp_path):
    phrases = '[{"phrase": "No", "begin_time": NaN, "end_time": 1.0}, ' \
              '{"phrase": "effusion.", "begin_time": 1.0, "end_time": 1.6}]'  # fmt: skip
    raw = '{"full_text": "No effusion.", "time_stamped_text": ' + phrases + "}"
    spec = EgdSpec(image_size=EGD_SIZE, transcript_json=raw)
    [data] = list(read_egd(write_egd(tmp_path, recordings=[spec])))
    assert data.transcript == [{"text": "effusion.", "start": 1.0, "end": 1.6}]
    assert any("1 phrase(s) with a NaN time skipped (time_stamped_text[0])" in p for p in data.problems)


@pytest.mark.django_db
def test_import_keeps_a_recording_with_one_nan_row(project, tmp_path):
    spec = ReflacxSpec(id="P102R000042", bad_cells={("fixations.csv", 0, "y_position"): "NaN"})
    summary = gaze_import(project=project, path=write_reflacx(tmp_path, recordings=[spec]), fmt="reflacx")

    assert summary.errors == [] and summary.stored[0]["fixations"] == spec.n_fixations - 1
    recording = GazeRecording.objects.get()
    assert any(
        "1 row with an empty or NaN value skipped (row 2; y_position)" in p for p in recording.problems
    )
