"""Finding the files to ingest: folders (recursive), single files and zip archives (extracted safely).

A zip archive is refused whole when a member path escapes the extraction folder (``../``, absolute
paths, drive letters) or when it looks like a zip bomb: more members, more total uncompressed bytes or a
higher compression ratio than the limits in settings (``ZIP_MAX_*``). Limits are also enforced while
extracting, so a lying central directory cannot exceed them: a member is inflated a piece at a time and
never past the size it declares; one whose data goes on past that size (or whose checksum fails) is
refused naming it, and what was written of it is removed. When ingesting scans (``files_collect``) such a
corrupt member is listed as an error of its own and every other member is still extracted; a gaze
archive (``zip_extract`` without ``member_errors``) is refused whole.
"""

import os
import shutil
import stat
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from django.conf import settings

from studies.ingest.types import IngestError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
_IGNORED_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}
_RATIO_MIN_BYTES = 1024 * 1024  # small members compress extremely well legitimately


@dataclass
class FoundFile:
    """A file to ingest: ``path`` on local disk, ``display`` the name to show the user (archive member
    paths appear as ``archive.zip!member``)."""

    path: Path
    display: str


def file_kind(path: Path) -> str:
    """``nifti``, ``png``, ``jpeg``, ``zip`` or ``dicom`` (anything else is tried as DICOM, whose reader
    reports a non-DICOM file as an error naming it)."""
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"PK\x03\x04") and zipfile.is_zipfile(path):
        return "zip"
    return "dicom"


def _check_member_name(archive: str, name: str) -> PurePosixPath:
    normalised = name.replace("\\", "/")
    member = PurePosixPath(normalised)
    if normalised.startswith("/") or (len(normalised) > 1 and normalised[1] == ":"):
        raise IngestError(archive, f"member {name!r} has an absolute path; archive refused", "member")
    if any(part == ".." for part in member.parts):
        raise IngestError(
            archive, f"member {name!r} escapes the archive folder ('..'); archive refused", "member"
        )
    return member


def zip_check(path: Path, *, display: str | None = None) -> list[zipfile.ZipInfo]:
    """The archive's regular-file members, after checking paths and zip-bomb limits (raises IngestError)."""
    label = display or str(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise IngestError(label, f"not a readable zip archive ({exc})") from exc
    with zf:
        infos = zf.infolist()
    if len(infos) > settings.ZIP_MAX_MEMBERS:
        raise IngestError(label, f"{len(infos)} members exceed the limit of {settings.ZIP_MAX_MEMBERS}")
    members, total = [], 0
    for info in infos:
        _check_member_name(label, info.filename)
        mode = info.external_attr >> 16
        if info.is_dir() or stat.S_ISLNK(mode):
            continue
        total += info.file_size
        if total > settings.ZIP_MAX_TOTAL_BYTES:
            raise IngestError(
                label,
                f"uncompressed size exceeds the limit of {settings.ZIP_MAX_TOTAL_BYTES} bytes (zip bomb?)",
            )
        if info.file_size >= _RATIO_MIN_BYTES:
            ratio = info.file_size / max(info.compress_size, 1)
            if ratio > settings.ZIP_MAX_RATIO:
                raise IngestError(
                    label,
                    f"member {info.filename!r} compresses {ratio:.0f}:1, over the limit of "
                    f"{settings.ZIP_MAX_RATIO}:1 (zip bomb?)",
                    "member",
                )
        members.append(info)
    return members


def zip_extract(
    path: Path, dest: Path, *, display: str | None = None, member_errors: list[IngestError] | None = None
) -> list[FoundFile]:
    """Extract the checked members of ``path`` under ``dest``; never writes outside ``dest``.

    A member that cannot be inflated or fails its checksum (corrupt data, or data past its declared size)
    raises IngestError, the archive refused; with ``member_errors`` given it is appended there instead,
    named ``archive!member``, and the other members are extracted."""
    label = display or str(path)
    members = zip_check(path, display=label)
    dest = dest.resolve()
    found: list[FoundFile] = []
    written_total = 0
    with zipfile.ZipFile(path) as zf:
        for info in members:
            member = _check_member_name(label, info.filename)
            if member.name in _IGNORED_NAMES or member.name.startswith("._") or "__MACOSX" in member.parts:
                continue
            target = (dest / Path(*member.parts)).resolve()
            if not target.is_relative_to(dest):
                raise IngestError(label, f"member {info.filename!r} escapes the archive folder", "member")
            target.parent.mkdir(parents=True, exist_ok=True)
            written = 0
            try:
                # zipfile inflates at most what is asked for per read and stops at the declared size;
                # a stream that goes on past it then fails its CRC check (BadZipFile)
                with zf.open(info) as src, open(target, "wb") as out:
                    while block := src.read(1024 * 1024):
                        written += len(block)
                        written_total += len(block)
                        if written > info.file_size or written_total > settings.ZIP_MAX_TOTAL_BYTES:
                            raise IngestError(
                                label, f"member {info.filename!r} inflates past its declared size", "member"
                            )
                        out.write(block)
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
                target.unlink(missing_ok=True)
                reason = (
                    f"does not match the {info.file_size} bytes and checksum it declares (stopped after "
                    f"{written} bytes: {exc})"
                )
                if member_errors is None:
                    raise IngestError(
                        label, f"member {info.filename!r} {reason}; archive refused", "member"
                    ) from exc
                member_errors.append(
                    IngestError(f"{label}!{info.filename}", f"corrupt zip member: {reason}", "member")
                )
                continue
            except IngestError:
                target.unlink(missing_ok=True)
                raise
            found.append(FoundFile(target, f"{label}!{info.filename}"))
    return found


def files_collect(
    paths: Iterable[str | os.PathLike], workdir: Path
) -> tuple[list[FoundFile], list[IngestError]]:
    """All files under ``paths`` (folders recursively, zip archives extracted into ``workdir``), and an
    error per path, archive or corrupt archive member that could not be taken."""
    found: list[FoundFile] = []
    errors: list[IngestError] = []
    archives = 0
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            candidates = sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink())
        elif path.is_file():
            candidates = [path]
        else:
            errors.append(IngestError(path, "no such file or folder"))
            continue
        for candidate in candidates:
            if candidate.name in _IGNORED_NAMES or candidate.name.startswith("._"):
                continue
            if file_kind(candidate) == "zip":
                archives += 1
                target = workdir / f"zip{archives}"  # a folder per archive, whatever came of the others
                try:
                    found.extend(zip_extract(candidate, target, display=str(candidate), member_errors=errors))
                except IngestError as exc:
                    shutil.rmtree(target, ignore_errors=True)
                    errors.append(exc)
            else:
                found.append(FoundFile(candidate, str(candidate)))
    return found, errors
