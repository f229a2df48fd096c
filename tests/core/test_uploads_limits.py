"""Compressed uploads are inflated within what they declare, and request bodies are refused before they are
read: a 1024³ gzip NIfTI mask (1 MB) is a 400 naming ``mask`` without being inflated, PNG bombs are refused
from their IHDR, a zip member that lies about its size stops there, an anonymous upload makes no temporary
file and an oversized body (session, token or JSON) is a 413 before a byte of it is read.

Memory is measured with tracemalloc (numpy's arrays and Python's bytes are traced; the peak of what the
request allocated, in this process, which is the server here) and, for decoded pictures, by Pillow's own
block allocator (its image memory is not traced)."""

import io
import json
import os
import struct
import tracemalloc
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from django.middleware.csrf import _get_new_csrf_string
from django.test import Client
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart
from django.urls import reverse
from knox.models import AuthToken
from PIL import Image

from annotation.models import Finding
from bench.bench_gzip_bomb import bomb as nifti_gz_bomb  # the bomb the benchmark sends
from core.models import Job
from core.uploads import LargeChunkUploadHandler
from studies.ingest.files import zip_check, zip_extract
from studies.ingest.images import nifti_load
from studies.ingest.types import IngestError
from studies.models import GazeRecording
from tests.annotation.factories import radiograph_case
from tests.annotation.test_review import case  # noqa: F401 - fixture

pytestmark = pytest.mark.django_db
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> tuple[Path, int]:
    path = tmp_path_factory.mktemp("bomb") / "mask.nii.gz"
    return path, nifti_gz_bomb(path, 1024)


