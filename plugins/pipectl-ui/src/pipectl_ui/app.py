"""The UI's ASGI application (Starlette): pages, the JSON API, live events and static files.

:func:`create_app` builds it over an open tracker. The pages and the API call the same reads
(:class:`pipectl_ui.reads.Reads`), on the reads' thread; the UI only reads the tracker. The
POST routes of :data:`ACTION_ROUTES` (re-run, resume, cancel: :mod:`pipectl_ui.actions`) act
only with ``--allow-actions`` (else ``403``) and a form's valid CSRF token (else ``403``); they
start ``pipectl run`` processes, which write to the tracker.

Routes:

========================================  ========================================================
``/``                                     the runs (filters, paging)
``/runs/{run_id}``                        a run
``/runs/{run_id}/steps/{step}``           a step's attempts and log lines (``?attempt=N``)
``/pipelines``, ``/pipelines/{name}``     the pipelines, one pipeline
``/api/runs``                             a page of runs (the filters of ``/``, ``cursor``)
``/api/runs/{run_id}``                    a run's record, with ``related``
``/api/runs/{run_id}/steps``              its steps
``/api/runs/{run_id}/steps/{step}/logs``  a step's log lines (``attempt``, ``limit``)
``/api/runs/{run_id}/events``             server-sent events while the run goes on
``/api/pipelines``, ``/api/pipelines/{n}``  the pipelines, one pipeline with its runs
``/static/{name}``                        the packaged CSS and script
POST ``/actions/runs/{run_id}/rerun``     run the run's pipeline again, with its params
POST ``/actions/runs/{run_id}/resume``    resume a failed, cancelled or interrupted run
POST ``/actions/runs/{run_id}/cancel``    cancel a running run this UI started (``SIGINT``)
========================================  ========================================================
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from pipectl_ui import views
from pipectl_ui.actions import Actions, Refused, Started
from pipectl_ui.reads import BadRequest, NotFound, Reads, RunFilters
from pipectl_ui.security import (
    CSRF_COOKIE,
    CSRF_FIELD,
    Csrf,
    SecurityHeaders,
    TokenGate,
    cross_site,
    is_loopback,
)

__all__ = ["ACTION_ROUTES", "POLL_SECONDS", "create_app"]

#: how often the events of a running run look at the tracker for a change
POLL_SECONDS = 0.3
#: a comment line on an event stream this often, so that proxies keep it open
KEEPALIVE_SECONDS = 15.0
_LOG_LIMIT = 10_000

#: how long an action waits for the run it started to be in the tracker (then the runs page)
FOLLOW_SECONDS = 5.0
#: how long a cancel waits for the process to end (then the run's page, still cancelling)
CANCEL_WAIT_SECONDS = 5.0
_MAX_FORM_BYTES = 16 * 1024


class JSONResponse(Response):
    """JSON, with values JSON does not have (a datetime) as text."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, default=str, separators=(",", ":")).encode()


def _reads(request: Request) -> Reads:
    reads: Reads = request.app.state.reads
    return reads


def _api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _attempt(request: Request) -> int | None:
    text = request.query_params.get("attempt")
    if text is None or text == "":
        return None
    if not text.isdigit() or int(text) < 1:
        raise BadRequest(f"attempt: a whole number from 1, got {text!r}")
    return int(text)


# -- pages ---------------------------------------------------------------------------------------


async def runs_page(request: Request) -> Response:
    reads = _reads(request)
    filters = RunFilters(request.query_params)
    return HTMLResponse(await reads.call(views.runs_page, reads, filters))


async def _full_id(request: Request) -> tuple[str, Response | None]:
    """The run id of the path, and a redirect to the page of its full id when the path has a
    prefix of it."""
    reads = _reads(request)
    given = request.path_params["run_id"]
    full = await reads.call(reads.resolve, given)
    if full == given:
        return full, None
    path = request.url.path.replace(f"/runs/{quote(given, safe='')}", views.run_url(full), 1)
    query = f"?{request.url.query}" if request.url.query else ""
    return full, RedirectResponse(path + query, status_code=303)


