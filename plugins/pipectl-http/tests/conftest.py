"""Fixtures of pipectl-http's tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from pipectl_http_testapi import ApiServer, RawServer, Respond, start_server


@pytest.fixture
def api() -> Iterator[ApiServer]:
    """A real JSON API on 127.0.0.1 (an ephemeral port), stopped after the test."""
    server, stop = start_server()
    yield server
    stop()


@pytest.fixture
def raw() -> Iterator[Callable[[Respond], RawServer]]:
    """Starts bare servers on 127.0.0.1 (:class:`RawServer`), each answering with the function
    given; stops them after the test."""
    servers: list[RawServer] = []

    def start(respond: Respond) -> RawServer:
        servers.append(RawServer(respond))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()