def _png(width: int, height: int, *, rows: bool = True) -> bytes:
    """A 1-bit grayscale PNG of zeros declaring ``width`` x ``height``; without ``rows`` its IDAT holds
    one row only (enough for a reader that trusts the IHDR)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = bytes(1 + (width + 7) // 8)
    deflate = zlib.compressobj(9)
    idat = b"".join(deflate.compress(row) for _ in range(height if rows else 1)) + deflate.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _pillow_bytes() -> int:
    """Bytes of image memory Pillow has handed out so far (its 16 MiB blocks, new or reused)."""
    stats = Image.core.get_stats()
    return (stats["allocated_blocks"] + stats["reused_blocks"]) * Image.core.get_block_size()


@contextmanager
def traced_peak():
    """``box["peak"]``: the most bytes allocated at once inside the block (numpy and Python objects);
    ``box["pillow"]``: image memory Pillow handed out inside it."""
    box: dict[str, int] = {}
    pillow = _pillow_bytes()
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        yield box
    finally:
        box["peak"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        box["pillow"] = _pillow_bytes() - pillow


def _open_task(client, project) -> tuple[int, int]:
    opened = client.get(reverse("next-task", args=[project.slug]), {"stage": "annotate"})
    assert opened.status_code == 200, opened.content
    body = opened.json()
    return body["task"]["id"], body["finding"]["current_version"]


def _save_mask(client, task_id: int, version: int, upload) -> object:
    return client.post(
        reverse("task-annotations", args=[task_id]),
        {"base_version": version, "kind": "mask", "mask": upload},
        format="multipart",
    )


@pytest.mark.slow
def test_a_1024_cubed_gzip_mask_is_400_naming_the_field_before_it_is_inflated(
    project,
    case,  # noqa: F811
    annotator,
    api_client,
    bomb,
):
    path, inflated = bomb
    assert path.stat().st_size < 1.5 * MiB and inflated > 1000 * MiB
    client = api_client(annotator)
    task_id, version = _open_task(client, project)
    with open(path, "rb") as fh, traced_peak() as memory:
        response = _save_mask(client, task_id, version, fh)
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["field"] == "mask" and "mask.nii.gz" in body["mask"]
    assert "[1024, 1024, 1024]" in body["mask"] and str(list(case.shape)) in body["mask"]
    # the server held the upload and its header, never the inflated gigabyte
    assert memory["peak"] < 32 * MiB, (
        f"peak {memory['peak'] / MiB:.0f} MiB for a {inflated / MiB:.0f} MiB bomb"
    )


def test_a_mask_that_declares_the_grid_but_inflates_past_it_stops_there(
    project,
    case,  # noqa: F811
    annotator,
    api_client,
):
    voxels = np.zeros(tuple(case.shape), np.uint8)
    voxels[4:12, 4:12, 1:4] = 1
    image = nib.Nifti1Image(voxels, np.asarray(case.affine))
    lying = zlib.compressobj(6, zlib.DEFLATED, 31)
    data = lying.compress(image.to_bytes()) + lying.compress(bytes(64 * MiB)) + lying.flush()
    upload = io.BytesIO(data)
    upload.name = "lying.nii.gz"
    client = api_client(annotator)
    task_id, version = _open_task(client, project)
    with traced_peak() as memory:
        response = _save_mask(client, task_id, version, upload)
    assert response.status_code == 400 and "inflates past" in response.json()["mask"]
    assert memory["peak"] < 16 * MiB
    # a mask that is what it says is still saved
    good = io.BytesIO(_gz(image.to_bytes()))
    good.name = "good.nii.gz"
    saved = _save_mask(client, task_id, version, good)
    assert saved.status_code == 201, saved.content


def _gz(data: bytes) -> bytes:
    deflate = zlib.compressobj(6, zlib.DEFLATED, 31)
    return deflate.compress(data) + deflate.flush()


@pytest.mark.parametrize(
    ("size", "rows"),
    [((100_000, 100_000), False), ((9000, 9000), True)],
    ids=["over-pillow-limit", "under-pillow-limit"],
)
def test_a_png_bomb_mask_is_400_from_its_ihdr(project, tmp_path, annotator, api_client, size, rows):
    scan = radiograph_case(project, tmp_path, gaze=False)
    assert Finding.objects.filter(scan=scan).exists()
    upload = io.BytesIO(_png(*size, rows=rows))
    upload.name = "bomb.png"
    client = api_client(annotator)
    task_id, version = _open_task(client, project)
    with traced_peak() as memory:
        response = _save_mask(client, task_id, version, upload)
    assert response.status_code == 400, response.content
    assert response.json()["field"] == "mask" and f"{size[0]}x{size[1]}" in response.json()["mask"]
    assert memory["peak"] < 16 * MiB and memory["pillow"] == 0  # 9000 x 9000 decoded: 81 MB at least


def test_an_anatomy_mask_png_bomb_is_refused_from_its_ihdr(project, tmp_path, annotator, api_client):
    radiograph_case(project, tmp_path)
    recording = GazeRecording.objects.get(project=project)
    upload = io.BytesIO(_png(9000, 9000))
    upload.name = "lungs.png"
    with traced_peak() as memory:
        response = api_client(annotator).post(
            reverse("anatomy-mask-upload", args=[recording.pk]),
            {"name": "left_lung", "file": upload},
            format="multipart",
        )
    assert response.status_code == 400 and "9000x9000" in response.json()["file"]
    assert memory["peak"] < 16 * MiB and memory["pillow"] == 0, memory


@pytest.mark.slow
def test_a_gzip_nifti_scan_bomb_is_refused_from_its_header(bomb):
    path, inflated = bomb
    with traced_peak() as memory, pytest.raises(IngestError) as err:
        nifti_load(path)
    assert err.value.field == "dim" and "gzip bomb" in err.value.reason
    assert memory["peak"] < 8 * MiB


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)  # the ingest job runs after the upload commits
def test_a_gzip_bomb_uploaded_as_a_scan_is_refused_by_its_job(project, manager, api_client, bomb, settings):
    path, _ = bomb
    with open(path, "rb") as fh, traced_peak() as memory:
        response = api_client(manager).post(
            reverse("upload-create", args=[project.slug]), {"files": [fh]}, format="multipart"
        )
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert job.counts["scans_stored"] == 0 and job.counts["scans_errors"] == 1
    error = job.result["scans"]["errors"][0]
    assert error["file"].endswith("mask.nii.gz") and "gzip bomb" in error["reason"]
    assert settings.MEDIA_ROOT not in json.dumps(job.result)  # names as uploaded, no server path
    assert memory["peak"] < 32 * MiB


def _lying_zip(member: str, actual: int, declared: int) -> bytes:
    """A zip whose member inflates to ``actual`` bytes while its headers declare ``declared``."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(member, bytes(actual))
    data = bytearray(out.getvalue())
    local = data.find(b"PK\x03\x04")
    central = data.find(b"PK\x01\x02")
    struct.pack_into("<I", data, local + 22, declared)
    struct.pack_into("<I", data, central + 24, declared)
    return bytes(data)


def test_a_zip_member_that_lies_about_its_size_stops_there(tmp_path):
    archive = tmp_path / "scans.zip"
    archive.write_bytes(_lying_zip("series/1.dcm", actual=64 * MiB, declared=1000))
    assert [m.file_size for m in zip_check(archive)] == [1000]  # passes the declared-size checks
    dest = tmp_path / "out"
    with pytest.raises(IngestError) as err:
        zip_extract(archive, dest)
    assert err.value.field == "member" and "series/1.dcm" in err.value.reason
    assert "1000 bytes" in err.value.reason
    assert not [p for p in dest.rglob("*") if p.is_file()]  # nothing of it left behind


class _Body:
    """A request body as the server reads it: how many bytes were read and, at every read, which
    temporary upload files existed."""

    def __init__(self, data: bytes, temp_dir: Path):
        self._data = io.BytesIO(data)
        self._temp_dir = temp_dir
        self.read_bytes = 0
        self.temp_files: set[str] = set()

    def _read(self, method, size):
        self.temp_files.update(os.listdir(self._temp_dir))
        chunk = method(-1 if size is None else size)
        self.read_bytes += len(chunk)
        return chunk

    def read(self, size=-1):
        return self._read(self._data.read, size)

    def readline(self, size=-1):
        return self._read(self._data.readline, size)


