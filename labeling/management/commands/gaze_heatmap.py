"""manage.py gaze_heatmap: the heatmap of one fixations file as a ``.npy`` array (and a PNG), no database.

The map is ``labeling.gaze.heatmaps.heatmap`` of the fixations read as the importers read them
(``read_reflacx_fixations`` / ``read_egd_fixations``): float32, shape ``(H, W)`` (rows, columns of the
image), saved with ``numpy.save``. Outputs are written to a temporary name in their folder and renamed
into place, so nothing is written when anything fails.
"""

import io
import os
import secrets
from pathlib import Path

import numpy as np
from django.core.management.base import BaseCommand, CommandError

from labeling.gaze.columns import window_weights
from labeling.gaze.heatmaps import METHODS, NORMALISE, egd_row_pixels, heatmap
from labeling.gaze.render import heatmap_png
from studies.ingest.gaze import read_egd_fixations, read_reflacx_fixations
from studies.ingest.types import IngestError

FORMATS = ("reflacx", "egd")


class Command(BaseCommand):
    help = (
        "Gaze heatmap of one fixations file, without the database: REFLACX main_data/<id>/fixations.csv "
        "(--format reflacx) or EGD-CXR fixations.csv with --master-sheet and --dicom-id (--format egd). "
        "Writes a float32 (H, W) array with numpy.save (--out) and/or a colour-mapped PNG (--png)."
    )
    # Standalone: no system checks (some query the database) and no migration check.
    requires_system_checks = []
    requires_migrations_checks = False

    def add_arguments(self, parser):
        parser.add_argument("fixations", type=Path, help="the fixations CSV file")
        parser.add_argument("--format", choices=FORMATS, required=True, dest="fmt")
        parser.add_argument(
            "--image-size", type=int, nargs=2, metavar=("W", "H"), required=True, help="image size in px"
        )
        parser.add_argument("--method", choices=METHODS, help="heatmap method (default: the format's own)")
        sigma = parser.add_mutually_exclusive_group()
        sigma.add_argument("--sigma-px", type=float, help="--method custom: Gaussian sigma in pixels")
        sigma.add_argument(
            "--sigma-deg", type=float, help="--method custom: sigma in degrees (x the angular resolution)"
        )
        parser.add_argument(
            "--no-duration-weighting", action="store_true", help="--method custom: every fixation counts 1"
        )
        parser.add_argument("--normalise", choices=NORMALISE, help="default: sum, or none for egd")
        parser.add_argument("--start", type=float, help="time window start (s)")
        parser.add_argument("--end", type=float, help="time window end (s)")
        parser.add_argument("--out", type=Path, help="the .npy file to write")
        parser.add_argument("--png", type=Path, help="a colour-mapped PNG to write")
        parser.add_argument("--dicom-id", help="--format egd: the image (DICOM_ID) whose fixations to use")
        parser.add_argument("--master-sheet", type=Path, help="--format egd: master_sheet.csv (paddings)")

    def handle(self, *args, **opts):
        path: Path = opts["fixations"]
        fmt: str = opts["fmt"]
        method: str = opts["method"] or fmt
        width, height = opts["image_size"]
        start, end = opts["start"], opts["end"]
        name = path.as_posix()
        self._check_options(opts, name, method, width, height)
        fixations = self._read(opts, path, fmt, width, height)
        try:
            array = heatmap(
                fixations,
                width=width,
                height=height,
                method=method,
                start=start,
                end=end,
                sigma_px=opts["sigma_px"],
                sigma_deg=opts["sigma_deg"],
                duration_weighting=not opts["no_duration_weighting"],
                normalise=opts["normalise"],
            )
        except ValueError as exc:
            hint = ""
            if "ang_res" in str(exc) and fmt == "egd":
                hint = " (EGD-CXR has no angular resolution: use --method egd or --method custom --sigma-px)"
            raise CommandError(f"{name}: method {method!r}: {exc}{hint}") from exc
        array = np.asarray(array, dtype=np.float32)
        used, total = _used(fixations, method, start, end), len(fixations["start"])
        if method == "egd" and start is None and end is None and fixations.get("egd_rows"):
            # EGD-CXR's map counts the fixations.csv rows as its script does (FPOGV 0 too)
            used = int(egd_row_pixels(fixations["egd_rows"], width, height)[2].sum())
            total = len(fixations["egd_rows"]["fpogx"])
        outputs: list[tuple[Path, bytes]] = []
        if opts["out"]:
            outputs.append((opts["out"], _npy(array)))
        if opts["png"]:
            outputs.append((opts["png"], heatmap_png(array)))
        _write_all(outputs)
        written = " and ".join(p.as_posix() for p, _ in outputs)
        self.stdout.write(
            f"{name}: {used} of {total} fixations used, window {_window_text(start, end)}, "
            f"method {method}, {width}x{height} px, sum {float(array.sum(dtype=np.float64)):.6g}, "
            f"max {float(array.max()):.6g} -> {written}"
        )

    def _check_options(self, opts, name: str, method: str, width: int, height: int) -> None:
        if width <= 0 or height <= 0:
            raise CommandError(f"{name}: --image-size must be positive, got {width}x{height}")
        start, end = opts["start"], opts["end"]
        if start is not None and end is not None and start > end:
            raise CommandError(f"{name}: --start {start} is after --end {end}")
        if method != "custom":
            for option in ("sigma_px", "sigma_deg", "no_duration_weighting"):
                if opts[option] not in (None, False):
                    flag = "--" + option.replace("_", "-")
                    raise CommandError(f"{name}: {flag} applies to --method custom only, not {method!r}")
        elif opts["sigma_px"] is None and opts["sigma_deg"] is None:
            raise CommandError(f"{name}: --method custom needs --sigma-px or --sigma-deg")
        if opts["fmt"] == "egd":
            if not opts["dicom_id"] or opts["master_sheet"] is None:
                raise CommandError(f"{name}: --format egd needs --dicom-id and --master-sheet")
        elif opts["dicom_id"] or opts["master_sheet"] is not None:
            raise CommandError(f"{name}: --dicom-id and --master-sheet are for --format egd only")
        if not opts["out"] and not opts["png"]:
            raise CommandError(f"{name}: nothing to write: give --out MAP.npy and/or --png MAP.png")
        paths = [p for p in (opts["out"], opts["png"]) if p]
        if len(paths) == 2 and paths[0].resolve() == paths[1].resolve():
            raise CommandError(f"{name}: --out and --png are the same file {paths[0]}")
        for p in paths:
            if not p.parent.is_dir():
                raise CommandError(f"{p.as_posix()}: output folder {p.parent.as_posix()} does not exist")
            if p.is_dir():
                raise CommandError(f"{p.as_posix()}: is a folder, not a file name")

    def _read(self, opts, path: Path, fmt: str, width: int, height: int) -> dict:
        name = path.as_posix()
        problems: list[str] = []
        try:
            if fmt == "reflacx":
                fixations = read_reflacx_fixations(path, width, height, problems)
            else:
                fixations = read_egd_fixations(path, opts["master_sheet"], opts["dicom_id"], width, height)
        except IngestError as exc:
            raise CommandError(str(exc)) from exc  # "file [column]: row N: reason"
        except OSError as exc:
            raise CommandError(f"{name}: cannot read: {exc}") from exc
        if not fixations["start"]:
            what = f"no valid fixations (FPOGV = 1) of DICOM_ID {opts['dicom_id']!r}" if fmt == "egd" else ""
            raise CommandError(f"{name}: {what or 'no fixations'}")
        for problem in problems:
            self.stderr.write(problem)
        return fixations


