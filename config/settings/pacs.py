"""PACS connections over DICOMweb (the ``pacs`` app): the keys that encrypt their credentials, timeouts,
retries and how much one import holds at a time.

``PACS_CREDENTIALS_KEYS``: Fernet keys (comma-separated; the first encrypts, every one decrypts, so a key
is rotated by putting the new one first). Unset, the one key is derived from ``SECRET_KEY`` (HKDF-SHA256,
``cryptography``), which every machine shares already and which a production setup must set to a real
value (``security.py`` refuses to start otherwise): so PACS credentials are never encrypted under a
placeholder. A value that is not a Fernet key (or holds a placeholder word) refuses to start.
"""

import base64
import binascii

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.core.exceptions import ImproperlyConfigured

from config.settings.env import env_int, env_list
from config.settings.security import SECRET_KEY, SECRET_KEY_PLACEHOLDERS


def fernet_key_problem(key: str) -> str:
    """Why ``key`` is no Fernet key ("" when it is one: 32 bytes, url-safe base64), without showing it."""
    lowered = key.lower()
    for word in SECRET_KEY_PLACEHOLDERS:
        if word in lowered:
            return f"contains the placeholder {word!r}"
    try:
        raw = base64.urlsafe_b64decode(key.encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return "is not url-safe base64"
    if len(raw) != 32:
        return f"decodes to {len(raw)} bytes, not 32"
    return ""


def fernet_key_from_secret(secret: str) -> str:
    """A Fernet key derived from ``secret`` for PACS credentials only (HKDF-SHA256 with its own info)."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"groundlab pacs credentials v1")
    return base64.urlsafe_b64encode(hkdf.derive(secret.encode("utf-8"))).decode("ascii")


PACS_CREDENTIALS_KEYS = env_list("PACS_CREDENTIALS_KEYS", [])
for _key in PACS_CREDENTIALS_KEYS:
    if _problem := fernet_key_problem(_key):
        raise ImproperlyConfigured(
            f'PACS_CREDENTIALS_KEYS: a key {_problem}. Make one with: python -c "from cryptography.fernet '
            f'import Fernet; print(Fernet.generate_key().decode())"'
        )
if not PACS_CREDENTIALS_KEYS:
    PACS_CREDENTIALS_KEYS = [fernet_key_from_secret(SECRET_KEY)]

# Seconds to connect to a PACS and to wait for each read from it (a PACS slower than this fails the request).
PACS_TIMEOUT_SECONDS = env_int("PACS_TIMEOUT_SECONDS", 30)
# Tries of one request that failed with a connection error or 429/502/503/504 (exponential backoff).
PACS_REQUEST_TRIES = env_int("PACS_REQUEST_TRIES", 3)
# Series retrieved at the same time by one import (WADO-RS, one connection each).
PACS_RETRIEVE_WORKERS = env_int("PACS_RETRIEVE_WORKERS", 4)
# Instances retrieved into the import's scratch folder before they are ingested and removed: disk and
# memory of an import stay bounded whatever the number of studies.
PACS_BATCH_INSTANCES = env_int("PACS_BATCH_INSTANCES", 1000)
# Store-back (accepted masks sent as DICOM SEG): tries before a send is left failed for a manager to retry.
PACS_STORE_BACK_TRIES = env_int("PACS_STORE_BACK_TRIES", 5)
# First wait before a retried request, in milliseconds (doubled at each further try).
PACS_RETRY_WAIT_MS = env_int("PACS_RETRY_WAIT_MS", 500)
