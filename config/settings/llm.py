"""The ``llm`` labeler: any OpenAI-compatible chat-completions endpoint, its limits and its prices."""

import os
import re

from django.core.exceptions import ImproperlyConfigured

from config.settings.env import env_int, env_list, env_str


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


# The endpoint named ``default``: URL, model and key (a local server such as vLLM or Ollama accepts any
# key); LLM_MODELS: other model names runs may ask it for (empty: any).
LLM_BASE_URL = env_str("LLM_BASE_URL", "http://127.0.0.1:8000/v1")
LLM_MODEL = env_str("LLM_MODEL", "")
LLM_API_KEY = env_str("LLM_API_KEY", "none")
LLM_MODELS = env_list("LLM_MODELS", [])

_ENDPOINT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def llm_endpoints_from_env(environ) -> dict[str, dict]:
    """More named endpoints: ``LLM_ENDPOINTS=local,cloud``, then per name ``LLM_<NAME>_BASE_URL`` (required),
    ``LLM_<NAME>_MODEL``, ``LLM_<NAME>_API_KEY`` and ``LLM_<NAME>_MODELS`` (comma-separated). A run picks
    one by name (params ``endpoint``); URLs and keys never come from a request. A listed name without its
    URL refuses to start."""
    found: dict[str, dict] = {}
    for name in [n.strip().lower() for n in environ.get("LLM_ENDPOINTS", "").split(",") if n.strip()]:
        if name == "default":
            continue  # LLM_BASE_URL, LLM_MODEL, LLM_API_KEY
        if not _ENDPOINT_NAME.match(name):
            raise ImproperlyConfigured(f"LLM_ENDPOINTS: {name!r} is not a name (a-z, 0-9, _; a letter first)")
        prefix = f"LLM_{name.upper()}_"
        base_url = environ.get(prefix + "BASE_URL", "").strip()
        if not base_url:
            raise ImproperlyConfigured(f"LLM_ENDPOINTS names {name!r} but {prefix}BASE_URL is not set")
        models = environ.get(prefix + "MODELS", "")
        found[name] = {
            "base_url": base_url,
            "model": environ.get(prefix + "MODEL", ""),
            "api_key": environ.get(prefix + "API_KEY", "") or "none",
            "models": [m.strip() for m in models.split(",") if m.strip()],
        }
    return found


LLM_ENDPOINTS = llm_endpoints_from_env(os.environ)
# Seconds one request may take; attempts per request after the first (429, 5xx, timeouts, invalid JSON).
LLM_TIMEOUT = _env_float("LLM_TIMEOUT", 60.0)
LLM_MAX_RETRIES = env_int("LLM_MAX_RETRIES", 4)
# Reports labelled at once by one run (requests in flight on the ``llm`` queue's worker).
LLM_CONCURRENCY = env_int("LLM_CONCURRENCY", 8)
# Sampling, recorded with every run.
LLM_TEMPERATURE = _env_float("LLM_TEMPERATURE", 0.0)
LLM_SEED = env_int("LLM_SEED", 0)
# USD per million tokens, for the run's cost.
LLM_PRICE_IN = _env_float("LLM_PRICE_IN", 0.0)
LLM_PRICE_OUT = _env_float("LLM_PRICE_OUT", 0.0)
