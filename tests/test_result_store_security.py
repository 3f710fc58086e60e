"""The result store never loads what it did not write: a resume (a real ``pipectl run
--resume`` process) ignores a planted, truncated or foreign file in the results folder, says so
naming the file, and runs its step again; no code from such a file runs. The store's key is
private and made once, whoever makes it first."""

from __future__ import annotations

import json
import os
import pickle
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipectl.tracking import ResultStore

PIPECTL = [sys.executable, "-m", "pipectl.cli"]

STEPS = """
    from pathlib import Path

    def count(name):
        path = Path(f"ran-{name}.txt")
        path.write_text(str(int(path.read_text()) + 1 if path.exists() else 1))

    def a():
        count("a")
        return [1, 2, 3]

    def b(a):
        count("b")
        return sum(a)

    def c(b):
        count("c")
        if not Path("fixed").exists():
            raise RuntimeError("c is broken today")
        return b * 10
"""


def cli(*args: str, cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PIPECTL, *args, *(["--no-progress"] if args[0] == "run" else [])],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PIPECTL_HOME": str(home)},
    )


@pytest.fixture
def failed(tmp_path: Path) -> tuple[Path, Path, str]:
    """A project whose first run failed at ``c`` (``a`` and ``b`` stored): (the project, its
    pipectl home, the failed run's id)."""
    home = tmp_path / "home"
    (tmp_path / "store_steps.py").write_text(textwrap.dedent(STEPS))
    (tmp_path / "pipeline.yaml").write_text(
        textwrap.dedent("""
        name: stored
        steps:
          - {name: a, run: "store_steps:a"}
          - {name: b, run: "store_steps:b", depends_on: [a]}
          - {name: c, run: "store_steps:c", depends_on: [b]}
    """)
    )
    first = cli("run", "pipeline.yaml", cwd=tmp_path, home=home)
    assert first.returncode == 1, first.stdout + first.stderr
    assert ran(tmp_path) == {"a": 1, "b": 1, "c": 1}
    run_id = json.loads(cli("runs", "show", "latest", "--json", cwd=tmp_path, home=home).stdout)[
        "run_id"
    ]
    return tmp_path, home, run_id


def ran(root: Path) -> dict[str, int]:
    return {
        n: int((root / f"ran-{n}.txt").read_text()) if (root / f"ran-{n}.txt").exists() else 0
        for n in "abc"
    }


def stored_file(results: Path, run_id: str, step: str) -> Path:
    """The file the store holds (and a resume reads) for ``step`` of ``run_id``."""
    (path,) = (results / run_id).glob(f"{step}-*.pickle")
    return path


class Touch:
    """Unpickling it runs ``touch PATH`` (what a planted pickle can do)."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return os.system, (f"touch '{self.path}'",)


def resume(root: Path, home: Path) -> subprocess.CompletedProcess[str]:
    (root / "fixed").write_text("")
    return cli("run", "pipeline.yaml", "--resume", "latest", cwd=root, home=home)


@pytest.mark.slow
def test_a_genuine_output_is_taken_by_a_resume(failed):
    root, home, _ = failed
    again = resume(root, home)
    assert again.returncode == 0, again.stdout + again.stderr
    assert ran(root) == {"a": 1, "b": 1, "c": 2}
    assert "result_store_ignored" not in again.stderr


@pytest.mark.parametrize("form", ["a bare pickle", "the store's header and a forged tag"])
def test_a_planted_pickle_never_runs_and_its_step_runs_again(failed, form):
    root, home, run_id = failed
    payload = pickle.dumps(Touch(root / "pwned"))
    # the payload does run code when unpickled (so its marker's absence below means something)
    subprocess.run(
        [sys.executable, "-c", "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"],
        input=pickle.dumps(Touch(root / "control")),
        check=True,
    )
    assert (root / "control").exists()
    planted = stored_file(home / "results", run_id, "b")
    if form == "a bare pickle":  # what earlier pipectl versions wrote
        planted.write_bytes(payload)
    else:
        planted.write_bytes(ResultStore.MAGIC + os.urandom(32) + payload)

    again = resume(root, home)

    assert again.returncode == 0, again.stdout + again.stderr
    assert not (root / "pwned").exists()  # nothing of the planted file ran
    assert ran(root) == {"a": 1, "b": 2, "c": 2}  # a's genuine output taken; b runs again
    warnings = [line for line in again.stderr.splitlines() if "result_store_ignored" in line]
    assert len(warnings) == 1 and str(planted) in warnings[0], again.stderr
    assert "runs again" in warnings[0]
    record = json.loads(cli("runs", "show", "latest", "--json", cwd=root, home=home).stdout)
    assert record["status"] == "success"
    assert {s["step_id"]: s["attempts"] for s in record["steps"]} == {"a": 0, "b": 1, "c": 1}


@pytest.mark.slow
def test_a_truncated_output_is_ignored_and_its_step_runs_again(failed):
    root, home, run_id = failed
    path = stored_file(home / "results", run_id, "a")
    path.write_bytes(path.read_bytes()[:-3])

    again = resume(root, home)

    assert again.returncode == 0, again.stdout + again.stderr
    assert ran(root) == {"a": 2, "b": 2, "c": 2}  # a runs again, and what depends on it
    assert str(path) in again.stderr and "result_store_ignored" in again.stderr


@pytest.mark.slow
def test_an_output_moved_to_another_step_is_ignored(failed):
    root, home, run_id = failed
    results = home / "results"
    stored_file(results, run_id, "b").write_bytes(stored_file(results, run_id, "a").read_bytes())

    again = resume(root, home)

    assert again.returncode == 0, again.stdout + again.stderr
    assert ran(root) == {"a": 1, "b": 2, "c": 2}  # the file was genuine, but a's


@pytest.mark.slow
def test_an_output_stored_with_another_key_is_ignored(tmp_path):
    """A run recorded in a tracker shared by two pipectl homes: resumed from the other home,
    whose key differs, its stored outputs are not taken (and nothing else breaks)."""
    (tmp_path / "store_steps.py").write_text(textwrap.dedent(STEPS))
    (tmp_path / "pipeline.yaml").write_text(
        textwrap.dedent(f"""
        name: stored
        tracker: sqlite:///{tmp_path / "shared" / "pipectl.db"}
        steps:
          - {{name: a, run: "store_steps:a"}}
          - {{name: b, run: "store_steps:b", depends_on: [a]}}
          - {{name: c, run: "store_steps:c", depends_on: [b]}}
    """)
    )
    first = cli("run", "pipeline.yaml", cwd=tmp_path, home=tmp_path / "home-1")
    assert first.returncode == 1 and ran(tmp_path) == {"a": 1, "b": 1, "c": 1}
    assert list((tmp_path / "shared" / "results").rglob("a-*.pickle"))  # beside the database

    again = resume(tmp_path, tmp_path / "home-2")

    assert again.returncode == 0, again.stdout + again.stderr
    assert ran(tmp_path) == {"a": 2, "b": 2, "c": 2}
    assert "result_store_ignored" in again.stderr and "a-" in again.stderr
    keys = [(tmp_path / h / "result-store.key").read_text() for h in ("home-1", "home-2")]
    assert keys[0] != keys[1]


MAKE_KEY = """
import os, pickle, sys
from pipectl.tracking import ResultStore

