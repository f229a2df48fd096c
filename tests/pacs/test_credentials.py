"""Credentials at rest and the rules of a source's URL, without a PACS: Fernet tokens under the configured
keys (rotation with MultiFernet), a key that is no Fernet key refuses to start, a URL must be http(s)
without credentials in it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from cryptography.fernet import Fernet

from config.settings.pacs import fernet_key_from_secret, fernet_key_problem
from core.errors import ApplicationError
from pacs.client import base_url_check
from pacs.crypto import credentials_decrypt, credentials_encrypt, credentials_rotate
from pacs.services import search_filters
from tests.conftest import REPO


def test_credentials_are_a_fernet_token_that_rotates_to_a_new_key(settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.PACS_CREDENTIALS_KEYS = [old]
    token = credentials_encrypt({"username": "pacs-user", "password": "s3cret-Pa55"})
    assert "s3cret" not in token and "pacs-user" not in token
    assert credentials_decrypt(token) == {"username": "pacs-user", "password": "s3cret-Pa55"}
    settings.PACS_CREDENTIALS_KEYS = [new, old]  # rotation: the new key first, the old one still read
    assert credentials_decrypt(token)["password"] == "s3cret-Pa55"
    rotated = credentials_rotate(token)
    settings.PACS_CREDENTIALS_KEYS = [new]
    assert credentials_decrypt(rotated)["password"] == "s3cret-Pa55"
    with pytest.raises(ApplicationError) as lost:
        credentials_decrypt(token)  # only the old key opens it, and it is gone
    assert lost.value.status == 503 and "enter them again" in lost.value.message
    assert credentials_encrypt({}) == "" and credentials_decrypt("") == {}


def test_keys_are_checked_and_the_default_is_derived_from_the_secret_key():
    assert fernet_key_problem(Fernet.generate_key().decode()) == ""
    assert "placeholder" in fernet_key_problem("change-me")
    assert "bytes" in fernet_key_problem("c2hvcnQ=")
    derived = fernet_key_from_secret("x" * 60)
    assert fernet_key_problem(derived) == "" and derived == fernet_key_from_secret("x" * 60)
    assert derived != fernet_key_from_secret("y" * 60)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PACS_CREDENTIALS_KEYS": "change-me"}
    out = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode != 0 and "PACS_CREDENTIALS_KEYS: a key contains the placeholder" in out.stderr


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("file:///etc/passwd", "http:// or https://"),
        ("gopher://pacs/", "http:// or https://"),
        ("https:///dicom-web", "no host"),
        ("https://user:pw@pacs.example.org/dicom-web", "not in the URL"),
        ("https://pacs.example.org/dicom-web?x=1", "no query"),
    ],
)
def test_a_source_url_is_http_or_https_with_a_host_and_no_credentials(url, why):
    with pytest.raises(ApplicationError) as refused:
        base_url_check(url)
    assert refused.value.field == "base_url" and why in refused.value.message
    assert base_url_check("https://pacs.example.org/dicom-web/") == "https://pacs.example.org/dicom-web"


def test_search_filters_are_qido_attributes_and_bad_values_are_named():
    assert search_filters(
        {"accession": "A1", "modality": "ct", "patient_name": "Doe", "study_date": "20070101-"}
    ) == {
        "AccessionNumber": "A1",
        "ModalitiesInStudy": "CT",
        "PatientName": "*Doe*",
        "StudyDate": "20070101-",
    }
    for key, value in (("study_date", "2007-04"), ("study_uid", "1.2.x"), ("accession", "a\\b")):
        with pytest.raises(ApplicationError) as bad:
            search_filters({key: value})
        assert bad.value.field == key