async def run_page(request: Request) -> Response:
    reads = _reads(request)
    full, redirect = await _full_id(request)
    if redirect is not None:
        return redirect

    offer, cookie = _offer(request)

    def page() -> str:
        return views.run_page(reads, reads.run(full), offer=offer)

    return _with_cookie(HTMLResponse(await reads.call(page)), cookie)


async def step_page(request: Request) -> Response:
    reads = _reads(request)
    full, redirect = await _full_id(request)
    if redirect is not None:
        return redirect
    step, attempt = request.path_params["step"], _attempt(request)

    def page() -> str:
        return views.step_page(reads, reads.run(full), step, attempt)

    return HTMLResponse(await reads.call(page))


async def pipelines_page(request: Request) -> Response:
    reads = _reads(request)
    return HTMLResponse(await reads.call(views.pipelines_page, reads))


async def pipeline_page(request: Request) -> Response:
    reads = _reads(request)
    offer, cookie = _offer(request)
    page = await reads.call(views.pipeline_page, reads, request.path_params["name"], offer=offer)
    return _with_cookie(HTMLResponse(page), cookie)


# -- actions -------------------------------------------------------------------------------------


def _actions(request: Request) -> Actions | None:
    actions: Actions | None = request.app.state.actions
    return actions


def _offer(request: Request) -> tuple[Callable[[dict[str, Any]], dict[str, Any]] | None, str]:
    """What a page with action forms needs: a function of a run's record to what the page
    offers (with the form's CSRF token), and the session cookie to set (when the browser has
    none yet); ``(None, "")`` without ``--allow-actions``."""
    actions = _actions(request)
    if actions is None:
        return None, ""
    csrf: Csrf = request.app.state.csrf
    session = request.cookies.get(CSRF_COOKIE)
    cookie = ""
    if not csrf.valid_session(session):
        session = csrf.new_session()
        cookie = csrf.cookie(session)
    assert session is not None
    token = csrf.token(session)

    def offer(record: dict[str, Any]) -> dict[str, Any]:
        return {"csrf_field": CSRF_FIELD, "csrf": token, **actions.offer(record)}

    return offer, cookie


def _with_cookie(response: Response, cookie: str) -> Response:
    if cookie:
        response.headers.append("set-cookie", cookie)
    return response


