"""Credentials go only to the origin (scheme, host and port) of ``url``: a redirect or a next
link to another port of the same host, or to https from http and back, is followed without any
of them. Real servers on 127.0.0.1 record the headers and query they got."""

from __future__ import annotations

import asyncio
import base64
import shutil
import ssl
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pipectl.data import DataContext

from pipectl_http import plugin
from pipectl_http.errors import HttpExtractorError

from pipectl_http_testapi import RawRequest, RawServer, head

SECRET = "0rigin-s3cret-5b1c"
HEADER_SECRET = "hdr-s3cret-77aa"
BASIC = "Basic " + base64.b64encode(f"ann:{SECRET}".encode()).decode()
AUTHS = {  # auth option, and where the secret goes
    "bearer": (
        {"type": "bearer", "token_env": "ORIGIN_SECRET"},
        "authorization",
        f"Bearer {SECRET}",
    ),
    "basic": (
        {"type": "basic", "username": "ann", "password_env": "ORIGIN_SECRET"},
        "authorization",
        BASIC,
    ),
    "api_key-header": (
        {"type": "api_key", "header": "X-API-Key", "key_env": "ORIGIN_SECRET"},
        "x-api-key",
        SECRET,
    ),
    "api_key-param": (
        {"type": "api_key", "param": "appid", "key_env": "ORIGIN_SECRET"},
        "?appid",
        SECRET,
    ),
}
HEADERS = {"X-Auth-Token": HEADER_SECRET, "Cookie": "session=from-config", "X-Client": "pipectl"}
"""The ``headers`` option: two credentials by their names, and a plain header."""
PARAMS = {"api_token": "param-s3cret-31c", "day": "1"}
"""The ``params`` option: a credential by its name, and a plain parameter."""
CREDENTIAL_NAMES = ("authorization", "x-api-key", "x-auth-token", "cookie")

Routes = dict[str, Callable[[RawRequest], bytes]]


def answer(body: bytes, status: str = "200 OK", **headers: str) -> Callable[[RawRequest], bytes]:
    return lambda request: head(status, length=len(body), **headers) + body


def redirect(location: str, **headers: str) -> Callable[[RawRequest], bytes]:
    return lambda request: head("302 Found", length=0, Location=location, **headers)


def redirect_keeping_query(location: str, **headers: str) -> Callable[[RawRequest], bytes]:
    """A redirect to ``location`` with the query of the request, as many servers do."""

    def reply(request: RawRequest) -> bytes:
        query = request.target.partition("?")[2]
        return redirect(f"{location}?{query}" if query else location, **headers)(request)

    return reply


@pytest.fixture
def servers() -> Iterator[Callable[..., RawServer]]:
    """Starts servers answering by path (``routes``); stops them after the test."""
    started: list[RawServer] = []

    def start(routes: Routes, tls: ssl.SSLContext | None = None) -> RawServer:
        def respond(request: RawRequest, conn: Any, stopping: Any) -> None:
            conn.sendall(routes[request.path](request))

        started.append(RawServer(respond, tls))
        return started[-1]

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORIGIN_SECRET", SECRET)


def extract(url: str, **options: Any) -> list[dict]:
    extractor = plugin.make_http_extractor(url=url, retries=0, **options)

    async def run() -> list[dict]:
        ctx = DataContext("t", {}, "fail", None, None)
        return [r async for batch in extractor.batches(ctx) for r in batch]

    return asyncio.run(run())


def credentials(request: RawRequest) -> dict[str, str]:
    """The credentials a request carried: headers, and the ``appid`` and ``api_token`` query
    parameters."""
    got = {name: request.headers[name] for name in CREDENTIAL_NAMES if name in request.headers}
    got.update(
        {
            f"?{name}": value
            for name, value in request.query.items()
            if name in ("appid", "api_token")
        }
    )
    return got


