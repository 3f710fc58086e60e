"""Fixtures of pipectl-http's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pipectl_http_testapi import ApiServer, start_server


@pytest.fixture
def api() -> Iterator[ApiServer]:
    """A real JSON API on 127.0.0.1 (an ephemeral port), stopped after the test."""
    server, stop = start_server()
    yield server
    stop()
