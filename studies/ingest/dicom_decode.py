"""Decoding the frames of one DICOM series into its volume: serially, or on worker processes.

pydicom's decoders for compressed transfer syntaxes (pylibjpeg-libjpeg, pylibjpeg-openjpeg, pyjpegls,
Pillow) hold the GIL while they decode: two threads decode 512x512 CT slices no faster than one (0.83 to
1.02 times, measured on JPEG Lossless, JPEG 2000 and JPEG-LS). So the files of a compressed series are
decoded on worker processes, about one per available core. The volume then lives in anonymous shared
memory (a Linux ``memfd``) that the calling process and every worker map: a worker reads its files'
pixel bytes, decodes them and writes ``stored * slope + intercept`` straight into its slices, so no
frame travels between processes and peak memory stays near one volume. Native (uncompressed) series
and small ones are decoded here, serially, as are series where worker processes cannot start (inside a
daemonic process such as a Celery prefork child, or without ``memfd``).

The result is the same array either way (:func:`series_decode`'s rules are :class:`VolumeFiller`'s): a
frame that does not fit the int16 volume is left by its worker and written here after the volume became
float32, into which the int16 values already written convert exactly.

How many processes: :func:`decode_workers`, the cores this process may run on (``sched_getaffinity``)
divided among the ingest's series workers (``INGEST_WORKERS``), capped by ``INGEST_DECODE_WORKERS``
(1: always serial).
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import math
import mmap
import multiprocessing
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset

from studies.ingest.dicom_pixels import (
    _PIXEL_MODULE,
    LOCATION_ATTR,
    VolumeFiller,
    iter_frames,
    stored_range,
    transfer_syntax,
)
from studies.ingest.dicom_values import text
from studies.ingest.types import DicomFile, IngestError

log = logging.getLogger(__name__)

MIN_FILES = 8  # fewer compressed files than this are decoded serially (starting processes costs more)
CHUNKS_PER_WORKER = 4  # files are handed out in this many chunks per worker, in file order
# Decode processes each ingest process may use; None: from the settings (INGEST_DECODE_WORKERS, all the
# cores). The ingest's worker processes get their share when they start (:func:`configure`).
WORKERS: int | None = None


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def decode_workers(setting: int = 0, *, series_workers: int = 1) -> int:
    """Decode processes for one series: the available cores shared among ``series_workers`` processes
    that read series at the same time (at least 1), capped by ``setting`` when it is positive."""
    share = max(1, available_cores() // max(1, series_workers))
    return share if setting <= 0 else max(1, min(setting, share))


def configure(setting: int, series_workers: int) -> None:
    """Initializer of the ingest's worker processes: each decodes with its share of the cores."""
    global WORKERS
    WORKERS = decode_workers(setting, series_workers=series_workers)


def workers_now() -> int:
    """Decode processes this process uses for a series now (see the module docstring)."""
    if WORKERS is not None:
        return WORKERS
    from django.conf import settings  # configuration only: this module runs without Django set up too

    if not settings.configured:
        return 1
    return decode_workers(int(getattr(settings, "INGEST_DECODE_WORKERS", 0)))


@dataclass
class FileJob:
    """One file to decode: its frames' slices and rescale, and how its stored values are read.

    ``slots`` maps frame index (file order) to ``(k, slope, intercept)``, k the slice of the volume
    (None: a 2D volume); decoding stops at the first frame without a slot.
    """

    index: int
    file: DicomFile
    slots: dict[int, tuple[int | None, float, float]]
    invert: tuple[int, int] | None
    value_range: tuple[int, int] | None

    def slim(self) -> FileJob:
        """The same job with a header of just what decoding reads (sent to a worker process)."""
        header = self.file.header
        small = Dataset()
        small.file_meta = FileMetaDataset()
        small.file_meta.TransferSyntaxUID = transfer_syntax(header)
        for keyword in _PIXEL_MODULE:
            if keyword in header:
                small[keyword] = header[keyword]
        location = getattr(header, LOCATION_ATTR, None)
        if location is not None:
            setattr(small, LOCATION_ATTR, location)
        return dataclasses.replace(self, file=dataclasses.replace(self.file, header=small))


