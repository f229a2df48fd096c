"""core.storage against a real S3 server (moto on loopback) through django-storages, configured with the
project's own ``STORAGE_BACKEND=s3`` settings."""

import hashlib
import os
import tempfile

from django.core.files.storage import default_storage
from storages.backends.s3 import S3Storage as DjangoS3Storage

from core.storage import (
    sha256_file,
    storage_delete_all,
    storage_local_copy,
    storage_save_bytes,
    storage_save_path,
)


def test_default_storage_is_the_s3_bucket(s3_storage, settings):
    storage_save_bytes("projects/alpha/probe.txt", b"probe")
    assert isinstance(default_storage._wrapped, DjangoS3Storage)
    assert default_storage.bucket_name == s3_storage.bucket
    assert s3_storage.keys() == ["projects/alpha/probe.txt"]
    assert not os.path.exists(settings.MEDIA_ROOT) or not any(os.scandir(settings.MEDIA_ROOT))


def test_save_bytes_stores_an_object_that_round_trips(s3_storage):
    data = os.urandom(4096)
    key = storage_save_bytes("projects/alpha/scans/1/volume.nii.gz", data)
    assert key == "projects/alpha/scans/1/volume.nii.gz"
    assert s3_storage.read(key) == data
    assert default_storage.exists(key)
    assert default_storage.size(key) == len(data)
    with default_storage.open(key, "rb") as fh:
        assert fh.read() == data


def test_saving_the_same_key_twice_keeps_both_objects(s3_storage):
    first = storage_save_bytes("projects/alpha/reports/r.csv", b"one")
    second = storage_save_bytes("projects/alpha/reports/r.csv", b"two")
    assert first != second  # file_overwrite=False: a new name, never a silent overwrite
    assert s3_storage.read(first) == b"one" and s3_storage.read(second) == b"two"


def test_save_path_uploads_a_large_file_in_parts(s3_storage, tmp_path):
    local = tmp_path / "big.bin"
    local.write_bytes(os.urandom(9 * 1024 * 1024 + 17))  # above boto3's 8 MiB multipart threshold
    key = storage_save_path("projects/alpha/scans/2/big.bin", local)
    assert key in s3_storage.keys()
    assert hashlib.sha256(s3_storage.read(key)).hexdigest() == sha256_file(local)


def test_local_copy_is_a_temporary_file_with_the_content(s3_storage):
    data = b"\x00\x01nifti-bytes" * 1000
    key = storage_save_bytes("projects/alpha/scans/3/volume.nii.gz", data)
    with storage_local_copy(key) as path:
        assert path.is_file()
        assert path.read_bytes() == data
        assert path.name == "volume.nii.gz"  # readers that go by extension work on it
        assert path.is_relative_to(tempfile.gettempdir())
    assert not path.exists()  # removed when the block ends


def test_delete_all_removes_the_listed_objects_only(s3_storage):
    keep = storage_save_bytes("projects/alpha/keep.bin", b"keep")
    gone = [storage_save_bytes(f"projects/alpha/unit/{i}.bin", bytes([i])) for i in range(3)]
    storage_delete_all([*gone, "", "projects/alpha/never-stored.bin"])
    assert s3_storage.keys() == [keep]
    assert not any(default_storage.exists(key) for key in gone)
