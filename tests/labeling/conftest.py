"""Fixtures of the labeling tests: a scripted chat-completions server on loopback."""

import pytest

from tests.labeling.llm_server import LLMServer


@pytest.fixture
def llm_server():
    """A running ``LLMServer`` (127.0.0.1, free port); push actions with ``llm_server.push(...)``."""
    server = LLMServer().start()
    try:
        yield server
    finally:
        server.stop()
