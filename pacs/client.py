"""A ``dicomweb-client`` client for a source: its session (auth, TLS verification), timeouts and retries,
and the mapping of what goes wrong on the wire to an error a manager can act on.

No HTTP is written here: QIDO-RS, WADO-RS and STOW-RS are ``dicomweb_client.DICOMwebClient``'s; this module
only configures it (a ``requests`` session with basic or bearer auth, ``verify``, the client's timeout and
its retry of 429/502/503/504 with exponential backoff) and names failures.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus
from urllib.parse import urlsplit

import requests
import retrying
from dicomweb_client import DICOMwebClient
from django.conf import settings

from core.errors import ApplicationError
from pacs.crypto import credentials_decrypt

log = logging.getLogger(__name__)

RETRIED = (
    HTTPStatus.TOO_MANY_REQUESTS,
    HTTPStatus.BAD_GATEWAY,
    HTTPStatus.SERVICE_UNAVAILABLE,
    HTTPStatus.GATEWAY_TIMEOUT,
)
# Instances as the PACS stores them (no transcoding on its side): ingest decodes every transfer syntax.
ANY_TRANSFER_SYNTAX = (("application/dicom", "*"),)


class PacsError(ApplicationError):
    """The source failed or refused a request: 502 (its answer was wrong), 503 (unreachable or down), 504
    (too slow), or its own 4xx as a 400/404 the manager can act on. ``transient``: worth trying again."""

    status = 502

    def __init__(self, message: str, *, status: int = 502, transient: bool = False, http_status: int = 0):
        super().__init__(message, field="source", status=status)
        self.transient = transient
        self.http_status = http_status

    def __reduce__(self):
        return (_pacs_error, (self.message, self.status, self.transient, self.http_status))


def _pacs_error(message: str, status: int, transient: bool, http_status: int) -> PacsError:
    return PacsError(message, status=status, transient=transient, http_status=http_status)


def base_url_check(url: str) -> str:
    """``url`` if it is an http(s) URL with a host and no credentials in it; else a 400 on ``base_url``."""
    url = (url or "").strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ApplicationError("the base URL must start with http:// or https://", field="base_url")
    if not parts.hostname:
        raise ApplicationError("the base URL has no host", field="base_url")
    if parts.username or parts.password:
        raise ApplicationError(
            "put credentials in the auth fields, not in the URL (they would be stored in clear)",
            field="base_url",
        )
    if parts.query or parts.fragment:
        raise ApplicationError("the base URL takes no query or fragment", field="base_url")
    return url.rstrip("/")


class PartsClient(DICOMwebClient):
    """``DICOMwebClient`` whose ``iter_series_parts`` yields each retrieved instance as the bytes the PACS
    sent (a DICOM file), not parsed: the import writes them to disk as they are, so an instance is neither
    decoded into a pydicom dataset nor encoded again (that cost 2-3 times the transfer itself on loopback).

    It reuses the client's own request, retry, Accept-header and multipart decoding (``_http_get``,
    ``_build_multipart_accept_header_field_value``, ``_decode_multipart_message`` of dicomweb-client
    0.59-0.61, pinned in requirements-web.txt); ``tests/pacs`` run it against Orthanc."""

    _raw_parts = False

    def iter_series_parts(self, study_instance_uid: str, series_instance_uid: str) -> Iterator[bytes]:
        self._raw_parts = True
        try:
            yield from self.iter_series(
                study_instance_uid, series_instance_uid, media_types=ANY_TRANSFER_SYNTAX
            )
        finally:
            self._raw_parts = False

    def _http_get_multipart_application_dicom(self, url, media_types=None, params=None, stream=False):
        if not self._raw_parts:
            return super()._http_get_multipart_application_dicom(url, media_types, params, stream)
        accept = self._build_multipart_accept_header_field_value(
            media_types or ANY_TRANSFER_SYNTAX, {"1.2.840.10008.1.2.1": "application/dicom"}
        )
        response = self._http_get(url, params=params, headers={"Accept": accept}, stream=stream)
        if response.headers.get("Content-Type", "").startswith("application/dicom"):  # one part, not wrapped
            return iter([response.content])
        return self._decode_multipart_message(response, stream=stream)


def client_for(source, *, tries: int | None = None) -> PartsClient:
    """A client for ``source`` (a ``PacsSource``): a fresh session per client (one per thread)."""
    url = base_url_check(source.base_url)
    session = requests.Session()
    # The environment is read here, not by requests per request: with trust_env, a CA bundle named in
    # REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE silently overrides verify=False, and ~/.netrc would lend the
    # server's own credentials to whatever URL a manager entered.
    session.trust_env = False
    ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    session.verify = (ca_bundle or True) if source.verify_tls else False
    session.proxies = requests.utils.get_environ_proxies(url)  # HTTP(S)_PROXY, NO_PROXY
    creds = credentials_decrypt(source.credentials)
    if source.auth == "basic":
        session.auth = (creds.get("username", ""), creds.get("password", ""))
    elif source.auth == "bearer":
        session.headers["Authorization"] = f"Bearer {creds.get('token', '')}"
    timeout = settings.PACS_TIMEOUT_SECONDS
    client = PartsClient(url, session=session, timeout=(timeout, timeout))
    n = settings.PACS_REQUEST_TRIES if tries is None else tries
    client.set_http_retry_params(
        retry=n > 1,
        max_attempts=max(1, n),
        wait_exponential_multiplier=settings.PACS_RETRY_WAIT_MS,
        retriable_error_codes=RETRIED,
    )
    return client


def error_from(exc: BaseException, *, what: str) -> PacsError:
    """``exc`` (from requests or the client) as a ``PacsError`` saying what failed, never the credentials."""
    if isinstance(exc, PacsError):
        return exc
    if isinstance(exc, retrying.RetryError):  # dicomweb-client gave up retrying a 429/502/503/504
        attempt = exc.last_attempt
        if attempt.has_exception:
            inner = attempt.value[1]
        else:
            inner = requests.HTTPError(response=attempt.value)
        err = error_from(inner, what=what)
        err.message = f"{err.message} (after {attempt.attempt_number} tries)"
        err.transient = False  # the client's own tries are spent
        return err
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        code = exc.response.status_code
        reason = exc.response.reason or ""
        if code in (401, 403):
            return PacsError(
                f"{what}: the source refused the credentials (HTTP {code} {reason})".strip(),
                status=400,
                http_status=code,
            )
        if code == 404:
            return PacsError(
                f"{what}: not found on the source (HTTP 404; deleted since it was found?)",
                status=404,
                http_status=code,
            )
        if code >= 500 or code in [int(c) for c in RETRIED]:
            return PacsError(
                f"{what}: the source answered HTTP {code} {reason}".strip(),
                status=503 if code in (502, 503, 504) else 502,
                transient=True,
                http_status=code,
            )
        return PacsError(
            f"{what}: the source refused the request (HTTP {code} {reason})".strip(),
            status=400,
            http_status=code,
        )
    if isinstance(exc, requests.exceptions.SSLError):
        found = re.search(r"certificate verify failed: ([^(')]+)", str(exc))
        reason = f"certificate verify failed: {found.group(1).strip()}" if found else "handshake failed"
        return PacsError(f"{what}: TLS verification failed ({reason})", status=502)
    if isinstance(exc, requests.Timeout):
        return PacsError(
            f"{what}: the source did not answer within {settings.PACS_TIMEOUT_SECONDS} s",
            status=504,
            transient=True,
        )
    if isinstance(exc, requests.ConnectionError | requests.exceptions.ChunkedEncodingError):
        text = _first_line(exc)
        if "refused" in text.lower() or "Max retries" in text or "resolve" in text.lower():
            return PacsError(
                f"{what}: the source cannot be reached ({_short(text)})", status=503, transient=True
            )
        return PacsError(f"{what}: the connection broke off ({_short(text)})", status=502, transient=True)
    if isinstance(exc, requests.RequestException):
        return PacsError(
            f"{what}: {type(exc).__name__}: {_short(_first_line(exc))}", status=502, transient=True
        )
    if isinstance(exc, ValueError | KeyError | EOFError | OSError):
        # a malformed multipart body, a truncated part pydicom cannot read
        return PacsError(f"{what}: the source's answer was malformed ({type(exc).__name__})", transient=True)
    raise exc


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def _short(text: str) -> str:
    """A connection error's text without the pool's noise (and never more than 200 characters)."""
    for marker in ("Connection refused", "Read timed out", "Connection reset", "IncompleteRead",
                   "Connection broken", "Name or service not known", "Failed to resolve"):  # fmt: skip
        if marker.lower() in text.lower():
            return marker
    return text[:200]


@contextmanager
def pacs_call(what: str) -> Iterator[None]:
    """Run a block of client calls, turning what goes wrong into a ``PacsError`` about ``what``."""
    try:
        yield
    except ApplicationError:
        raise
    except Exception as exc:
        err = error_from(exc, what=what)
        log.warning("%s", err.message)
        raise err from exc