async def _form(request: Request) -> dict[str, str]:
    """The fields of a POSTed form (``application/x-www-form-urlencoded``, small)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM_BYTES:
            raise Refused("the form is too large", status=413)
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError:
        raise BadRequest("the form is not UTF-8") from None


async def _allowed(request: Request) -> Actions:
    """The actions, when this POST may act: ``--allow-actions``; a loopback client, unless a
    token guards the server (checked before, by :class:`TokenGate`); not sent by another site;
    the form's CSRF token of the browser's session. :class:`Refused` (403) otherwise."""
    actions = _actions(request)
    if actions is None:
        raise Refused(
            "actions are off: start the UI with pipectl ui --allow-actions to re-run, resume "
            "or cancel runs from it",
            status=403,
        )
    if request.app.state.token is None:
        client = request.client.host if request.client else ""
        if not client or not is_loopback(client):
            raise Refused("actions are answered to this machine only (no token)", status=403)
    problem = cross_site(request.headers)
    if problem is not None:
        raise Refused(problem, status=403)
    form = await _form(request)
    csrf: Csrf = request.app.state.csrf
    if not csrf.check(request.cookies.get(CSRF_COOKIE), form.get(CSRF_FIELD)):
        raise Refused(
            "the form's CSRF token is missing or wrong (a form of an older page, or of a "
            "UI since restarted?): open the page again and resubmit",
            status=403,
        )
    return actions


async def _follow(request: Request, actions: Actions, started: Started) -> Response:
    """Once the started run is in the tracker, a redirect to its page; the runs page if it
    is not there after :data:`FOLLOW_SECONDS`; an error page with the end of its output when
    the process ended without recording a run."""
    reads = _reads(request)
    deadline = time.monotonic() + request.app.state.follow_seconds
    while True:
        run_id = await reads.call(actions.find_run, reads.tracker, started)
        if run_id is not None:
            return RedirectResponse(views.run_url(run_id), status_code=303)
        if not started.running():
            # it may have recorded its run just before it ended
            run_id = await reads.call(actions.find_run, reads.tracker, started)
            if run_id is not None:
                return RedirectResponse(views.run_url(run_id), status_code=303)
            code = started.process.returncode
            raise Refused(
                f"pipectl run exited with status {code} before it recorded a run. Its "
                f"output ({started.log}):\n\n{started.log_tail()}",
                status=502,
            )
        if time.monotonic() > deadline:
            return RedirectResponse(
                "/?" + urlencode({"pipeline": started.pipeline}), status_code=303
            )
        await asyncio.sleep(0.1)


async def _start(request: Request, planner: str) -> Response:
    """Start the ``pipectl run`` that ``actions.<planner>`` plans for the run of the URL, and
    follow it to its page."""
    actions = await _allowed(request)
    reads = _reads(request)
    record = await reads.call(reads.run, request.path_params["run_id"])
    plan = await reads.call(getattr(actions, planner), record)
    started = await asyncio.to_thread(actions.start, plan)
    return await _follow(request, actions, started)


async def action_rerun(request: Request) -> Response:
    return await _start(request, "plan_rerun")


async def action_resume(request: Request) -> Response:
    return await _start(request, "plan_resume")


async def action_cancel(request: Request) -> Response:
    actions = await _allowed(request)
    reads = _reads(request)
    record = await reads.call(reads.run, request.path_params["run_id"])
    started = actions.cancel(record)
    deadline = time.monotonic() + request.app.state.cancel_wait_seconds
    while started.running() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return RedirectResponse(views.run_url(record["run_id"]), status_code=303)


ACTION_ROUTES: list[BaseRoute] = [
    Route("/actions/runs/{run_id}/rerun", action_rerun, methods=["POST"]),
    Route("/actions/runs/{run_id}/resume", action_resume, methods=["POST"]),
    Route("/actions/runs/{run_id}/cancel", action_cancel, methods=["POST"]),
]


# -- the JSON API --------------------------------------------------------------------------------


async def api_runs(request: Request) -> Response:
    reads = _reads(request)
    return JSONResponse(await reads.call(reads.runs, RunFilters(request.query_params)))


async def api_run(request: Request) -> Response:
    reads = _reads(request)
    return JSONResponse(await reads.call(reads.run, request.path_params["run_id"]))


async def api_steps(request: Request) -> Response:
    reads = _reads(request)
    return JSONResponse(await reads.call(reads.steps, request.path_params["run_id"]))


async def api_logs(request: Request) -> Response:
    reads = _reads(request)
    limit_text = request.query_params.get("limit") or str(_LOG_LIMIT)
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= _LOG_LIMIT:
        raise BadRequest(f"limit: a whole number from 1 to {_LOG_LIMIT}, got {limit_text!r}")
    data = await reads.call(
        reads.step_logs,
        request.path_params["run_id"],
        request.path_params["step"],
        _attempt(request),
        int(limit_text),
    )
    return JSONResponse(data)


async def api_pipelines(request: Request) -> Response:
    reads = _reads(request)
    return JSONResponse(await reads.call(reads.pipelines))


async def api_pipeline(request: Request) -> Response:
    reads = _reads(request)
    return JSONResponse(await reads.call(reads.pipeline, request.path_params["name"]))


def _event(name: str, data: Any) -> bytes:
    text = json.dumps(data, ensure_ascii=False, default=str, separators=(",", ":"))
    return f"event: {name}\ndata: {text}\n\n".encode()


async def api_events(request: Request) -> Response:
    """Server-sent events of a run: ``state`` (the run's status and its steps') at once and
    whenever it changes (the tracker's ``run_version`` is read every :data:`POLL_SECONDS`),
    then ``end`` when the run has finished, and the stream closes."""
    reads = _reads(request)
    run_id = await reads.call(reads.resolve, request.path_params["run_id"])
    poll: float = request.app.state.poll_seconds

    async def stream() -> AsyncIterator[bytes]:
        seen: str | None = None
        quiet_since = time.monotonic()
        yield b"retry: 1000\n\n"
        while True:
            version = await reads.call(reads.version, run_id)
            if version is None:
                yield _event("end", {"run_id": run_id, "reason": "the run is gone"})
                return
            if version != seen:
                seen = version
                state = await reads.call(reads.live, run_id)
                state["version"] = version
                yield _event("state", state)
                quiet_since = time.monotonic()
                if state["finished"]:
                    yield _event("end", {"run_id": run_id, "status": state["status"]})
                    return
            elif time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
                yield b": keep-alive\n\n"
                quiet_since = time.monotonic()
            if await request.is_disconnected():
                return
            await asyncio.sleep(poll)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


# -- static files and errors ---------------------------------------------------------------------


async def static(request: Request) -> Response:
    name = request.path_params["name"]
    try:
        data, kind, etag = views.static_file(name)
    except KeyError:
        raise NotFound(f"no static file {name!r}") from None
    headers = {"ETag": f'"{etag}"', "Cache-Control": "public, max-age=3600"}
    if request.headers.get("if-none-match") == f'"{etag}"':
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=kind, headers=headers)


async def favicon(request: Request) -> Response:
    return Response(status_code=204, headers={"Cache-Control": "public, max-age=86400"})


def _error(request: Request, status: int, message: str) -> Response:
    if _api(request):
        return JSONResponse({"error": {"status": status, "message": message}}, status_code=status)
    reads = getattr(request.app.state, "reads", None)
    return HTMLResponse(views.error_page(reads, status, message), status_code=status)


async def not_found(request: Request, exc: Exception) -> Response:
    return _error(request, 404, str(exc) or "not found")


async def bad_request(request: Request, exc: Exception) -> Response:
    return _error(request, 400, str(exc))


async def refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refused)
    return _error(request, exc.status, str(exc))


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error(request, exc.status_code, str(exc.detail))


async def server_error(request: Request, exc: Exception) -> Response:
    # no traceback in the answer: it could hold what the tracker's error message holds
    return _error(request, 500, f"the UI failed to read the tracker: {type(exc).__name__}")


ROUTES: list[BaseRoute] = [
    Route("/", runs_page),
    Route("/runs/{run_id}", run_page),
    Route("/runs/{run_id}/steps/{step:path}", step_page),
    Route("/pipelines", pipelines_page),
    Route("/pipelines/{name:path}", pipeline_page),
    Route("/api/runs", api_runs),
    Route("/api/runs/{run_id}", api_run),
    Route("/api/runs/{run_id}/steps", api_steps),
    Route("/api/runs/{run_id}/events", api_events),
    Route("/api/runs/{run_id}/steps/{step:path}/logs", api_logs),
    Route("/api/pipelines", api_pipelines),
    Route("/api/pipelines/{name:path}", api_pipeline),
    Route("/static/{name}", static),
    Route("/favicon.ico", favicon),
]


def create_app(
    tracker: Any,
    *,
    token: str | None = None,
    hosts: tuple[str, ...] = (),
    poll_seconds: float = POLL_SECONDS,
    on_shutdown: Callable[[], None] | None = None,
    actions: Actions | None = None,
    follow_seconds: float = FOLLOW_SECONDS,
    cancel_wait_seconds: float = CANCEL_WAIT_SECONDS,
) -> Starlette:
    """The UI over ``tracker`` (open; closing it is the caller's). ``token``: every request
    must carry it (see :mod:`pipectl_ui.security`); without it, requests must name a loopback
    host or one of ``hosts``."""
    reads = Reads(tracker)

    def shutdown() -> None:
        reads.close()
        if on_shutdown is not None:
            on_shutdown()

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            shutdown()

    app = Starlette(
        routes=[*ROUTES, *ACTION_ROUTES],
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(TokenGate, token=token, extra_hosts=hosts),
        ],
        exception_handlers={
            NotFound: not_found,
            BadRequest: bad_request,
            Refused: refused,
            HTTPException: http_error,
            Exception: server_error,
        },
        lifespan=lifespan,
    )
    reads.mode = "actions on" if actions is not None else "read-only"
    app.state.reads = reads
    app.state.poll_seconds = poll_seconds
    app.state.token = token
    app.state.actions = actions
    app.state.csrf = Csrf()  # a random secret of this server's
    app.state.follow_seconds = follow_seconds
    app.state.cancel_wait_seconds = cancel_wait_seconds
    return app
