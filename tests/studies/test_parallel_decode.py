"""Compressed series decoded on worker processes: the same volume as a serial decode, serial when the
setting says 1, errors and values outside int16 as a serial decode has them; the faster decoders tried
first for JPEG Lossless and JPEG-LS give the values of pydicom's default ones.

The series are the real 30-slice CT (``../shared/data``) compressed losslessly as the benchmark does it
(``bench/bench_decode.py``): JPEG Lossless (GDCM through SimpleITK), JPEG 2000 (pylibjpeg-openjpeg) and
JPEG-LS (pyjpegls).
"""

import logging
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import get_decoder
from pydicom.uid import JPEGLosslessSV1, JPEGLSLossless

from bench.bench_decode import SYNTAXES, compress_series
from studies.ingest import dicom_decode, dicom_pixels, jpeg_lossless
from studies.ingest.dicom import dicom_load_series, dicom_read_headers
from studies.ingest.types import IngestError
from studies.services.scans import scans_ingest

CT_SERIES = "ct/lungdx-a0002"


@pytest.fixture(scope="module")
def compressed(tmp_path_factory) -> dict[str, Path]:
    """The real CT series in each compressed transfer syntax (made once for this module)."""
    source = Path(__file__).resolve().parents[3] / "shared" / "data" / CT_SERIES
    if not source.is_dir():
        pytest.skip(f"real test data folder {source} is absent")
    root = tmp_path_factory.mktemp("compressed")
    made = {"native": source}
    for label, syntax in SYNTAXES.items():
        compress_series(source, root / syntax, syntax)
        made[label] = root / syntax
    return made


def headers(folder: Path):
    return headers_of(sorted(folder.glob("*.dcm")))


def headers_of(paths):
    files, errors = dicom_read_headers(paths)
    assert errors == []
    return files


def load_with(files, workers: int, caplog) -> np.ndarray:
    """The series' volume decoded with ``workers`` decode processes (1: serial); checks which way ran."""
    dicom_decode.WORKERS = workers
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="studies.ingest.dicom_decode"):
        array = dicom_load_series(files).array
    expected = f"on {workers} processes" if workers > 1 else "serially"
    assert any(expected in r.getMessage() for r in caplog.records), caplog.text
    return array


@pytest.fixture(autouse=True)
def _workers_from_settings():
    yield
    dicom_decode.WORKERS = None


@pytest.mark.parametrize("label", list(SYNTAXES))
def test_parallel_decode_gives_the_serial_volume(compressed, label, caplog):
    files = headers(compressed[label])
    transfer_syntax = str(files[0].header.file_meta.TransferSyntaxUID)
    assert transfer_syntax == SYNTAXES[label] and pydicom.uid.UID(transfer_syntax).is_encapsulated
    serial = load_with(files, 1, caplog)
    parallel = load_with(files, 2, caplog)
    assert parallel.dtype == serial.dtype == np.int16
    assert parallel.shape == serial.shape == (512, 512, 30)
    assert parallel.flags.f_contiguous
    assert np.array_equal(parallel, serial)
    # lossless: the values of the uncompressed original
    assert np.array_equal(parallel, load_with(headers(compressed["native"]), 1, caplog))


def test_setting_of_one_decodes_serially(compressed, settings, caplog):
    settings.INGEST_DECODE_WORKERS = 1
    assert dicom_decode.workers_now() == 1
    files = headers(compressed["JPEG Lossless"])
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="studies.ingest.dicom_decode"):
        dicom_load_series(files)
    assert "decoded 30 files serially" in caplog.text
    assert "processes" not in caplog.text


def test_worker_count_is_the_cores_shared_by_series_workers_and_capped_by_the_setting(settings):
    cores = dicom_decode.available_cores()
    assert dicom_decode.decode_workers(0) == cores
    assert dicom_decode.decode_workers(0, series_workers=2) == max(1, cores // 2)
    assert dicom_decode.decode_workers(0, series_workers=cores + 5) == 1
    assert dicom_decode.decode_workers(1) == 1
    assert dicom_decode.decode_workers(cores + 8) == cores
    settings.INGEST_DECODE_WORKERS = 0
    assert dicom_decode.workers_now() == cores
    dicom_decode.configure(0, 2)  # what each of two ingest worker processes runs when it starts
    assert dicom_decode.workers_now() == max(1, cores // 2)


def test_native_and_small_series_are_decoded_serially(compressed, caplog):
    assert dicom_decode.MIN_FILES > 4
    load_with(headers(compressed["native"]), 1, caplog)  # 2 asked for, but native pixel data is not decoded
    dicom_decode.WORKERS = 2
    for folder, paths in ((compressed["native"], None), (compressed["JPEG-LS"], 4)):
        files = headers(folder)[:paths]
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="studies.ingest.dicom_decode"):
            dicom_load_series(files)
        assert "serially" in caplog.text


def test_values_outside_int16_give_the_same_float_volume(compressed, tmp_path, caplog):
    """Slices whose rescaled values leave int16 are left by the workers and written after the volume
    became float32, as the serial decode does at the first such slice."""
    folder = tmp_path / "wide"
    folder.mkdir()
    for i, path in enumerate(sorted(compressed["JPEG 2000"].glob("*.dcm"))):
        ds = pydicom.dcmread(path)
        if i in (3, 17):
            ds.RescaleIntercept = 31000  # stored values up to 2197: over 32767
        ds.save_as(folder / path.name)
    files = headers(folder)
    serial = load_with(files, 1, caplog)
    parallel = load_with(files, 2, caplog)
    assert serial.dtype == parallel.dtype == np.float32
    assert serial.max() > 32767
    assert np.array_equal(parallel, serial)


def test_a_broken_slice_is_reported_as_a_serial_decode_reports_it(compressed, tmp_path, caplog):
    folder = tmp_path / "broken"
    folder.mkdir()
    paths = sorted(compressed["JPEG Lossless"].glob("*.dcm"))
    for path in paths:
        ds = pydicom.dcmread(path)
        if path == paths[21]:
            frame = next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1))
            assert frame[2:4] == b"\xff\xc3"  # start of a lossless frame, made an extended arithmetic one
            ds.PixelData = pydicom.encaps.encapsulate([frame[:2] + b"\xff\xc9" + frame[4:]])
        ds.save_as(folder / path.name)
    files = headers(folder)
    messages = []
    for workers in (1, 2):
        dicom_decode.WORKERS = workers
        with pytest.raises(IngestError) as exc:
            dicom_load_series(files)
        messages.append((exc.value.file, exc.value.field, exc.value.reason.split(":")[0]))
    assert messages[0] == messages[1]
    assert Path(messages[0][0]).name == paths[21].name and messages[0][1] == "PixelData"


