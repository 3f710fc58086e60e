"""A secret param's value, taken from the environment (``default: "${env.NAME}"``), appears in
none of what pipectl writes: terminal output, logs (console and JSON), tracebacks (also of a
plugin listener that raises, whose locals hold it), the tracker's rows, the result store,
stories and error messages; even when a step returns it or raises an exception that says it."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SECRET = "sk-live-7f3a9c2e51d84b06"

PIPELINE = textwrap.dedent("""
    name: secretive
    params:
      token: {type: str, secret: true, default: "${env.API_TOKEN}"}
      region: {type: str, default: "${env.REGION:-eu}"}
    steps:
      - name: fetch
        run: steps:fetch
      - name: use
        run: steps:use
        depends_on: [fetch]
""")

STEPS = textwrap.dedent("""
    def fetch(params, ctx):
        ctx.logger.info("fetching", token=params["token"], region=params["region"])
        return {"token": params["token"], "rows": 3}  # returned unchanged: never stored


    def use(fetch, params):
        raise ValueError(f"the API refused token {fetch['token']} for {params['region']}")
""")


def pipectl(
    root: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipectl.cli", *args],
        cwd=root,
        env={
            **os.environ,
            "API_TOKEN": SECRET,
            "PIPECTL_HOME": str(root / ".pipectl"),
            **(env or {}),
        },
        capture_output=True,
        text=True,
        timeout=300,
    )


def everything_written(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` but the pipeline's own sources."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file()
        and p.name not in ("pipeline.yaml", "steps.py")
        and "__pycache__" not in p.parts
    }


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pipeline.yaml").write_text(PIPELINE)
    (tmp_path / "steps.py").write_text(STEPS)
    return tmp_path


@pytest.mark.slow
@pytest.mark.parametrize("log_format", ["console", "json"])
def test_a_secret_from_the_environment_is_in_nothing_pipectl_writes(project, log_format):
    run = pipectl(
        project, "run", "pipeline.yaml", "--no-progress", "-v", "--log-format", log_format
    )
    assert run.returncode == 1, run.stdout + run.stderr
    output = run.stdout + run.stderr
    assert "the API refused token *** for eu" in output  # the error, masked, with the rest
    assert "fetching" in run.stderr and "Traceback" not in output
    run_id = next(
        line.split()[1]
        for line in run.stdout.splitlines()
        if line.startswith("run ") and "secretive" in line
    )
    shown = pipectl(project, "runs", "show", run_id, "--json")
    story_md = pipectl(project, "story", run_id, "--format", "md")
    story_html = pipectl(project, "story", run_id, "--format", "html")
    resumed = pipectl(project, "run", "pipeline.yaml", "--no-progress", "--resume", "latest")
    for name, proc in (
        ("runs show", shown),
        ("story md", story_md),
        ("story html", story_html),
        ("resume", resumed),
    ):
        assert SECRET not in proc.stdout + proc.stderr, name
    assert '"token": "***"' in shown.stdout  # the run's params
    # the step that returned the secret was not stored, so the resume ran it again
    assert (
        "fetch" in resumed.stdout
        and "output from run" not in resumed.stdout.split("fetch", 1)[1].splitlines()[0]
    )
    assert SECRET not in output
    for path, data in everything_written(project).items():
        assert SECRET.encode() not in data, f"the secret is in {path}"
    with sqlite3.connect(project / ".pipectl" / "pipectl.db") as conn:
        dumped = "\n".join(conn.iterdump())
    assert SECRET not in dumped and "***" in dumped


LISTENER = textwrap.dedent("""
    import os
    import sys

    from pipectl import Pipeline, configure_logging, hookimpl
    from pipectl.plugins import get_plugin_manager


    class Nosy:
        @hookimpl
        def pipectl_step_finish(self, run, step, result):
            token = os.environ["API_TOKEN"]  # a local of the failing frame
            raise RuntimeError(f"listener choked on {token}")


    configure_logging("info", fmt=sys.argv[1])
    pm = get_plugin_manager(autoload=False)
    pm.add_plugin(Nosy(), "nosy")
    pipe = Pipeline("listened", plugin_manager=pm)
    pipe.param("token", secret=True, default=os.environ["API_TOKEN"])

    @pipe.step
    def hello(params):
        return len(params["token"])

    run = pipe.run_sync(tracker="sqlite:///runs.db")
    print("status", run.status.value)
""")


@pytest.mark.slow
@pytest.mark.parametrize("log_format", ["console", "json"])
def test_a_plugin_listener_that_raises_leaks_no_secret(tmp_path, log_format):
    (tmp_path / "nosy.py").write_text(LISTENER)
    proc = subprocess.run(
        [sys.executable, "nosy.py", log_format],
        cwd=tmp_path,
        env={**os.environ, "API_TOKEN": SECRET, "PIPECTL_HOME": str(tmp_path / ".pipectl")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "status success" in proc.stdout, proc.stdout + proc.stderr
    assert "plugin_hook_failed" in proc.stderr and "listener choked on ***" in proc.stderr
    assert "Traceback" in proc.stderr  # the traceback is there, as plain text
    assert SECRET not in proc.stdout + proc.stderr
    for path, data in everything_written(tmp_path).items():
        if path != "nosy.py":
            assert SECRET.encode() not in data, f"the secret is in {path}"


@pytest.mark.slow
def test_a_secret_given_with_p_is_not_in_its_error(project):
    (project / "pipeline.yaml").write_text(
        PIPELINE.replace("type: str, secret", "type: int, secret")
    )
    proc = pipectl(project, "run", "pipeline.yaml", "-p", f"token={SECRET}")
    assert proc.returncode == 2
    assert "the value given is not a int" in proc.stderr or "not a" in proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    unset = subprocess.run(
        [sys.executable, "-m", "pipectl.cli", "validate", "pipeline.yaml"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k != "API_TOKEN"},
    )
    assert unset.returncode == 2
    assert "pipeline.yaml:4: params.token.default: ${env.API_TOKEN} is not set" in unset.stderr


def test_a_secret_cut_in_two_by_a_summary_leaves_no_part_of_it(tmp_path):
    """A step output whose summary preview ends in the middle of the secret's value."""
    from pipectl import Pipeline
    from pipectl.plugins import get_plugin_manager
    from pipectl.tracking import SUMMARY_CHARS

    pipe = Pipeline("cut", plugin_manager=get_plugin_manager(autoload=False))
    pipe.param("token", SECRET, secret=True)
    texts = {}

    for shift in range(0, len(SECRET), 3):  # the cut falls at each place of the secret
        name = f"long{shift}"
        texts[name] = "x" * (SUMMARY_CHARS - 80 + shift) + SECRET + "y" * 5000

        def step(params, _text=texts[name]):
            return _text.replace(SECRET, params["token"])

        step.__name__ = name
        pipe.add_step(name, step)
    run = pipe.run_sync(tracker=f"sqlite:///{tmp_path / 'runs.db'}")
    assert run.status.value == "success", run.errors
    with sqlite3.connect(tmp_path / "runs.db") as conn:
        summaries = [r[0] for r in conn.execute("SELECT output_data FROM step_executions")]
    assert len(summaries) == len(texts)
    for summary in summaries:
        assert '"truncated":true' in summary
        for k in range(3, len(SECRET) + 1):
            assert SECRET[:k] not in summary, f"{SECRET[:k]!r} is in a summary"
