"""Request bodies and raw uploads: limits checked before a body is read, and where a job's raw files wait.

Before any body is read:
- ``RequestSizeMiddleware`` answers 413 when ``Content-Length`` exceeds the view's limit: for a multipart
  body the setting the view names in ``upload_limit_setting`` (default ``UPLOAD_MAX_BYTES``), for any
  other body ``DATA_UPLOAD_MAX_MEMORY_SIZE``. It sits before ``CsrfViewMiddleware``, whose check reads
  the form of every session-authenticated POST (and would otherwise spool a whole upload first).
- ``LargeChunkUploadHandler.handle_raw_input`` runs before the multipart parser reads a byte and repeats
  the size check; its ``new_file`` refuses a file part from someone not signed in (403) before a
  temporary file exists, so an anonymous request never makes one, whichever view or middleware parses
  its body (the CSRF check of a plain Django form does). Forms without files (a login) still parse.
- The same ``new_file`` counts the request's file parts against the view's limit: the setting it names in
  ``upload_files_setting`` (the scan upload: ``UPLOAD_MAX_FILES``), else ``REQUEST_MAX_FILES`` (100, as
  Django's default); 413 naming ``files`` past it. Each part goes to a temporary file that is closed once
  the part is complete and opened again only when read (``PartFile``), so a request of 10,000 slices
  holds no descriptor per slice.

Raw uploads (files not yet de-identified) live under ``job_uploads_prefix(job)`` in storage and, while a
worker ingests them, under ``job_scratch_dir(job_id)`` on its disk; ``job_files_remove`` deletes both when
the job ends, in any state, and the reaper (``core.jobs.jobs_reap``) does it for jobs whose process died.
"""

import logging
import os
import shutil
import tempfile
import weakref
from pathlib import Path

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig, TooManyFilesSent
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, TemporaryFileUploadHandler
from django.http import JsonResponse

from core.errors import TooLarge
from core.storage import project_key

log = logging.getLogger(__name__)


class BodyTooLarge(TooLarge, RequestDataTooBig):
    """A request body over its limit: 413 through the API's exception handler (a 400 where plain Django
    answers, which maps RequestDataTooBig)."""


class AnonymousUpload(PermissionDenied):
    """A file in a request from someone not signed in: refused before any of it is written (403)."""


class TooManyFiles(TooLarge, TooManyFilesSent):
    """More file parts than the view takes: 413 through the API's exception handler (a 400 where plain
    Django answers)."""


def _view_class(view_func):
    return getattr(view_func, "view_class", None) or getattr(view_func, "cls", None)


def request_files_limit(view_func) -> tuple[int, str]:
    """How many file parts a multipart request to ``view_func`` may hold, and the setting it comes from."""
    name = getattr(_view_class(view_func), "upload_files_setting", "REQUEST_MAX_FILES")
    return getattr(settings, name), name


def request_body_limit(view_func, content_type: str) -> tuple[int | None, str]:
    """The byte limit for a body sent to ``view_func`` and the setting it comes from."""
    if content_type.startswith("multipart/"):
        name = getattr(_view_class(view_func), "upload_limit_setting", "UPLOAD_MAX_BYTES")
    else:
        name = "DATA_UPLOAD_MAX_MEMORY_SIZE"
    return getattr(settings, name), name


def _too_large_message(length: int, limit: int, name: str) -> str:
    return (
        f"the request body of {length} bytes exceeds the upload limit of {limit} bytes ({name}) "
        "of this endpoint"
    )