def _post_raw(client, path: str, data: bytes, content_type: str, temp_dir: Path, **headers):
    body = _Body(data, temp_dir)
    response = client.request(
        REQUEST_METHOD="POST",
        PATH_INFO=path,
        CONTENT_TYPE=content_type,
        CONTENT_LENGTH=str(len(data)),
        **{"wsgi.input": body},
        **headers,
    )
    return response, body


def _upload_body(size: int = 8 * MiB) -> bytes:
    upload = io.BytesIO(os.urandom(size))
    upload.name = "scan.dcm"
    return encode_multipart(BOUNDARY, {"name": "left_lung", "files": [upload]})


@pytest.fixture
def temp_dir(settings, tmp_path) -> Path:
    folder = tmp_path / "upload-tmp"
    folder.mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(folder)
    return folder


@pytest.mark.parametrize("target", ["upload-create", "admin:login"])
def test_an_anonymous_upload_writes_no_temporary_file(project, temp_dir, target):
    path = reverse(target, args=[project.slug]) if target == "upload-create" else reverse(target)
    client, headers = _browser()  # a CSRF cookie, as anyone gets from the sign-in page
    response, body = _post_raw(client, path, _upload_body(), MULTIPART_CONTENT, temp_dir, **headers)
    assert response.status_code in (401, 403)
    assert body.temp_files == set() and os.listdir(temp_dir) == []
    # stopped at the file's part header at the latest: within the parser's first chunk of the 8 MiB
    assert body.read_bytes <= LargeChunkUploadHandler.chunk_size


def _browser(user=None) -> tuple[Client, dict]:
    """A browser with a CSRF cookie and the header the review screen sends; signed in as ``user``."""
    client = Client(enforce_csrf_checks=True)
    if user is not None:
        client.force_login(user)
    token = _get_new_csrf_string()
    client.cookies["csrftoken"] = token
    return client, {"HTTP_X_CSRFTOKEN": token}


@pytest.mark.parametrize(
    "target",
    [
        ("upload-create", "slug", "UPLOAD_MAX_BYTES"),
        ("task-annotations", 1, "MASK_UPLOAD_MAX_BYTES"),
        ("reading-annotations", 1, "MASK_UPLOAD_MAX_BYTES"),
        ("anatomy-mask-upload", 1, "MASK_UPLOAD_MAX_BYTES"),
        ("project-models", "slug", "UPLOAD_MAX_BYTES"),
    ],
    ids=lambda t: t[0],
)
def test_an_oversized_session_post_is_413_before_the_body_is_read(
    project, manager, settings, temp_dir, target
):
    name, arg, limit = target
    setattr(settings, limit, MiB)
    path = reverse(name, args=[project.slug if arg == "slug" else arg])
    client, headers = _browser(manager)
    response, body = _post_raw(client, path, _upload_body(), MULTIPART_CONTENT, temp_dir, **headers)
    assert response.status_code == 413, response.content
    assert response.json()["field"] == "body" and limit in response.json()["detail"]
    assert body.read_bytes == 0 and body.temp_files == set()


def test_an_oversized_token_post_and_json_body_are_413_before_they_are_read(
    project, manager, settings, temp_dir
):
    settings.UPLOAD_MAX_BYTES = settings.MASK_UPLOAD_MAX_BYTES = MiB
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = MiB
    _, token = AuthToken.objects.create(manager)
    client = Client()
    auth = {"HTTP_AUTHORIZATION": f"Token {token}"}
    path = reverse("task-annotations", args=[1])
    response, body = _post_raw(client, path, _upload_body(), MULTIPART_CONTENT, temp_dir, **auth)
    assert response.status_code == 413 and body.read_bytes == 0
    data = b'{"base_version": 0, "kind": "points", "points": [' + b"[1, 2]," * (MiB // 4) + b"[1, 2]]}"
    response, body = _post_raw(client, path, data, "application/json", temp_dir, **auth)
    assert response.status_code == 413 and body.read_bytes == 0
    assert "DATA_UPLOAD_MAX_MEMORY_SIZE" in response.json()["detail"]


def test_a_session_upload_within_the_limit_still_works(project, manager, settings, temp_dir):
    from pydicom.data import get_testdata_file

    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    upload = io.BytesIO(data)
    upload.name = "ct.dcm"
    client, headers = _browser(manager)
    response, body = _post_raw(
        client,
        reverse("upload-create", args=[project.slug]),
        encode_multipart(BOUNDARY, {"files": [upload]}),
        MULTIPART_CONTENT,
        temp_dir,
        **headers,
    )
    assert response.status_code == 202, response.content
    assert body.read_bytes > len(data)
