"""The ``llm`` labeler: a versioned prompt per label schema, structured output validated with pydantic, the
reply cached by (model, prompt version, schema, input), spans located by the platform in the report text."""

import hashlib
import json
import logging
import re
import threading
import time
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from labeling.labelers import LabelResult
from labeling.llm.client import LLMClient, LLMError
from labeling.llm.endpoints import (
    DEFAULT,
    Endpoint,
    endpoint_get,
    endpoint_model,
    llm_params_check,
    setting,
)
from labeling.llm.schemas import EXTRA_FIELDS, ReplyInvalid, parse_reply, response_format
from labeling.types import CHEXPERT_OBSERVATIONS, SCHEMAS, ProposedFinding

log = logging.getLogger(__name__)

LLM_LABELER_VERSION = "llm-1.0"
PROMPTS = Path(__file__).resolve().parent.parent / "prompts"
_PROMPT_NAME = re.compile(r"^(?P<schema>[a-z0-9]+)_v(?P<n>\d+)\.md$")
CODES = {
    "chexpert": CHEXPERT_OBSERVATIONS,
    "rexgroundingct": ("1a", "1b", "1c", "1d", "1e", "1f", "2a", "2b", "2c", "2d", "2e", "2f", "2g", "2h"),
    "petct": ("suv",),
}


# -- prompts ------------------------------------------------------------------------------------------


def prompt_versions() -> dict[str, list[int]]:
    """Versions available per schema, ascending."""
    found: dict[str, list[int]] = {}
    for path in PROMPTS.glob("*.md"):
        m = _PROMPT_NAME.match(path.name)
        if m:
            found.setdefault(m["schema"], []).append(int(m["n"]))
    return {schema: sorted(ns) for schema, ns in found.items()}


def latest_prompt_version() -> str:
    """The highest ``vN`` that exists for every schema."""
    versions = prompt_versions()
    common = set.intersection(*(set(versions.get(s, [])) for s in SCHEMAS))
    if not common:
        raise RuntimeError(f"no prompt version exists for all of {', '.join(SCHEMAS)} in {PROMPTS}")
    return f"v{max(common)}"


@cache
def load_prompt(schema: str, version: str) -> tuple[str, str]:
    """(system, user template) of ``labeling/prompts/<schema>_<version>.md``."""
    path = PROMPTS / f"{schema}_{version}.md"
    if not path.is_file():
        raise ValueError(f"llm: no prompt template {path.name} in {PROMPTS}")
    text = re.sub(r"<!--.*?-->", "", path.read_text(encoding="utf-8"), flags=re.S)
    parts = re.split(r"^## (system|user)\s*$", text, flags=re.M)
    blocks = {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}
    if "user" not in blocks or "{{report}}" not in blocks["user"]:
        raise ValueError(f"llm: prompt {path.name} needs a '## user' part with {{{{report}}}}")
    return blocks.get("system", ""), blocks["user"]


def render_report(sections: dict[str, str]) -> str:
    return "\n\n".join(f"{name.upper()}:\n{text.strip()}" for name, text in sections.items())


def render_messages(sections: dict[str, str], *, schema: str, version: str) -> list[dict]:
    system, user = load_prompt(schema, version)
    user = (
        user.replace("{{codes}}", ", ".join(CODES[schema]))
        .replace("{{sections}}", ", ".join(sections))
        .replace("{{report}}", render_report(sections))
    )
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": user}]


# -- locating the model's sentence in the report --------------------------------------------------------