def file_jobs(files: Sequence[DicomFile], frames: Sequence[Any], order: Sequence[int], *, two_d: bool):
    """A :class:`FileJob` per file: ``frames`` (dicom_geometry.Frame: file_index, frame, slope,
    intercept) placed in the volume's slices by ``order`` (frame indices by slice)."""
    slice_of = {(frames[i].file_index, frames[i].frame): k for k, i in enumerate(order)}
    slots: list[dict[int, tuple[int | None, float, float]]] = [{} for _ in files]
    for fr in frames:
        k = None if two_d else slice_of[(fr.file_index, fr.frame)]
        slots[fr.file_index][fr.frame] = (k, fr.slope, fr.intercept)
    jobs = []
    for index, f in enumerate(files):
        photometric = text(f.header.get("PhotometricInterpretation")).upper()
        value_range = stored_range(f.header)
        invert = value_range if photometric == "MONOCHROME1" else None
        jobs.append(FileJob(index, f, slots[index], invert, value_range))
    return jobs


def file_decode(
    filler: VolumeFiller, job: FileJob, frame_shape: tuple[int, int], *, upgrade: bool = True, only=None
) -> list[int]:
    """Decode one file's frames into ``filler``. Returns the frames left unwritten because they do not
    fit the int16 volume (only when ``upgrade`` is false); ``only``: write just these frames."""
    f = job.file
    decoded = 0
    left: list[int] = []
    for i, pixels in enumerate(iter_frames(f)):
        slot = job.slots.get(i)
        if slot is None:
            break
        decoded += 1
        if only is not None and i not in only:
            continue
        if pixels.shape != frame_shape:
            raise IngestError(
                f.path, f"decoded frame {i + 1} is {pixels.shape}, not {frame_shape}", "PixelData"
            )
        k, slope, intercept = slot
        written = filler.put(
            k,
            pixels,
            slope=slope,
            intercept=intercept,
            invert_range=job.invert,
            value_range=job.value_range,
            upgrade=upgrade,
        )
        if not written:
            left.append(i)
    if only is None and decoded < f.number_of_frames:
        raise IngestError(
            f.path,
            f"pixel data holds {decoded} frames, NumberOfFrames says {f.number_of_frames}",
            "PixelData",
        )
    return left


def series_decode(
    jobs: Sequence[FileJob], *, shape: tuple[int, ...], integral: bool, frame_shape: tuple[int, int]
) -> np.ndarray:
    """The volume of ``shape`` (Fortran-ordered: int16 while every value fits, else float32) with every
    file's frames decoded into it, on worker processes where :func:`parallel_workers` says so.
    Raises the IngestError of the first bad file in file order, as a serial decode would."""
    workers = parallel_workers(jobs)
    if workers > 1:
        try:
            shared = SharedVolume(shape, VolumeFiller.dtype_for(integral))
        except OSError as exc:  # no memfd here, or too little shared memory: decode serially
            log.info("decoding serially, no shared volume: %s", exc)
        else:
            with shared:
                array = _decode_parallel(jobs, shared, workers, integral=integral, frame_shape=frame_shape)
            if array is not None:
                return array
    filler = VolumeFiller(shape, integral=integral)
    for job in jobs:
        file_decode(filler, job, frame_shape)
    log.debug("decoded %d files serially", len(jobs))
    return filler.array


def parallel_workers(jobs: Sequence[FileJob]) -> int:
    """Worker processes for these files: 1 (serial) for native or few files, or where this process may
    not start children (daemonic, e.g. a Celery prefork child)."""
    if len(jobs) < MIN_FILES or multiprocessing.current_process().daemon:
        return 1
    if not any(transfer_syntax(job.file.header).is_encapsulated for job in jobs):
        return 1  # native pixel data is read, not decoded: nothing for other cores to do
    return min(workers_now(), math.ceil(len(jobs) / 2))


