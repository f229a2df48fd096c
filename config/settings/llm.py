"""The ``llm`` labeler: any OpenAI-compatible chat-completions endpoint, its limits and its prices."""

import os

from config.settings.env import env_int, env_str


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


# Endpoint, model and key (a local server such as vLLM or Ollama accepts any key).
LLM_BASE_URL = env_str("LLM_BASE_URL", "http://127.0.0.1:8000/v1")
LLM_MODEL = env_str("LLM_MODEL", "")
LLM_API_KEY = env_str("LLM_API_KEY", "none")
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
