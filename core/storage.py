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

from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage


def project_key(project, *parts: str) -> str:
    return "/".join(["projects", project.slug, *parts])


def storage_save_path(key: str, local_path: str | os.PathLike) -> str:
    """Store a local file under ``key``; returns the key actually used."""
    with open(local_path, "rb") as fh:
        return default_storage.save(key, File(fh, name=os.path.basename(key)))


def storage_scratch_dir() -> Path:
    """A folder for files on their way into storage: on the same file system as MEDIA_ROOT, so that
    ``storage_put_file`` can move them into local storage without copying."""
    base = Path(settings.MEDIA_ROOT) / ".scratch"
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=base))


def storage_put_file(key: str, local_path: str | os.PathLike) -> str:
    """Store a local file under ``key``, moving it when storage is the local file system (the file is
    gone afterwards either way). Returns the key actually used."""
    if _is_local_storage():
        name = default_storage.get_available_name(key)
        target = Path(default_storage.path(name))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(os.fspath(local_path), target)
        mode = getattr(default_storage, "file_permissions_mode", None)
        if mode is not None:  # a scratch file made by mkstemp is 0600: stored files get the storage's mode
            os.chmod(target, mode)
        return name
    try:
        return storage_save_path(key, local_path)
    finally:
        Path(local_path).unlink(missing_ok=True)


def _is_local_storage() -> bool:
    try:
        default_storage.path("x")
        return True
    except NotImplementedError:
        return False


def storage_save_bytes(key: str, data: bytes) -> str:
    return default_storage.save(key, ContentFile(data, name=os.path.basename(key)))


@contextmanager
def storage_all_or_nothing() -> Iterator[list[str]]:
    """Collects the keys that one unit stores (append them to the yielded list); if the block raises,
    they are deleted, so a unit that fails leaves no files behind."""
    keys: list[str] = []
    try:
        yield keys
    except BaseException:
        storage_delete_all(keys)
        raise


def storage_delete_all(keys: Iterable[str]) -> None:
    for key in keys:
        if key:
            try:
                default_storage.delete(key)
            except Exception:  # best effort: a missing object is already gone
                pass


@contextmanager
def storage_local_copy(key: str) -> Iterator[Path]:
    """A local path for a stored object: the file itself on local storage, else a temporary copy that
    keeps the object's file name (so readers that go by extension, like ``.nii.gz``, work)."""
    try:
        yield Path(default_storage.path(key))
        return
    except NotImplementedError:
        pass
    folder = Path(tempfile.mkdtemp(prefix="object-"))
    target = folder / Path(key).name
    try:
        with open(target, "wb") as out, default_storage.open(key, "rb") as src:
            shutil.copyfileobj(src, out, 4 * 1024 * 1024)
        yield target
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def sha256_file(path: str | os.PathLike, chunk: int = 4 * 1024 * 1024) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
