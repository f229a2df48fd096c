"""Fixtures for storage tests: a real S3 server (moto) on loopback, and Django's default storage on it."""

import runpy
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from django.core.files.storage import default_storage
from django.utils.functional import empty

from tests.conftest import REPO

S3_ACCESS_KEY = "groundlab-test"
S3_SECRET_KEY = "groundlab-test-secret"
S3_REGION = "us-east-1"


@dataclass
class S3Storage:
    """What a test needs to look behind Django's storage: the bucket and a boto3 client on the server."""

    endpoint_url: str
    bucket: str
    client: Any  # boto3 S3 client

    def keys(self) -> list[str]:
        listing = self.client.list_objects_v2(Bucket=self.bucket)
        return sorted(obj["Key"] for obj in listing.get("Contents", []))

    def read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's S3 server in a thread on 127.0.0.1 (a free port); yields its endpoint URL."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:  # moto[server] is in requirements-dev.txt
        pytest.skip(f"moto[server] is not installed: {exc}")
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def _s3_storages_from_settings(monkeypatch, endpoint_url: str, bucket: str) -> dict:
    """``STORAGES`` exactly as config/settings/storage.py builds it for ``STORAGE_BACKEND=s3``."""
    env = {
        "STORAGE_BACKEND": "s3",
        "S3_BUCKET": bucket,
        "S3_ENDPOINT_URL": endpoint_url,
        "S3_ACCESS_KEY_ID": S3_ACCESS_KEY,
        "S3_SECRET_ACCESS_KEY": S3_SECRET_KEY,
        "S3_REGION": S3_REGION,
    }
    with monkeypatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        namespace = runpy.run_path(str(REPO / "config" / "settings" / "storage.py"))
    return namespace["STORAGES"]


@pytest.fixture
def s3_storage(settings, monkeypatch, s3_server) -> Iterator[S3Storage]:
    """Django's default storage on a fresh bucket of the moto S3 server, configured through the project's
    own settings code (``STORAGE_BACKEND=s3``). Restores the previous default storage afterwards."""
    bucket = f"groundlab-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3",
        endpoint_url=s3_server,
        aws_access_key_id=S3_ACCESS_KEY,
        aws_secret_access_key=S3_SECRET_KEY,
        region_name=S3_REGION,
    )
    client.create_bucket(Bucket=bucket)
    storages = _s3_storages_from_settings(monkeypatch, s3_server, bucket)
    assert storages["default"]["BACKEND"] == "storages.backends.s3.S3Storage"
    settings.STORAGES = storages
    default_storage._wrapped = empty  # the lazy default storage is built again from the new settings
    try:
        yield S3Storage(endpoint_url=s3_server, bucket=bucket, client=client)
    finally:
        default_storage._wrapped = empty
