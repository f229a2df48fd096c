"""Fixtures of the release tests."""

import pytest

from releases.records import DirSink


@pytest.fixture
def sink(tmp_path):
    s = DirSink(tmp_path / "out")
    yield s
    s.close()