def _used(fixations: dict, method: str, start: float | None, end: float | None) -> int:
    """How many fixations the map counts: those in the window (and, for egd/custom, on the image)."""
    t0 = np.asarray(fixations["start"], np.float64)
    t1 = np.asarray(fixations["end"], np.float64)
    selected, _ = window_weights(t0, t1, start, end)
    if method != "reflacx":
        selected &= np.asarray(fixations["inside"], bool)
    if method == "egd":
        x, y = np.asarray(fixations["x"], np.float64), np.asarray(fixations["y"], np.float64)
        selected &= (x >= 0) & (y >= 0)
    return int(selected.sum())


def _window_text(start: float | None, end: float | None) -> str:
    if start is None and end is None:
        return "whole recording"
    return f"[{'-inf' if start is None else f'{start:g}'}, {'inf' if end is None else f'{end:g}'}] s"


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _write_all(outputs: list[tuple[Path, bytes]]) -> None:
    """Write every output to a temporary file in its folder, then rename each into place."""
    temps: list[tuple[str, Path]] = []
    target = outputs[0][0]
    try:
        for target, data in outputs:
            temp = os.path.join(target.parent, f".{target.name}.{secrets.token_hex(6)}.tmp")
            # like open(..., "wb"): permissions from the umask (mkstemp would make it private)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            temps.append((temp, target))
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        for temp, target in temps:
            os.replace(temp, target)
    except OSError as exc:
        raise CommandError(f"{target.as_posix()}: cannot write: {exc.strerror or exc}") from exc
    finally:
        for temp, _ in temps:
            if os.path.exists(temp):
                os.unlink(temp)
