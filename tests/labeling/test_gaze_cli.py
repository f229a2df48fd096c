"""manage.py gaze_heatmap: one fixations file in, the heatmap as .npy (and PNG) out, no database.

The tests carry no ``db`` mark, so pytest-django fails any of them that touches the database; one test
also runs the command in a subprocess with an unreachable PostgreSQL ``DATABASE_URL``.
"""

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from PIL import Image

from labeling.gaze import heatmap
from labeling.gaze.render import INFERNO, heatmap_png
from studies.ingest.gaze import read_egd, read_egd_fixations, read_reflacx, read_reflacx_fixations
from tests.studies.gaze_files import EgdFixation, EgdSpec, ReflacxSpec, write_egd, write_reflacx

REPO = Path(__file__).resolve().parents[2]
W, H = 64, 48
REC = "P102R108451"
FIXATIONS = [
    (0.35, 0.6, 10, 12),
    (0.7, 1.05, 40, 30),
    (1.2, 1.5, 55, 5),
    (1.9, 2.4, 22, 40),
    (2.6, 2.9, 33, 20),
]
DICOM_A = "1a2b3c4d-5e6f7a8b-9c0d1e2f-3a4b5c6d-7e8f9a0b"
DICOM_B = "9f8e7d6c-5b4a3f2e-1d0c9b8a-7f6e5d4c-3b2a1f0e"


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("gaze_heatmap", *[str(a) for a in args], stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.fixture
def reflacx(tmp_path) -> Path:
    """A REFLACX recording of a W x H image; returns its fixations.csv."""
    spec = ReflacxSpec(id=REC, image_size=(W, H), fixations=FIXATIONS)
    write_reflacx(tmp_path / "reflacx", recordings=[spec])
    return tmp_path / "reflacx" / "main_data" / REC / "fixations.csv"


@pytest.fixture
def egd(tmp_path) -> Path:
    """An EGD-CXR folder with two images' fixations in one fixations.csv; returns the folder."""
    specs = [
        EgdSpec(dicom_id=DICOM_A, image_size=(W, H), n_fixations=8),
        # no X_ORIGINAL/Y_ORIGINAL: image pixels from the screen fractions and the paddings (for so small
        # an image the dataset's int(W / shown_width * -1) of a look beside it would be 0, on the image)
        EgdSpec(
            dicom_id=DICOM_B, image_size=(W, H), n_fixations=12, session_offset=900.5, write_original=False
        ),
    ]
    return write_egd(tmp_path / "egd", recordings=specs)


def expected_reflacx_fixations() -> dict:
    """The columnar fixations of FIXATIONS, built from the spec, not from the reader."""
    rows = ReflacxSpec(id=REC, image_size=(W, H), fixations=FIXATIONS).fixation_rows()
    return {
        "start": [r["timestamp_start_fixation"] for r in rows],
        "end": [r["timestamp_end_fixation"] for r in rows],
        "x": [r["x_position"] for r in rows],
        "y": [r["y_position"] for r in rows],
        "ang_res_x": [r["angular_resolution_x_pixels_per_degree"] for r in rows],
        "ang_res_y": [r["angular_resolution_y_pixels_per_degree"] for r in rows],
        "shown_rect": [
            [
                r["xmin_shown_from_image"],
                r["ymin_shown_from_image"],
                r["xmax_shown_from_image"],
                r["ymax_shown_from_image"],
            ]
            for r in rows
        ],
        "inside": [True] * len(rows),
    }


def egd_arguments(root: Path, dicom_id: str = DICOM_B) -> list:
    return [
        root / "fixations.csv",
        "--format",
        "egd",
        "--image-size",
        W,
        H,
        "--master-sheet",
        root / "master_sheet.csv",
        "--dicom-id",
        dicom_id,
    ]


# ------------------------------------------------------------------------------------------- results


def test_reflacx_map_is_the_heatmap_of_the_file(reflacx, tmp_path):
    out = tmp_path / "map.npy"

    summary = run(reflacx, "--format", "reflacx", "--image-size", W, H, "--out", out)

    saved = np.load(out)
    assert saved.shape == (H, W) and saved.dtype == np.float32
    expected = heatmap(expected_reflacx_fixations(), width=W, height=H, method="reflacx")
    np.testing.assert_array_equal(saved, expected)
    assert saved.sum(dtype=np.float64) == pytest.approx(1.0, abs=1e-5)
    assert "5 of 5 fixations used" in summary and "whole recording" in summary
    assert out.as_posix() in summary and "sum 1" in summary


def test_reflacx_reader_matches_the_importer(reflacx):
    imported = next(read_reflacx(reflacx.parents[2]))
    assert read_reflacx_fixations(reflacx, W, H) == imported.fixations


def test_time_window_changes_the_map(reflacx, tmp_path):
    whole, part = tmp_path / "whole.npy", tmp_path / "part.npy"
    run(reflacx, "--format", "reflacx", "--image-size", W, H, "--out", whole)

    summary = run(
        reflacx, "--format", "reflacx", "--image-size", W, H, "--start", 0.9, "--end", 2.0, "--out", part
    )

    fx = expected_reflacx_fixations()
    windowed = heatmap(fx, width=W, height=H, method="reflacx", start=0.9, end=2.0)
    np.testing.assert_array_equal(np.load(part), windowed)
    assert not np.allclose(np.load(part), np.load(whole))
    assert "3 of 5 fixations used" in summary and "window [0.9, 2] s" in summary


def test_custom_method_options_reach_the_heatmap(reflacx, tmp_path):
    out = tmp_path / "custom.npy"

    run(
        reflacx,
        "--format",
        "reflacx",
        "--image-size",
        W,
        H,
        "--method",
        "custom",
        "--sigma-px",
        6,
        "--no-duration-weighting",
        "--normalise",
        "max",
        "--out",
        out,
    )

    fx = expected_reflacx_fixations()
    expected = heatmap(
        fx, width=W, height=H, method="custom", sigma_px=6.0, duration_weighting=False, normalise="max"
    )
    np.testing.assert_array_equal(np.load(out), expected)
    assert np.load(out).max() == pytest.approx(1.0)


def test_egd_map_of_one_image_of_the_shared_fixations_file(egd, tmp_path):
    out = tmp_path / "egd.npy"

    summary = run(*egd_arguments(egd), "--out", out)

    imported = {r.external_id: r for r in read_egd(egd)}[DICOM_B]  # image size from the masks: W x H
    assert read_egd_fixations(egd / "fixations.csv", egd / "master_sheet.csv", DICOM_B, W, H) == (
        imported.fixations
    )
    saved = np.load(out)
    assert saved.shape == (H, W) and saved.dtype == np.float32
    np.testing.assert_array_equal(saved, heatmap(imported.fixations, width=W, height=H, method="egd"))
    valid = len(imported.fixations["x"])  # one of the 12 is FPOGV = 0
    on_image = sum(imported.fixations["inside"])
    assert valid == 11 and on_image < valid
    # the dataset's script counts every fixations.csv row on the image, the FPOGV = 0 one too
    assert f"{on_image + 1} of 12 fixations used" in summary
    # egd is not normalised: each counted row adds (about) 1
    assert saved.sum(dtype=np.float64) == pytest.approx(on_image + 1, rel=1e-3)


def test_egd_time_window_and_other_image(egd, tmp_path):
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    run(*egd_arguments(egd, DICOM_A), "--out", a)
    run(*egd_arguments(egd, DICOM_A), "--start", 0.0, "--end", 1.5, "--out", b)

    fx = read_egd_fixations(egd / "fixations.csv", egd / "master_sheet.csv", DICOM_A, W, H)
    np.testing.assert_array_equal(np.load(a), heatmap(fx, width=W, height=H, method="egd"))
    windowed = heatmap(fx, width=W, height=H, method="egd", start=0.0, end=1.5)
    np.testing.assert_array_equal(np.load(b), windowed)
    assert np.load(b).sum() < np.load(a).sum()


def test_png_decodes_to_an_rgb_image_of_the_map(reflacx, tmp_path):
    out, png = tmp_path / "map.npy", tmp_path / "map.png"

    summary = run(reflacx, "--format", "reflacx", "--image-size", W, H, "--out", out, "--png", png)

    with Image.open(png) as image:
        assert image.format == "PNG" and image.mode == "RGB" and image.size == (W, H)
        rgb = np.asarray(image)
    assert rgb.shape == (H, W, 3)
    peak = np.unravel_index(np.argmax(np.load(out)), (H, W))
    assert tuple(rgb[peak]) == tuple(INFERNO[-1])
    assert png.as_posix() in summary


def test_png_alone_is_enough(reflacx, tmp_path):
    png = tmp_path / "only.png"
    run(reflacx, "--format", "reflacx", "--image-size", W, H, "--png", png)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["only.png", "reflacx"]


def test_heatmap_png_of_a_zero_map_is_the_first_colour():
    with Image.open(io.BytesIO(heatmap_png(np.zeros((5, 7), np.float32)))) as image:
        rgb = np.asarray(image)
    assert rgb.shape == (5, 7, 3)
    assert (rgb == INFERNO[0]).all()


def test_heatmap_png_scales_by_the_maximum():
    values = np.array([[0.0, 1.0], [2.0, np.nan]])
    with Image.open(io.BytesIO(heatmap_png(values))) as image:
        rgb = np.asarray(image)
    assert tuple(rgb[1, 0]) == tuple(INFERNO[255])
    assert tuple(rgb[0, 1]) == tuple(INFERNO[128])
    assert tuple(rgb[0, 0]) == tuple(rgb[1, 1]) == tuple(INFERNO[0])
    assert INFERNO.shape == (256, 3) and INFERNO.dtype == np.uint8
    with pytest.raises(ValueError, match="array"):
        heatmap_png(np.zeros(4))


# -------------------------------------------------------------------------------------------- errors


def reflacx_with(tmp_path, **changes) -> Path:
    spec = ReflacxSpec(id=REC, image_size=(W, H), **{"fixations": FIXATIONS, **changes})
    write_reflacx(tmp_path / "bad", recordings=[spec])
    return tmp_path / "bad" / "main_data" / REC / "fixations.csv"


def egd_with(tmp_path, spec: EgdSpec) -> Path:
    return write_egd(tmp_path / "bad_egd", recordings=[spec])


def reflacx_case(name, tmp_path):
    """(arguments, words the message must contain) of one bad invocation."""
    size = ["--image-size", W, H]
    good = tmp_path / "reflacx" / "main_data" / REC / "fixations.csv"
    if name == "missing file":
        path = tmp_path / "nowhere" / "fixations.csv"
        return [path, "--format", "reflacx", *size], [path.as_posix(), "missing"]
    if name == "wrong header":
        path = reflacx_with(tmp_path, drop_columns={"fixations.csv": ["x_position"]})
        return [path, "--format", "reflacx", *size], [path.as_posix(), "x_position"]
    if name == "bad cell":
        path = reflacx_with(tmp_path, bad_cells={("fixations.csv", 2, "y_position"): "abc"})
        return [path, "--format", "reflacx", *size], [path.as_posix(), "row 4", "y_position", "abc"]
    if name == "no fixations":
        path = reflacx_with(tmp_path, fixations=[])
        return [path, "--format", "reflacx", *size], [path.as_posix(), "no fixations"]
    if name == "all outside":
        return [good, "--format", "reflacx", "--image-size", 5, 5], [good.as_posix(), "outside", "x_position"]
    if name == "image size zero":
        return [good, "--format", "reflacx", "--image-size", 0, H], [good.as_posix(), "--image-size", "0x48"]
    if name == "image size negative":
        return [good, "--format", "reflacx", "--image-size", W, -3], [good.as_posix(), "--image-size"]
    if name == "start after end":
        return [good, "--format", "reflacx", *size, "--start", 3, "--end", 1], [good.as_posix(), "--start 3"]
    if name == "sigma without custom":
        return [good, "--format", "reflacx", *size, "--sigma-px", 5], [good.as_posix(), "--method custom"]
    if name == "custom without sigma":
        return [good, "--format", "reflacx", *size, "--method", "custom"], [good.as_posix(), "--sigma-px"]
    if name == "bad angular resolution":
        path = reflacx_with(tmp_path, bad_cells={("fixations.csv", 1, FIXATION_ANG_X): "0"})
        return [path, "--format", "reflacx", *size], [path.as_posix(), "ang_res_x", "angular resolution"]
    if name == "egd options on reflacx":
        return [good, "--format", "reflacx", *size, "--dicom-id", DICOM_A], [good.as_posix(), "--format egd"]
    raise AssertionError(name)


FIXATION_ANG_X = "angular_resolution_x_pixels_per_degree"
REFLACX_ERRORS = [
    "missing file",
    "wrong header",
    "bad cell",
    "no fixations",
    "all outside",
    "image size zero",
    "image size negative",
    "start after end",
    "sigma without custom",
    "custom without sigma",
    "bad angular resolution",
    "egd options on reflacx",
]


def assert_fails_writing_nothing(arguments, words, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out, png = out_dir / "map.npy", out_dir / "map.png"
    out.write_bytes(b"previous")  # an existing output is left as it was

    with pytest.raises(CommandError) as caught:
        run(*arguments, "--out", out, "--png", png)

    message = str(caught.value)
    for word in words:
        assert word in message, message
    assert sorted(p.name for p in out_dir.iterdir()) == ["map.npy"]
    assert out.read_bytes() == b"previous"


@pytest.mark.parametrize("name", REFLACX_ERRORS)
def test_reflacx_errors_name_the_file_and_write_nothing(name, reflacx, tmp_path):
    arguments, words = reflacx_case(name, tmp_path)
    assert_fails_writing_nothing(arguments, words, tmp_path)


@pytest.mark.parametrize(
    "name",
    [
        "unknown dicom id",
        "no fixation rows",
        "no valid fixations",
        "missing master sheet",
        "master sheet header",
        "fixations header",
        "method reflacx",
        "custom sigma-deg",
        "no dicom id",
    ],
)
def test_egd_errors_name_the_file_and_write_nothing(name, egd, tmp_path):
    fixations, master = (egd / "fixations.csv").as_posix(), (egd / "master_sheet.csv").as_posix()
    arguments = egd_arguments(egd)
    if name == "unknown dicom id":
        arguments, words = egd_arguments(egd, "0000-nope"), [master, "dicom_id", "0000-nope"]
    elif name == "no fixation rows":
        root = egd_with(tmp_path, EgdSpec(dicom_id=DICOM_A, image_size=(W, H), fixations=[]))
        arguments = egd_arguments(root, DICOM_A)
        words = [(root / "fixations.csv").as_posix(), "DICOM_ID", DICOM_A]
    elif name == "no valid fixations":
        invalid = [EgdFixation(0.5, 0.5, 0.2, 0.3, valid=0), EgdFixation(0.4, 0.6, 0.6, 0.2, valid=0)]
        root = egd_with(tmp_path, EgdSpec(dicom_id=DICOM_A, image_size=(W, H), fixations=invalid))
        arguments = egd_arguments(root, DICOM_A)
        words = [(root / "fixations.csv").as_posix(), "no valid fixations", DICOM_A]
    elif name == "missing master sheet":
        arguments[-3] = egd / "nowhere.csv"
        words = [(egd / "nowhere.csv").as_posix(), "missing"]
    elif name == "master sheet header":
        root = write_egd(
            tmp_path / "hdr",
            recordings=[EgdSpec(dicom_id=DICOM_B, image_size=(W, H))],
            drop_columns={"master_sheet.csv": ["image_left_pad"]},
        )
        arguments, words = egd_arguments(root), [(root / "master_sheet.csv").as_posix(), "image_left_pad"]
    elif name == "fixations header":
        root = write_egd(
            tmp_path / "hdr",
            recordings=[EgdSpec(dicom_id=DICOM_B, image_size=(W, H))],
            drop_columns={"fixations.csv": ["FPOGD"]},
        )
        arguments, words = egd_arguments(root), [(root / "fixations.csv").as_posix(), "FPOGD"]
    elif name == "method reflacx":
        arguments += ["--method", "reflacx"]
        words = [fixations, "ang_res_x", "--method egd"]
    elif name == "custom sigma-deg":
        arguments += ["--method", "custom", "--sigma-deg", 1.0]
        words = [fixations, "ang_res_x"]
    else:
        arguments = arguments[:-2]
        words = [fixations, "--dicom-id"]
    assert_fails_writing_nothing(arguments, words, tmp_path)


def test_missing_output_folder_writes_nothing(reflacx, tmp_path):
    out = tmp_path / "map.npy"
    with pytest.raises(CommandError, match="nowhere"):
        run(
            reflacx,
            "--format",
            "reflacx",
            "--image-size",
            W,
            H,
            "--out",
            out,
            "--png",
            tmp_path / "nowhere" / "map.png",
        )
    assert not out.exists()


def test_nothing_to_write_is_an_error(reflacx):
    with pytest.raises(CommandError, match="--out"):
        run(reflacx, "--format", "reflacx", "--image-size", W, H)


# ----------------------------------------------------------------------------------------- no database


def manage(*args, env_extra: dict) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra}
    return subprocess.run(
        [sys.executable, str(REPO / "manage.py"), "gaze_heatmap", *[str(a) for a in args]],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_runs_with_an_unreachable_database(reflacx, egd, tmp_path):
    nowhere = {"DATABASE_URL": "postgres://nobody@127.0.0.1:1/none"}
    out, png = tmp_path / "map.npy", tmp_path / "map.png"

    done = manage(*egd_arguments(egd), "--out", out, "--png", png, env_extra=nowhere)

    assert done.returncode == 0, done.stderr
    assert "fixations used" in done.stdout and out.as_posix() in done.stdout
    assert np.load(out).shape == (H, W) and png.is_file()

    failed = manage(
        reflacx,
        "--format",
        "reflacx",
        "--image-size",
        W,
        H,
        "--start",
        2,
        "--end",
        1,
        "--out",
        tmp_path / "never.npy",
        env_extra=nowhere,
    )
    assert failed.returncode != 0
    assert reflacx.as_posix() in failed.stderr and "--start" in failed.stderr
    assert not (tmp_path / "never.npy").exists()
