"""Fixtures of the labeling tests: a scripted chat-completions server on loopback."""

import os

import pytest

from tests.labeling.llm_server import AsyncLLMServer, LLMServer


@pytest.fixture
def llm_server():
    """A running ``LLMServer`` (127.0.0.1, free port); push actions with ``llm_server.push(...)``.
    ``LLM_TEST_SERVER=async`` runs the tests against ``AsyncLLMServer`` (the benchmark's server) instead."""
    cls = AsyncLLMServer if os.environ.get("LLM_TEST_SERVER") == "async" else LLMServer
    server = cls().start()
    try:
        yield server
    finally:
        server.stop()