@pytest.mark.parametrize("auth", list(AUTHS))
def test_a_redirect_to_another_port_of_the_same_host_gets_no_credential(servers, secret_env, auth):
    option, where, value = AUTHS[auth]
    other = servers({"/items": answer(b'[{"id": 1}]')})
    # the Location keeps the query (with a key in it), and the home server sets a cookie:
    # cookies do not tell ports apart, origins do
    home = servers({"/start": redirect_keeping_query(other.url("/items"), Set_Cookie="sid=jar")})

    records = extract(home.url("/start"), auth=option, headers=HEADERS, params=PARAMS)

    assert records == [{"id": 1}]
    (sent_home,) = home.requests
    assert credentials(sent_home) == {
        where: value,
        "x-auth-token": HEADER_SECRET,
        "cookie": "session=from-config",
        "?api_token": PARAMS["api_token"],
    }
    (sent_other,) = other.requests
    assert credentials(sent_other) == {}  # query credentials are not carried over either
    assert sent_other.headers["x-client"] == "pipectl"  # plain headers and params are
    assert sent_other.query["day"] == "1"


@pytest.mark.parametrize("auth", list(AUTHS))
def test_a_same_origin_redirect_keeps_the_credentials(servers, secret_env, auth):
    option, where, value = AUTHS[auth]
    routes: Routes = {"/items": answer(b'[{"id": 1}]')}
    home = servers(routes)
    routes["/start"] = redirect(home.url("/items"))  # the Location has no appid

    records = extract(home.url("/start"), auth=option, headers=HEADERS)

    assert records == [{"id": 1}]
    first, second = home.requests
    assert second.path == "/items"
    expected = {where: value, "x-auth-token": HEADER_SECRET, "cookie": "session=from-config"}
    assert credentials(first) == credentials(second) == expected


def test_a_next_link_to_another_origin_gets_no_credential(servers, secret_env):
    other = servers({"/page2": answer(b'[{"id": 2}]')})
    home = servers({"/page1": answer(b'[{"id": 1}]', Link=f'<{other.url("/page2")}>; rel="next"')})

    records = extract(home.url("/page1"), paginate="link", auth=AUTHS["api_key-param"][0])

    assert records == [{"id": 1}, {"id": 2}]
    assert credentials(home.requests[0]) == {"?appid": SECRET}
    assert credentials(other.requests[0]) == {}


def test_a_401_after_a_redirect_to_another_origin_says_it_got_no_credentials(servers, secret_env):
    other = servers({"/items": answer(b'{"error": "who are you"}', "401 Unauthorized")})
    home = servers({"/start": redirect(other.url("/items"))})

    with pytest.raises(HttpExtractorError) as info:
        extract(home.url("/start"), auth=AUTHS["bearer"][0])

    assert str(info.value) == (
        f"http GET {home.url('/start')}: HTTP 401 Unauthorized (check the credentials (auth); "
        f"redirected to {other.url('/items')}, another origin, which is sent no credentials); "
        'the response starts with: {"error": "who are you"}'
    )


@pytest.fixture
def tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    """A server TLS context for 127.0.0.1 with a certificate made now, which the client trusts
    (``SSL_CERT_FILE``, read by httpx)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


@pytest.mark.slow
@pytest.mark.parametrize("home_scheme", ["http", "https"])
def test_a_redirect_to_the_other_scheme_gets_no_credential(servers, secret_env, tls, home_scheme):
    other = servers({"/items": answer(b'[{"id": 1}]')}, tls if home_scheme == "http" else None)
    home = servers(
        {"/start": redirect(other.url("/items"))}, tls if home_scheme == "https" else None
    )
    assert home.base.startswith(f"{home_scheme}://")

    records = extract(home.url("/start"), auth=AUTHS["bearer"][0], headers=HEADERS)

    assert records == [{"id": 1}]
    assert credentials(home.requests[0])["authorization"] == f"Bearer {SECRET}"
    assert credentials(other.requests[0]) == {}
