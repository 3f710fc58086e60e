"""``pipectl ui``: the command. Imported when the command is used (``pipectl --help`` lists it
from :data:`pipectl_ui.plugin.HELP`); Starlette, uvicorn and Jinja2 are imported when it runs."""

from __future__ import annotations

import sys
from typing import Any

import click

from pipectl_ui.plugin import HELP

EXIT_USAGE = 2
TOKEN_ENV = "PIPECTL_UI_TOKEN"


def check_bind(host: str, token: str | None) -> str | None:
    """Why ``pipectl ui`` must not start on ``host`` with ``token`` (None: it may)."""
    from pipectl_ui.security import is_loopback

    if token is not None and not token.strip():
        return f"the token is empty: give a non-empty --token or {TOKEN_ENV}"
    if token is None and not is_loopback(host):
        return (
            f"--host {host} is not a loopback address: anyone who can reach it could read "
            f"every run. Give a token (--token TOKEN or the environment variable {TOKEN_ENV}); "
            "every request must then carry it"
        )
    return None


def display_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    if host in ("0.0.0.0", "::"):
        shown = "127.0.0.1" if host == "0.0.0.0" else "[::1]"
    return f"http://{shown}:{port}/"


@click.command(
    name="ui",
    help=HELP
    + """

Pages are rendered on the server and read without scripts; a small packaged script only keeps
a page current while a run goes on. The JSON API the pages use is under /api/ (see the README of
pipectl-ui). Binding any address but a loopback one needs a token (--token or
PIPECTL_UI_TOKEN): every request must then carry it, as `Authorization: Bearer TOKEN` or once
as ?token=TOKEN (which sets a cookie).

With --allow-actions, run pages offer to re-run a run's pipeline with its params, to resume a
failed run and to cancel a run the UI started: each starts `pipectl run` (its output in a log
file under the project's .pipectl/ui/), and each form carries a CSRF token.""",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to bind.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="The port (0: a free one, printed).",
)
@click.option(
    "--tracker",
    metavar="URL",
    help="The tracker to read (default: the project's, as `pipectl run` uses: its "
    "pipectl.toml's tracker, else .pipectl/pipectl.db in the project, or "
    "$PIPECTL_HOME/pipectl.db).",
)
@click.option(
    "--token",
    metavar="TOKEN",
    envvar=TOKEN_ENV,
    show_envvar=True,
    help="Every request must carry it (needed to bind a non-loopback address).",
)
@click.option(
    "--allow-actions",
    is_flag=True,
    help="Offer actions: re-run a run's pipeline, resume a failed run, cancel a run the UI "
    "started (each starts `pipectl run`, which records in the same tracker). Off by default: "
    "the UI only reads.",
)
@click.pass_obj
def ui(
    pm: Any, host: str, port: int, tracker: str | None, token: str | None, allow_actions: bool
) -> None:
    problem = check_bind(host, token)
    if problem is not None:
        click.echo(f"pipectl: error: {problem}", err=True)
        sys.exit(EXIT_USAGE)
    from pipectl.cli.runs_command import close_store, open_store

    store = open_store(pm, tracker)
    try:
        actions = None
        if allow_actions:
            from pipectl_ui.actions import Actions

            actions = Actions(tracker_url=tracker or _project_tracker())
        serve(store, host=host, port=port, token=token, actions=actions)
    finally:
        close_store(store)


def _project_tracker() -> str:
    """The tracker URL ``open_store`` opened without ``--tracker``: the project's."""
    from pipectl.project import find_project

    return str(find_project().tracker_url())


def serve(store: Any, *, host: str, port: int, token: str | None, actions: Any = None) -> None:
    """Serve the UI over ``store`` until interrupted, printing its URL once it listens."""
    import socket

    import uvicorn

    from pipectl_ui.app import create_app

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        click.echo(f"pipectl: error: cannot listen on {host}:{port}: {exc.strerror}", err=True)
        sys.exit(EXIT_USAGE)
    sock.listen(128)
    sock.set_inheritable(True)
    real_port = sock.getsockname()[1]
    app = create_app(store, token=token, hosts=(host,), actions=actions)
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
        server_header=False,
    )
    server = uvicorn.Server(config)
    url = display_url(host, real_port)
    shown = getattr(store, "display", None) or getattr(store, "url", "the tracker")
    click.echo(f"pipectl ui: serving {shown} at {url}")
    if token:
        click.echo(
            f"pipectl ui: a token is needed: open {url}?token=TOKEN once (the token of --token "
            f"or {TOKEN_ENV}), or send Authorization: Bearer TOKEN"
        )
    if actions is None:
        click.echo("pipectl ui: read-only; Ctrl-C stops it")
    else:
        click.echo(
            "pipectl ui: actions on (re-run, resume, cancel); the runs it starts write their "
            f"output to {actions.log_dir}; Ctrl-C stops it"
        )
    sys.stdout.flush()
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
        going = actions.running() if actions is not None else []
        if going:  # their own sessions: they go on, recorded by the tracker
            pids = ", ".join(str(s.pid) for s in going)
            click.echo(
                f"pipectl ui: {len(going)} run(s) it started still going on (process {pids}); "
                "cancel one with kill -INT PID",
                err=True,
            )
