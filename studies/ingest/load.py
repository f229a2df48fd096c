"""Reading one scan unit into a scratch NIfTI file: the part of ingest that runs in worker processes.

No Django here: worker processes start clean (forkserver) and import only this module's needs.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studies.ingest.types import DicomFile, IngestError, Volume

log = logging.getLogger(__name__)


@dataclass
class LoadedScan:
    """A unit read and written to a scratch NIfTI file (returned from worker processes: no arrays).
    ``slice_uids``: the volume's (original SOP Instance UID of slice k, see ``Volume``)."""

    nifti_path: Path
    thumbnail: bytes
    shape: list[int]
    spacing: list[float]
    affine: list[list[float]]
    dtype: str
    modality: str
    warnings: list[str]
    meta: dict[str, Any]
    burned_in_annotation: str
    series_description: str
    instances: list[dict[str, Any]] = field(default_factory=list)
    slice_uids: list[str] = field(default_factory=list)


def volume_to_loaded(volume: Volume, out_dir: Path, modality: str, filename: str = "image.nii") -> LoadedScan:
    """Write ``volume`` as ``out_dir/filename`` (``.nii`` or ``.nii.gz``) and make its thumbnail."""
    from studies.ingest.volume_io import thumbnail_png, volume_write_nifti

    nifti_path = out_dir / filename
    volume_write_nifti(volume, nifti_path)
    thumb = thumbnail_png(volume, modality=modality or volume.modality)
    return LoadedScan(
        nifti_path=nifti_path,
        thumbnail=thumb,
        shape=[int(n) for n in volume.array.shape],
        spacing=[float(s) for s in volume.spacing],
        affine=[[float(v) for v in row] for row in volume.affine],
        dtype=str(volume.array.dtype),
        modality=modality or volume.modality,
        warnings=list(volume.warnings),
        meta=dict(volume.meta),
        burned_in_annotation=volume.burned_in_annotation,
        series_description=volume.series_description,
        slice_uids=list(volume.slice_uids),
    )


def load_unit(
    kind: str,
    paths: list[Path],
    dicom: list[DicomFile] | None,
    modality: str,
    out_dir: Path,
    filename: str = "image.nii",
) -> LoadedScan:
    """Read one unit and write its canonical NIfTI under ``out_dir`` (runs in a worker process)."""
    if kind == "dicom":
        from studies.ingest.dicom import dicom_group_series, dicom_load_series, dicom_read_headers

        if not dicom:
            dicom, errors = dicom_read_headers(paths)
            if errors:
                raise errors[0]
            dicom = [f for series in dicom_group_series(dicom).values() for f in series]  # fills identifiers
        volume = dicom_load_series(dicom)
    elif kind == "nifti":
        from studies.ingest.images import nifti_load

        volume = nifti_load(paths[0])
    else:
        from studies.ingest.images import raster_load

        volume = raster_load(paths[0])
    if modality:
        volume.modality = modality
    loaded = volume_to_loaded(volume, out_dir, modality, filename)
    del volume
    return loaded


def load_unit_safe(args: tuple) -> LoadedScan | IngestError:
    kind, paths, dicom, modality, out_dir, label, filename = args
    try:
        return load_unit(kind, paths, dicom, modality, out_dir, filename)
    except IngestError as exc:
        return exc
    except MemoryError:
        return IngestError(label, "not enough memory to read this series")
    except Exception as exc:  # a reader bug must not take the whole ingest down
        log.exception("reading %s failed", label)
        return IngestError(label, f"could not be read: {type(exc).__name__}: {exc}")


@dataclass
class SeriesRead:
    """A DICOM series read by a worker: its files (original UIDs), the first file's header (for
    de-identification in the calling process) and the loaded volume or the error."""

    series_uid: str
    paths: list[Path]
    sop_uids: list[str]
    checksums: list[str]
    identity: Any  # DicomIdentity of the first header (None if it failed: the caller tries again)
    loaded: LoadedScan | IngestError


def read_partition(args: tuple) -> tuple[list[SeriesRead], list[IngestError]]:
    """Read the headers of a group of files (one or more folders), group them into series and load
    each series: every file is read and parsed once. Runs in a worker process."""
    from studies.ingest import dicom
    from studies.ingest.dicom_identity import dicom_identity

    paths, out_dir, filename, modality, secret = args
    dicom.READ_THREADS = 1  # the pool's processes use the cores; threads here would only contend
    files, errors = dicom.dicom_read_headers(paths)
    reads = []
    for i, (series_uid, series) in enumerate(dicom.dicom_group_series(files).items()):
        unit_dir = Path(out_dir) / f"s{i}"
        unit_dir.mkdir(parents=True, exist_ok=True)
        label = str(series[0].path)
        loaded = load_unit_safe(
            ("dicom", [f.path for f in series], series, modality, unit_dir, label, filename)
        )
        try:
            identity = dicom_identity(series[0].header, secret=secret)
        except Exception as exc:  # left to the calling process, which reports it with the series
            identity = None
            log.warning("identity of %s: %s", label, exc)
        reads.append(
            SeriesRead(
                series_uid=series_uid,
                paths=[f.path for f in series],
                sop_uids=[f.sop_uid for f in series],
                checksums=[f.checksum for f in series],
                identity=identity,
                loaded=loaded,
            )
        )
    return reads, errors
