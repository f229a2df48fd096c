"""PACS connections over DICOMweb (the ``pacs`` app): the key that encrypts their credentials, timeouts,
retries and how much one import holds at a time.

``PACS_CREDENTIALS_KEYS``: Fernet keys (comma-separated; the first encrypts, every one decrypts, so a key
is rotated by putting the new one first). Embedded default: one random key made once into
``var/pacs_credentials_key`` (mode 0600). A full setup (``CELERY_BROKER_URL`` set, workers on other
machines that must decrypt what the web tier encrypted) with DEBUG off refuses to start without it, and any
setup refuses a placeholder or a value that is not a Fernet key.
"""

import base64
import binascii
import hashlib

from django.core.exceptions import ImproperlyConfigured

from config.settings.env import BASE_DIR, env_bool, env_int, env_list, env_str
from config.settings.security import SECRET_KEY_PLACEHOLDERS, secret_key_from_file

PACS_CREDENTIALS_KEY_FILE = BASE_DIR / "var" / "pacs_credentials_key"


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


def _embedded_key() -> str:
    """The embedded default's key: SHA-256 of a random value made once into ``PACS_CREDENTIALS_KEY_FILE``."""
    made = secret_key_from_file(PACS_CREDENTIALS_KEY_FILE)
    return base64.urlsafe_b64encode(hashlib.sha256(made.encode("ascii")).digest()).decode("ascii")


PACS_CREDENTIALS_KEYS = env_list("PACS_CREDENTIALS_KEYS", [])
for _key in PACS_CREDENTIALS_KEYS:
    if _problem := fernet_key_problem(_key):
        raise ImproperlyConfigured(
            f"PACS_CREDENTIALS_KEYS: a key {_problem}. Make one with: python -c \"from cryptography.fernet "
            f'import Fernet; print(Fernet.generate_key().decode())"'
        )
if not PACS_CREDENTIALS_KEYS:
    if env_str("CELERY_BROKER_URL") and not env_bool("DEBUG", False):
        raise ImproperlyConfigured(
            "PACS_CREDENTIALS_KEYS is not set: a full setup (CELERY_BROKER_URL) refuses to start without the "
            "key that encrypts PACS credentials, the same on every machine. Make one with: python -c "
            '"from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
        )
    PACS_CREDENTIALS_KEYS = [_embedded_key()]

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
