"""A chat-completions client for any OpenAI-compatible endpoint, with the platform's own retry policy.

The ``openai`` client runs with ``max_retries=0``; this module retries: 429 (honouring Retry-After, seconds
or HTTP date), 5xx, timeouts and connection errors with capped exponential backoff and jitter; a reply that
is not valid JSON for the schema is asked again, then ``LLMInvalidReply`` carries the raw reply.
"""

import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import openai

try:  # the HTTP library under the openai client: httpx2 from openai 3, httpx before
    import httpx2 as _httpx
except ImportError:  # pragma: no cover
    import httpx as _httpx

log = logging.getLogger(__name__)


class LLMError(Exception):
    """A request that did not give a usable reply; ``raw_reply`` is the last reply text (may be empty)."""

    def __init__(self, message: str, *, raw_reply: str = "", attempts: int = 0):
        super().__init__(message)
        self.raw_reply = raw_reply
        self.attempts = attempts


class LLMUnavailable(LLMError):
    """The endpoint could not be reached, kept failing (429/5xx/timeouts) or refused the request."""


class LLMInvalidReply(LLMError):
    """Every reply was malformed JSON or did not match the schema."""


@dataclass
class ChatReply:
    content: str
    parsed: Any
    tokens_in: int = 0
    tokens_out: int = 0
    model: str = ""
    attempts: int = 1
    waited_s: float = 0.0
    response_format: str = "json_schema"
    notes: list[str] = field(default_factory=list)


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None if absent/unusable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class LLMClient:
    """One endpoint and model; thread-safe (one instance serves all of a run's concurrent requests).
    ``endpoint``: its configured name (labeling/llm/endpoints.py), which errors name instead of the URL."""

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str = "none",
        endpoint: str = "",
        timeout: float = 60.0,
        max_retries: int = 4,
        invalid_retries: int | None = None,
        temperature: float = 0.0,
        seed: int | None = 0,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        retry_after_cap: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if not model:
            raise ValueError("llm: no model set (LLM_MODEL or params['model'])")
        self.base_url = base_url
        # what errors name: the endpoint's name when it has one (the URL then goes to the log only)
        self.where = f"endpoint {endpoint!r}" if endpoint else base_url
        self.model = model
        self.timeout = timeout
        self.max_retries = max_retries
        self.invalid_retries = max_retries if invalid_retries is None else invalid_retries
        self.temperature = temperature
        self.seed = seed
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.retry_after_cap = retry_after_cap
        self.sleep = sleep
        self._json_schema_ok = True  # False once the server rejected response_format json_schema
        self._lock = threading.Lock()
        self._openai = openai.OpenAI(
            base_url=base_url, api_key=api_key or "none", timeout=timeout, max_retries=0
        )

    def close(self) -> None:
        self._openai.close()

    def backoff(self, attempt: int) -> float:
        """Full-jitter exponential backoff for retry number ``attempt`` (1, 2, ...), capped."""
        ceiling = min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)

    def complete_json(
        self,
        messages: list[dict],
        *,
        response_format: dict,
        parse: Callable[[str], Any],
    ) -> ChatReply:
        """The parsed reply to ``messages``. ``parse(content)`` validates it (raises ValueError if invalid).

        Transport failures and invalid replies have separate budgets (``max_retries`` and
        ``invalid_retries`` retries after the first attempt).
        """
        transport_failures = invalid = attempts = 0
        waited = 0.0
        last_raw = ""
        tokens_in = tokens_out = 0
        notes: list[str] = []
        while True:
            attempts += 1
            use_schema = self._json_schema_ok
            fmt = response_format if use_schema else {"type": "json_object"}
            try:
                # The client's low-level POST: auth, timeout and error mapping (openai.RateLimitError, ...)
                # without building typed request/response objects (the body is read as it is).
                response = self._openai.post(
                    "/chat/completions",
                    cast_to=_httpx.Response,
                    body={
                        "model": self.model,
                        "messages": messages,
                        "temperature": self.temperature,
                        "seed": self.seed,
                        "response_format": fmt,
                    },
                )
            except openai.BadRequestError as exc:
                if use_schema and _rejects_json_schema(exc):
                    with self._lock:
                        self._json_schema_ok = False
                    notes.append("endpoint rejected response_format json_schema; using json_object")
                    log.warning(
                        "llm %s: json_schema rejected (%s); falling back to json_object", self.model, exc
                    )
                    continue
                raise LLMUnavailable(
                    f"endpoint refused the request: HTTP 400: {_body_text(exc)}",
                    raw_reply=last_raw,
                    attempts=attempts,
                ) from exc
            except openai.RateLimitError as exc:
                transport_failures += 1
                reason = "HTTP 429 rate limited"
                header = exc.response.headers.get("retry-after") if exc.response is not None else None
                wait = retry_after_seconds(header)
                if wait is None:
                    ms = exc.response.headers.get("retry-after-ms") if exc.response is not None else None
                    wait = float(ms) / 1000 if ms and ms.replace(".", "", 1).isdigit() else None
                wait = self.backoff(transport_failures) if wait is None else min(wait, self.retry_after_cap)
            except openai.APIStatusError as exc:
                if exc.status_code < 500 and exc.status_code not in (408, 409):
                    raise LLMUnavailable(
                        f"endpoint refused the request: HTTP {exc.status_code}: {_body_text(exc)}",
                        raw_reply=last_raw,
                        attempts=attempts,
                    ) from exc
                transport_failures += 1
                reason = f"HTTP {exc.status_code} from the endpoint"
                wait = self.backoff(transport_failures)
            except openai.APITimeoutError:
                transport_failures += 1
                reason = f"no reply within the {self.timeout:g} s timeout"
                wait = self.backoff(transport_failures)
            except openai.APIConnectionError as exc:
                transport_failures += 1
                cause = exc.__cause__ or exc
                reason = f"cannot connect to {self.where}: {type(cause).__name__}: {cause}"
                if self.where != self.base_url:
                    log.warning("llm %s: cannot connect to %s: %s", self.where, self.base_url, cause)
                wait = self.backoff(transport_failures)
            else:
                content, used_in, used_out = _content_and_usage(response)
                tokens_in += used_in
                tokens_out += used_out
                last_raw = content
                try:
                    parsed = parse(content)
                except ValueError as exc:
                    invalid += 1
                    if invalid > self.invalid_retries:
                        raise LLMInvalidReply(
                            f"invalid reply after {invalid} attempts: {exc}",
                            raw_reply=content,
                            attempts=attempts,
                        ) from None
                    log.info("llm %s: invalid reply (%s); asking again", self.model, exc)
                    continue
                return ChatReply(
                    content=content,
                    parsed=parsed,
                    tokens_in=tokens_in,
                    tokens_out=tokens_out,
                    model=self.model,
                    attempts=attempts,
                    waited_s=waited,
                    response_format=fmt["type"],
                    notes=notes,
                )
            if transport_failures > self.max_retries:
                raise LLMUnavailable(
                    f"{reason} (gave up after {attempts} attempts)", raw_reply=last_raw, attempts=attempts
                )
            log.info("llm %s: %s; retry %d in %.2f s", self.model, reason, transport_failures, wait)
            self.sleep(wait)
            waited += wait


def _content_and_usage(http_response) -> tuple[str, int, int]:
    """The message content and token usage of a chat-completions body; the body itself when it is not one
    (so that an invalid body is retried as an invalid reply, and kept)."""
    try:
        body = http_response.json()
        message = body["choices"][0]["message"]
        content = message.get("content") or ""
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return http_response.text, 0, 0
    usage = body.get("usage") or {}
    try:
        return content, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    except (TypeError, ValueError, AttributeError):
        return content, 0, 0


def _body_text(exc: openai.APIStatusError) -> str:
    try:
        text = exc.response.text
    except Exception:  # noqa: BLE001 - best effort
        text = str(exc)
    return (text or str(exc))[:300]


def _rejects_json_schema(exc: openai.BadRequestError) -> bool:
    text = _body_text(exc).lower()
    return "json_schema" in text or "response_format" in text