_LOOSE = {"'": "['\u2018\u2019]", '"': '["\u201c\u201d]', "-": "[-\u2013\u2014]"}
_LOOSE_IN = str.maketrans(
    {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-"}
)


def _pattern(sentence: str) -> re.Pattern | None:
    """The sentence as a regex: case-insensitive, any whitespace run between words, any quote/dash style."""
    words = sentence.translate(_LOOSE_IN).split()
    if not words:
        return None
    return re.compile(
        r"\s+".join("".join(_LOOSE.get(c) or re.escape(c) for c in word) for word in words), re.IGNORECASE
    )


def _find(text: str, sentence: str) -> tuple[int, int] | None:
    """(start, end) of ``sentence`` in ``text``; the text's own full stop is included when the model left
    it out (or the sentence is found only without its final punctuation)."""
    pos = text.find(sentence) if sentence else -1
    if pos >= 0:
        start, end = pos, pos + len(sentence)
    else:
        m = None
        for candidate in (sentence, sentence.rstrip().rstrip(".;:,")):
            pattern = _pattern(candidate)
            m = pattern.search(text) if pattern is not None else None
            if m:
                break
        if m is None:
            return None
        start, end = m.span()
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if start == end:
        return None
    if end < len(text) and text[end] == "." and text[end - 1] not in ".;:,":
        end += 1
    return start, end


def _section_key(name: str, sections: dict[str, str]) -> str | None:
    wanted = re.sub(r"[^a-z]", "", (name or "").lower())
    for key in sections:
        if re.sub(r"[^a-z]", "", key.lower()) == wanted:
            return key
    return None


def locate(sections: dict[str, str], section: str, sentence: str) -> tuple[str, int, int] | None:
    """(section, start, end) of ``sentence`` in the report: in the named section first, then in the others;
    case-, whitespace- and quote-style-tolerant; None when the words are not in the report."""
    named = _section_key(section, sections)
    order = ([named] if named else []) + [k for k in sections if k != named]
    for key in order:
        span = _find(sections[key] or "", sentence)
        if span is not None:
            return key, span[0], span[1]
    return None


# -- the labeler -----------------------------------------------------------------------------------------


class LLMLabeler:
    """Labels one report per ``label()`` call; safe to call from several threads at once.

    ``params`` come from a run (a request): they name a configured endpoint (``endpoint``, default
    ``default``) and may name a model it offers; a URL or key in them is refused (labeling/llm/endpoints.py).
    ``endpoint`` is for code only (tests, the benchmark): an ``Endpoint`` to use instead of a configured one.
    ``where`` is the params' place in the request, for the field errors name (an ensemble member's)."""

    name = "llm"
    version = LLM_LABELER_VERSION

    def __init__(
        self,
        params: dict | None = None,
        *,
        client: LLMClient | None = None,
        endpoint: Endpoint | None = None,
        where: str = "params",
    ):
        params = dict(params or {})
        llm_params_check(params, where=where)
        self.params = params
        self.endpoint = endpoint or endpoint_get(params.get("endpoint"), where=where)
        self.model_name = endpoint_model(self.endpoint, params.get("model"), where=where)
        self.prompt_version = params.get("prompt_version") or latest_prompt_version()
        self.temperature = float(params.get("temperature", setting("LLM_TEMPERATURE")))
        seed = params.get("seed", setting("LLM_SEED"))
        self.seed = None if seed is None else int(seed)
        self.timeout = float(params.get("timeout", setting("LLM_TIMEOUT")))
        self.max_retries = int(params.get("max_retries", setting("LLM_MAX_RETRIES")))
        self.concurrency = max(1, int(params.get("concurrency", setting("LLM_CONCURRENCY"))))
        self.price_in = float(params.get("price_in", setting("LLM_PRICE_IN")))
        self.price_out = float(params.get("price_out", setting("LLM_PRICE_OUT")))
        self.use_cache = bool(params.get("cache", True))
        self._client = client
        self._pending: list = []
        self._prefetched: dict[str, str | None] = {}  # cache key -> reply (None: known miss)
        self._pending_lock = threading.Lock()
        self._writer = threading.Lock()
        self._batches = 0  # label_many calls in progress: cache writes are grouped (see batch())
        self._pending_since = 0.0
        if not self.model_name:
            configured = (
                "LLM_MODEL" if self.endpoint.name == DEFAULT else f"LLM_{self.endpoint.name.upper()}_MODEL"
            )
            raise ValueError(f"llm: no model set ({configured} or params['model'])")

    @property
    def client(self) -> LLMClient:
        if self._client is None:
            self._client = LLMClient(
                base_url=self.endpoint.base_url,
                model=self.model_name,
                api_key=self.endpoint.api_key,
                endpoint=self.endpoint.name,
                timeout=self.timeout,
                max_retries=self.max_retries,
                invalid_retries=self.params.get("invalid_retries"),
                temperature=self.temperature,
                seed=self.seed,
                backoff_base=float(self.params.get("backoff_base", 0.5)),
                backoff_cap=float(self.params.get("backoff_cap", 30.0)),
            )
        return self._client

    def recorded(self) -> dict:
        """What a run should record about how it asked: the endpoint's name, never its URL or key."""
        return {
            "model": self.model_name,
            "endpoint": self.endpoint.name,
            "prompt_version": self.prompt_version,
            "temperature": self.temperature,
            "seed": self.seed,
            "labeler_version": self.version,
        }

    def cache_key(self, messages: list[dict], *, schema: str) -> str:
        """sha256 of (model, prompt version, schema, input), and the endpoint's name when it is not
        ``default`` (two endpoints may serve different models under one name; ``default``'s keys are
        those from before named endpoints). Never the URL or key."""
        ident = [self.model_name, self.prompt_version, schema, messages]
        if self.endpoint.name != DEFAULT:
            ident.insert(0, {"endpoint": self.endpoint.name})
        blob = json.dumps(ident, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def label(self, sections: dict[str, str], *, schema: str) -> LabelResult:
        if schema not in SCHEMAS:
            raise ValueError(f"schema: {schema!r} is not one of {', '.join(SCHEMAS)}")
        present = _present(sections)
        if not present:
            return LabelResult(proposals=[], warnings=["report has no text"])
        messages = render_messages(present, schema=schema, version=self.prompt_version)
        key = self.cache_key(messages, schema=schema)
        tokens_in = tokens_out = 0
        warnings: list[str] = []
        parsed = None
        content = self._cache_get(key) if self.use_cache else None
        if content is not None:
            try:
                parsed = parse_reply(schema, content)
            except ReplyInvalid:
                parsed = None
        if parsed is None:
            reply = self.client.complete_json(
                messages, response_format=response_format(schema), parse=lambda c: parse_reply(schema, c)
            )
            content, parsed = reply.content, reply.parsed
            tokens_in, tokens_out = reply.tokens_in, reply.tokens_out
            warnings += reply.notes
            if reply.attempts > 1:
                warnings.append(f"answered after {reply.attempts} attempts")
            if self.use_cache:
                self._cache_put(key, content, tokens_in, tokens_out)
        proposals, dropped = to_proposals(parsed, present, schema=schema)
        return LabelResult(
            proposals=proposals,
            raw_reply=content,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            cost=(tokens_in * self.price_in + tokens_out * self.price_out) / 1_000_000,
            warnings=warnings + dropped,
        )

    def prefetch(self, sections_list, *, schema: str) -> None:
        """Read the cache for many reports in one query (``label_many`` calls this): ``label()`` of those
        reports then asks the database nothing before its request."""
        if not self.use_cache or schema not in SCHEMAS:
            return
        from labeling.models import LLMCacheEntry

        keys = []
        for sections in sections_list:
            present = _present(sections)
            if present:
                keys.append(
                    self.cache_key(
                        render_messages(present, schema=schema, version=self.prompt_version), schema=schema
                    )
                )
        found: dict[str, str | None] = dict.fromkeys(keys)
        try:
            for i in range(0, len(keys), 500):
                rows = LLMCacheEntry.objects.filter(key__in=keys[i : i + 500]).values_list("key", "reply")
                found.update(rows)
        except Exception as exc:  # noqa: BLE001 - label() reads the cache itself
            log.warning("llm cache prefetch failed: %s", exc)
            return
        with self._pending_lock:
            self._prefetched.update(found)

    def _cache_get(self, key: str) -> str | None:
        from labeling.models import LLMCacheEntry

        with self._pending_lock:
            if key in self._prefetched:
                return self._prefetched.pop(key)
        try:
            replies = list(LLMCacheEntry.objects.filter(key=key).values_list("reply", flat=True)[:1])
        except Exception as exc:  # noqa: BLE001 - a cache that cannot be read only costs a request
            log.warning("llm cache read failed: %s", exc)
            return None
        return replies[0] if replies else None

    # A label_many call writes its replies to the cache in groups, not one commit per reply: a commit is
    # ~5 ms of a worker's time (SQLite, on disk), during which that worker sends no request.
    BATCH_WRITE_SIZE = 64
    BATCH_WRITE_AGE_S = 5.0

    @contextmanager
    def batch(self):
        """Within it (``label_many`` enters it), replies go to the cache in groups of ``BATCH_WRITE_SIZE``
        (or after ``BATCH_WRITE_AGE_S``); leaving it writes the rest."""
        with self._pending_lock:
            self._batches += 1
        try:
            yield self
        finally:
            with self._pending_lock:
                self._batches -= 1
            self.flush()

    def flush(self) -> None:
        """Write every pending cache entry now."""
        with self._writer:
            self._write_pending()

    def _cache_put(self, key: str, reply: str, tokens_in: int, tokens_out: int) -> None:
        """The entry joins a pending list. Outside ``batch()`` it is written before this returns; inside,
        once enough are pending. Group commit: whichever thread holds the writer lock inserts all pending
        entries in one statement; a thread that finds the writer busy returns (the writer re-checks)."""
        from labeling.models import LLMCacheEntry

        entry = LLMCacheEntry(
            key=key,
            model_name=self.model_name[:128],
            prompt_version=self.prompt_version[:32],
            reply=reply,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
        )
        now = time.monotonic()
        with self._pending_lock:
            if not self._pending:
                self._pending_since = now
            self._pending.append(entry)
        while self._write_due(now) and self._writer.acquire(blocking=False):
            try:
                self._write_pending()
            finally:
                self._writer.release()

    def _write_due(self, now: float) -> bool:
        pending = self._pending
        if not pending:
            return False
        if not self._batches:
            return True
        return len(pending) >= self.BATCH_WRITE_SIZE or now - self._pending_since >= self.BATCH_WRITE_AGE_S

    def _write_pending(self) -> None:
        """Insert all pending entries in one statement (the caller holds the writer lock)."""
        from labeling.models import LLMCacheEntry

        with self._pending_lock:
            batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            # ignore_conflicts: the same input labelled twice at once gives one row
            LLMCacheEntry.objects.bulk_create(batch, ignore_conflicts=True)
        except Exception as exc:  # noqa: BLE001 - a cache that cannot be written only costs a request later
            log.warning("llm cache write of %d replies failed: %s", len(batch), exc)


def _present(sections: dict) -> dict[str, str]:
    return {k: v for k, v in sections.items() if isinstance(v, str) and v.strip()}


def to_proposals(parsed, sections: dict[str, str], *, schema: str) -> tuple[list[ProposedFinding], list[str]]:
    """Proposals located in the report text, and a warning per finding whose sentence is not there."""
    proposals: list[ProposedFinding] = []
    warnings: list[str] = []
    seen = set()
    for f in parsed.findings:
        where = locate(sections, f.section, f.sentence)
        if where is None:
            message = f"dropped {f.code} ({f.assertion}): sentence not in the report: {f.sentence[:120]!r}"
            log.warning("llm: %s", message)
            warnings.append(message)
            continue
        section, start, end = where
        ident = (f.code, section, start, end, f.assertion)
        if ident in seen:
            continue
        seen.add(ident)
        extra = {name: getattr(f, name) for name in EXTRA_FIELDS[schema]}
        proposals.append(
            ProposedFinding(
                phrase=(f.phrase or "").strip() or sections[section][start:end],
                section=section,
                start=start,
                end=end,
                assertion=f.assertion,
                code=f.code,
                laterality=f.laterality,
                location=(f.location or "").strip(),
                size_mm=f.size_mm,
                extra=extra,
            )
        )
    return proposals, warnings


__all__ = ["LLMError", "LLMLabeler", "latest_prompt_version", "load_prompt", "locate", "render_messages"]