os.umask(0)  # the key is private whatever the umask
store = ResultStore(sys.argv[1])
with open(sys.argv[2], "rb") as gate:  # a FIFO: every process wakes when the test closes it
    gate.read()
store.put("run", f"step-{sys.argv[3]}", pickle.dumps(int(sys.argv[3])))
"""


@pytest.mark.slow
def test_the_key_is_made_once_private_by_processes_racing_to_make_it(tmp_path, monkeypatch):
    home, results, gate = tmp_path / "home", tmp_path / "results", tmp_path / "gate"
    monkeypatch.setenv("PIPECTL_HOME", str(home))
    os.mkfifo(gate)
    procs = [
        subprocess.Popen([sys.executable, "-c", MAKE_KEY, str(results), str(gate), str(i)])
        for i in range(12)
    ]
    try:
        time.sleep(1.0)  # all started, waiting at the gate (one that is not yet fails nothing)
        os.close(os.open(gate, os.O_WRONLY))  # opened and closed: they all go
        assert [p.wait(timeout=60) for p in procs] == [0] * 12
    finally:
        for p in procs:
            p.kill()

    key = home / "result-store.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(key.read_text().strip()) == 64 and list(home.iterdir()) == [key]
    store = ResultStore(results)  # one key: every process's output reads back
    assert [store.get("run", f"step-{i}") for i in range(12)] == [(True, i) for i in range(12)]


@pytest.mark.slow
def test_a_key_being_written_by_another_process_is_waited_for(tmp_path, monkeypatch):
    """The process that made the key file has not written the key yet: the others wait for
    it and use it (never an empty key of their own)."""
    monkeypatch.setenv("PIPECTL_HOME", str(tmp_path / "home"))
    key = tmp_path / "home" / "result-store.key"
    key.parent.mkdir()
    key.touch(mode=0o600)
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import pickle, sys; from pipectl.tracking "
            "import ResultStore; ResultStore(sys.argv[1]).put('run', 's', "
            "pickle.dumps('late'))",
            str(tmp_path / "results"),
        ]
    )
    time.sleep(0.3)
    key.write_text(os.urandom(32).hex() + "\n")  # what the maker writes, late
    assert writer.wait(timeout=60) == 0
    assert ResultStore(tmp_path / "results").get("run", "s") == (True, "late")


def test_a_store_pickled_to_another_process_takes_its_key_along(tmp_path, monkeypatch):
    """What a dask worker does: it gets the store pickled, with another (or no) pipectl home,
    and writes outputs that the store reads back."""
    monkeypatch.setenv("PIPECTL_HOME", str(tmp_path / "driver"))
    store = ResultStore(tmp_path / "results")
    worker = subprocess.run(
        [
            sys.executable,
            "-c",
            "import pickle, sys; store = pickle.loads(sys.stdin.buffer.read())"
            "; store.put('run', 'on-worker', pickle.dumps({'x': 1}))",
        ],
        input=pickle.dumps(store),
        env={**os.environ, "PIPECTL_HOME": str(tmp_path / "worker")},
        check=True,
    )
    assert worker.returncode == 0
    assert store.get("run", "on-worker") == (True, {"x": 1})
    assert not (tmp_path / "worker").exists()  # no key of its own was made there
