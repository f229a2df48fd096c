"""Storage helpers over Django's default storage (local files or S3-compatible object storage).

Keys are project-scoped: ``projects/<slug>/<kind>/...``. Callers that store several files for one unit
(a series, a recording) collect the keys they wrote and call ``storage_delete_all`` when the unit fails,
so that a failed unit leaves no files behind.
"""

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage


def project_key(project, *parts: str) -> str:
    return "/".join(["projects", project.slug, *parts])


def storage_save_path(key: str, local_path: str | os.PathLike) -> str:
    """Store a local file under ``key``; returns the key actually used."""
    with open(local_path, "rb") as fh:
        return default_storage.save(key, File(fh, name=os.path.basename(key)))


def storage_save_bytes(key: str, data: bytes) -> str:
    return default_storage.save(key, ContentFile(data, name=os.path.basename(key)))


def storage_delete_all(keys: Iterable[str]) -> None:
    for key in keys:
        if key:
            try:
                default_storage.delete(key)
            except Exception:  # best effort: a missing object is already gone
                pass


@contextmanager
def storage_local_copy(key: str, suffix: str = "") -> Iterator[Path]:
    """A local path for a stored object: the file itself on local storage, else a temporary copy."""
    try:
        yield Path(default_storage.path(key))
        return
    except NotImplementedError:
        pass
    fd, tmp = tempfile.mkstemp(suffix=suffix or Path(key).suffix)
    try:
        with os.fdopen(fd, "wb") as out, default_storage.open(key, "rb") as src:
            shutil.copyfileobj(src, out, 4 * 1024 * 1024)
        yield Path(tmp)
    finally:
        os.unlink(tmp)


def sha256_file(path: str | os.PathLike, chunk: int = 4 * 1024 * 1024) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