def test_decode_beside_other_threads_uses_clean_processes(compressed, caplog):
    """With a thread running (a threaded server) the workers start from the fork server, not by fork."""
    files = headers(compressed["JPEG-LS"])
    serial = load_with(files, 1, caplog)
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    other.start()
    try:
        assert dicom_decode._mp_context().get_start_method() == "forkserver"
        parallel = load_with(files, 2, caplog)
    finally:
        stop.set()
        other.join()
    assert np.array_equal(parallel, serial)


@pytest.mark.django_db
def test_ingest_of_a_compressed_series_stores_the_serial_volume(
    compressed, project, other_project, settings, _media_root
):
    """End to end: the canonical file of a series decoded on processes (its volume in shared memory)
    holds what a serial decode stores."""
    stored = {}
    for setting, into in ((1, project), (2, other_project)):
        settings.INGEST_DECODE_WORKERS = setting
        summary = scans_ingest(project=into, paths=[compressed["JPEG Lossless"]], workers=1)
        assert summary.errors == [] and len(summary.stored) == 1
        stored[setting] = np.asarray(nib.load(Path(_media_root) / summary.stored[0]["file"]).dataobj)
    assert stored[1].shape == (512, 512, 30)
    assert np.array_equal(stored[1], stored[2])


# --- the decoder tried first ------------------------------------------------------------------------------


def _frames(ds: pydicom.Dataset, plugin: str) -> np.ndarray:
    decoder = get_decoder(ds.file_meta.TransferSyntaxUID)
    return np.stack([a for a, _ in decoder.iter_array(ds, as_rgb=False, decoding_plugin=plugin)])


def test_libjpeg_turbo_decodes_jpeg_lossless_as_pylibjpeg_does(compressed):
    """The plugin tried first for JPEG Lossless (studies.ingest.jpeg_lossless) gives pylibjpeg's values:
    the real CT (12 bits stored in 16-bit JPEG) and pydicom's JPEG Lossless files (8, 12 and 16 bits,
    signed and unsigned); a colour file is left to the other plugins."""
    assert jpeg_lossless.is_available(JPEGLosslessSV1), "imagecodecs with libjpeg-turbo is not installed"
    assert dicom_pixels._FIRST_PLUGIN[JPEGLosslessSV1] == jpeg_lossless.LABEL
    paths = sorted(compressed["JPEG Lossless"].glob("*.dcm"))[:3]
    paths += [get_testdata_file(name) for name in ("JPEG-LL.dcm", "JPGLosslessP14SV1_1s_1f_8b.dcm")]
    seen = set()
    for path in paths:
        if path is None:
            continue
        ds = pydicom.dcmread(path)
        turbo, reference = _frames(ds, jpeg_lossless.LABEL), _frames(ds, "pylibjpeg")
        assert turbo.dtype == reference.dtype and np.array_equal(turbo, reference), path
        seen.add((int(ds.BitsStored), int(ds.PixelRepresentation)))
    assert len(seen) >= 2
    colour = get_testdata_file("SC_rgb_jpeg_gdcm.dcm")  # RGB JPEG Lossless
    if colour:
        ds = pydicom.dcmread(colour)
        with pytest.raises(RuntimeError, match="only single-component"):
            _frames(ds, jpeg_lossless.LABEL)
        files = headers_of([Path(colour)])
        assert dicom_load_series(files).array.shape == (ds.Columns, ds.Rows)  # decoded by the next plugin


def test_charls_decodes_jpeg_ls_as_pylibjpeg_does(compressed):
    """CharLS (pyjpegls), tried first for JPEG-LS, gives pylibjpeg's values on the real CT and on
    pydicom's JPEG-LS files (lossless and near-lossless, 8 and 16 bits, signed)."""
    assert dicom_pixels._FIRST_PLUGIN[JPEGLSLossless] == "pyjpegls"
    paths = sorted(compressed["JPEG-LS"].glob("*.dcm"))[:3]
    paths += [
        get_testdata_file(name)
        for name in (
            "MR_small_jpeg_ls_lossless.dcm",
            "JPEGLSNearLossless_08.dcm",
            "JPEGLSNearLossless_16.dcm",
        )
    ]
    for path in [p for p in paths if p is not None]:
        ds = pydicom.dcmread(path)
        charls, reference = _frames(ds, "pyjpegls"), _frames(ds, "pylibjpeg")
        assert charls.dtype == reference.dtype and np.array_equal(charls, reference), path