class SharedVolume:
    """A Fortran-ordered array in a memfd (shared memory without a name) that other processes of this
    user open as ``path`` (``/proc/<pid>/fd/<fd>``) while it is open. The array outlives ``close()``: its
    mapping keeps the memory until the array is freed."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype):
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        size = max(1, math.prod(self.shape) * self.dtype.itemsize)
        self.fd = os.memfd_create("groundlab-volume", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, size)
            self.array = _map(self.fd, self.shape, self.dtype)
        except BaseException:
            os.close(self.fd)
            raise
        self.path = f"/proc/{os.getpid()}/fd/{self.fd}"

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> SharedVolume:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _map(fd: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    size = max(1, math.prod(shape) * dtype.itemsize)
    buffer = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    return np.ndarray(shape, dtype=dtype, buffer=buffer, order="F")


def _decode_parallel(
    jobs: Sequence[FileJob],
    shared: SharedVolume,
    workers: int,
    *,
    integral: bool,
    frame_shape: tuple[int, int],
) -> np.ndarray | None:
    """Decode on ``workers`` processes into ``shared``; None where the processes could not be used."""
    size = max(1, math.ceil(len(jobs) / (workers * CHUNKS_PER_WORKER)))
    chunks = [[job.slim() for job in jobs[i : i + size]] for i in range(0, len(jobs), size)]
    context = _mp_context()
    frozen = context.get_start_method() == "fork"
    if frozen:
        gc.freeze()  # the children's collector then leaves the parent's objects (and their pages) alone
    try:
        with ProcessPoolExecutor(
            max_workers=workers,
            mp_context=context,
            initializer=_worker_start,
            initargs=(shared.path, shared.shape, shared.dtype.str),
        ) as pool:
            futures = [pool.submit(_worker_decode, chunk, frame_shape) for chunk in chunks]
            try:
                results = [future.result() for future in futures]  # in file order: the first error
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    except BrokenProcessPool as exc:  # a decoder crashed or the system killed a worker
        raise IngestError(
            jobs[0].file.path,
            "a decoding process of this series died (a decoder crashed on its data, or memory ran out)",
            "PixelData",
        ) from exc
    except OSError as exc:  # processes could not start
        log.warning("decoding serially, worker processes unavailable: %s", exc)
        return None
    finally:
        if frozen:
            gc.unfreeze()
    if any(result is None for result in results):
        log.warning("decoding serially, a worker process could not map the shared volume")
        return None
    filler = VolumeFiller(shared.shape, integral=integral, array=shared.array)
    left = {index: frames for result in results for index, frames in result.items() if frames}
    if left:  # values outside int16: float32 from here on, those frames decoded again here
        filler.upgrade()
        for index, frames in sorted(left.items()):
            file_decode(filler, jobs[index], frame_shape, only=set(frames))
    log.debug("decoded %d files on %d processes", len(jobs), workers)
    return filler.array


def _mp_context():
    """``fork`` (instant) while this process runs a single thread but for threads that say they are
    fork-safe (a job's lease thread); otherwise ``forkserver`` (clean processes)."""
    if sum(1 for t in threading.enumerate() if not getattr(t, "fork_safe", False)) == 1:
        return multiprocessing.get_context("fork")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["studies.ingest.dicom"])  # a part of the ingest's own list
    return context


_worker_filler: VolumeFiller | None = None


def _worker_start(path: str, shape: tuple[int, ...], dtype: str) -> None:
    """Map the shared volume once per worker process (left None where it cannot be opened)."""
    global _worker_filler
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError as exc:
        log.warning("cannot open the shared volume %s: %s", path, exc)
        return
    try:
        array = _map(fd, shape, np.dtype(dtype))
    finally:
        os.close(fd)
    _worker_filler = VolumeFiller(shape, integral=array.dtype == np.int16, array=array)


def _worker_decode(chunk: list[FileJob], frame_shape: tuple[int, int]) -> dict[int, list[int]] | None:
    """Decode a chunk of files into the shared volume; the frames each file left (they do not fit int16).
    None: this worker has no shared volume."""
    if _worker_filler is None:
        return None
    return {job.index: file_decode(_worker_filler, job, frame_shape, upgrade=False) for job in chunk}