class RequestSizeMiddleware:
    """413 for a body over its view's limit, from ``Content-Length`` alone (nothing of it read)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length <= 0:
            return None
        limit, name = request_body_limit(view_func, request.META.get("CONTENT_TYPE", ""))
        if limit is None or length <= limit:
            return None
        error = TooLarge(_too_large_message(length, limit, name), field="body")
        return JsonResponse(error.body(), status=error.status)


class LargeChunkUploadHandler(TemporaryFileUploadHandler):
    """Streams every uploaded file to a temporary file (never to memory) in 2 MiB chunks: the
    multipart parser then scans for boundaries in far fewer, larger pieces than Django's 64 KiB.

    Before the parser reads anything (``handle_raw_input``) the body's declared length is checked
    against the view's limit; before a file's temporary file is made (``new_file``) the request must
    come from someone signed in (a session, or a token the API has checked by then)."""

    chunk_size = 2 * 1024 * 1024
    files_seen = 0

    def new_file(self, *args, **kwargs):
        user = getattr(self.request, "user", None)
        if user is None or not user.is_authenticated:
            raise AnonymousUpload("Sign in before uploading files: anonymous uploads are refused.")
        self.files_seen += 1  # this handler lives for one request
        match = getattr(self.request, "resolver_match", None)
        limit, name = request_files_limit(match.func if match else None)
        if self.files_seen > limit:
            raise TooManyFiles(
                f"more than {limit} files in one request ({name}) at this endpoint; send a zip archive",
                field="files",
            )
        FileUploadHandler.new_file(self, *args, **kwargs)
        self.file = PartFile(self.file_name, self.content_type, 0, self.charset, self.content_type_extra)

    def file_complete(self, file_size):
        self.file.size = file_size
        self.file.park()
        return self.file

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        match = getattr(self.request, "resolver_match", None)
        limit, name = request_body_limit(match.func if match else None, META.get("CONTENT_TYPE", ""))
        if limit is not None and content_length > limit:
            raise BodyTooLarge(_too_large_message(content_length, limit, name), field="body")
        return None


class PartFile(UploadedFile):
    """An uploaded file part in a temporary file whose descriptor is closed once the part is complete
    (``park``) and opened again, read-only, when it is read. ``close`` removes the temporary file (Django
    closes every uploaded file when the request ends), as does garbage collection (parts of a request
    refused half-way); storage may move it away first (``temporary_file_path``)."""

    def __init__(self, name, content_type, size, charset, content_type_extra=None):
        _, ext = os.path.splitext(name)
        fd, self._path = tempfile.mkstemp(suffix=".upload" + ext, dir=settings.FILE_UPLOAD_TEMP_DIR)
        self._removed = False
        self._remove = weakref.finalize(self, _unlink, self._path)
        super().__init__(os.fdopen(fd, "w+b"), name, content_type, size, charset, content_type_extra)

    @property
    def file(self):
        if self._file.closed and not self._removed:
            self._file = open(self._path, "rb")
        return self._file

    @file.setter
    def file(self, value):
        self._file = value

    @property
    def closed(self) -> bool:
        return self._file.closed

    def temporary_file_path(self) -> str:
        return self._path

    def park(self) -> None:
        self._file.close()

    def open(self, mode=None, *args, **kwargs):
        self.file.seek(0)  # (re)opened read-only from the temporary file
        return self

    def close(self) -> None:
        self._file.close()
        self._removed = True
        self._remove()


def _unlink(path: str) -> None:
    Path(path).unlink(missing_ok=True)


def job_uploads_prefix(job) -> str:
    """The storage folder of a job's raw uploads."""
    return project_key(job.project, "uploads", str(job.pk))


def job_scratch_root() -> Path:
    return Path(settings.JOB_SCRATCH_DIR or Path(settings.MEDIA_ROOT) / ".scratch" / "jobs")


def job_scratch_dir(job_id: int, *, create: bool = False) -> Path:
    """The local folder where a worker keeps a job's raw files while it works on them."""
    path = job_scratch_root() / f"job-{job_id}"
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def storage_delete_tree(prefix: str) -> int:
    """Delete every object under ``prefix`` in default storage; returns how many."""
    try:
        dirs, files = default_storage.listdir(prefix)
    except (FileNotFoundError, NotADirectoryError):
        return 0
    removed = 0
    for name in files:
        default_storage.delete(f"{prefix}/{name}")
        removed += 1
    for name in dirs:
        removed += storage_delete_tree(f"{prefix}/{name}")
    try:  # local storage leaves the empty folder behind
        path = Path(default_storage.path(prefix))
    except NotImplementedError:
        return removed
    shutil.rmtree(path, ignore_errors=True)
    return removed


def job_files_remove(job) -> None:
    """Delete a job's raw uploads: its storage folder and its local scratch folder. Best effort: a
    failure is logged (the reaper's sweep tries again)."""
    try:
        storage_delete_tree(job_uploads_prefix(job))
    except Exception:
        log.exception("raw uploads of job %s could not be removed from storage", job.pk)
    shutil.rmtree(job_scratch_dir(job.pk), ignore_errors=True)
