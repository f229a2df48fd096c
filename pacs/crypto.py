"""PACS credentials at rest: Fernet tokens (AES-128-CBC + HMAC-SHA256, ``cryptography``) under
``settings.PACS_CREDENTIALS_KEYS``; a ``MultiFernet`` so that keys rotate (the first encrypts, any decrypts).

Credentials are a small JSON object (``{"username", "password"}`` or ``{"token"}``); they are decrypted only
to build a client's session, never returned by the API nor written to a log or a job row."""

from __future__ import annotations

import json

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

from core.errors import ApplicationError


def _fernet() -> MultiFernet:
    return MultiFernet([Fernet(key.encode("ascii")) for key in settings.PACS_CREDENTIALS_KEYS])


def credentials_encrypt(values: dict[str, str]) -> str:
    """``values`` as a Fernet token ("" for no credentials)."""
    if not values:
        return ""
    return _fernet().encrypt(json.dumps(values, sort_keys=True).encode("utf-8")).decode("ascii")


def credentials_decrypt(token: str) -> dict[str, str]:
    """The credentials of ``token`` ({} for ""). A token no configured key opens (the key was changed
    without keeping the old one in ``PACS_CREDENTIALS_KEYS``) is a 503 that says so."""
    if not token:
        return {}
    try:
        return json.loads(_fernet().decrypt(token.encode("ascii")))
    except InvalidToken as exc:
        raise ApplicationError(
            "the source's credentials cannot be decrypted with PACS_CREDENTIALS_KEYS (was the key changed "
            "without keeping the old one?); enter them again",
            field="credentials",
            status=503,
        ) from exc


def credentials_rotate(token: str) -> str:
    """``token`` encrypted again under the first key (after a rotation)."""
    return _fernet().rotate(token.encode("ascii")).decode("ascii") if token else ""
