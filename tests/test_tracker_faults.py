"""A tracker that fails never changes a run's outcome and never loses its history silently: a
full disk under the SQLite tracker and its result store, a tracker file that is not a
database or cannot be read, and a read-only tracker file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

PIPECTL = [sys.executable, "-m", "pipectl.cli"]


def cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PIPECTL, *args, *(["--no-progress"] if args[0] == "run" else [])],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
        check=False,
    )


def warnings_in(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("pipectl: warning:")]


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MB tmpfs the test mounts (and unmounts), to fill up or make read-only."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here (mount needs root or CAP_SYS_ADMIN): {proc.stderr.strip()}"
        )
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)


def fill(folder: Path) -> Path:
    """Fill the file system of ``folder`` up to the last byte; the filler file."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for chunk in (1 << 16, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


STEPS = """
    import time
    from pathlib import Path


    def start():
        Path("waiting").write_text("")
        deadline = time.monotonic() + 60
        while not Path("go").exists():
            if time.monotonic() > deadline:
                raise TimeoutError("the test never said go")
            time.sleep(0.02)
        return "started"


    def big(start):
        return b"x" * 3_000_000  # more than the whole file system of the tracker


    def after(big):
        return len(big)
"""


@pytest.mark.slow
def test_a_full_disk_under_the_tracker_is_a_warning_and_leaves_no_partial_files(
    tmp_path, small_tmpfs
):
    (tmp_path / "disk_steps.py").write_text(textwrap.dedent(STEPS))
    (tmp_path / "pipeline.yaml").write_text(
        textwrap.dedent("""
        name: full
        steps:
          - {name: start, run: "disk_steps:start"}
          - {name: big, run: "disk_steps:big", depends_on: [start]}
          - {name: after, run: "disk_steps:after", depends_on: [big]}
    """)
    )
    db = small_tmpfs / "pipectl.db"
    url = f"sqlite:///{db}"
    proc = subprocess.Popen(
        [*PIPECTL, "run", "pipeline.yaml", "--tracker", url, "--no-progress"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "waiting").exists():  # the tracker is open and migrated
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        filler = fill(small_tmpfs)
        assert os.statvfs(small_tmpfs).f_bavail == 0
        (tmp_path / "go").write_text("")
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()

    assert proc.returncode == 0, out + err  # the pipeline succeeded: so does the command
    assert "Traceback" not in err
    assert "big" in out and "run " in out and ": success" in out  # the summary
    warnings = warnings_in(err)
    results = [w for w in warnings if "result store" in w]
    spooled = [w for w in warnings if "spooled to" in w]
    assert len(results) == 1 and len(spooled) == 1 and len(warnings) == 2, err
    assert str(small_tmpfs / "results") in results[0] and "No space left" in results[0]
    assert "3 step(s) (start, big, after) not stored" in results[0]
    assert str(db) in spooled[0]
    assert list(small_tmpfs.rglob("*.tmp")) == []  # no partial output keeps the disk full
    assert list(small_tmpfs.rglob("*.pickle")) == []

    # room again: the next command that opens the tracker writes the spooled rows
    filler.unlink()
    shown = cli("runs", "show", "latest", "--json", "--tracker", url, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    record = json.loads(shown.stdout)
    assert record["status"] == "success"
    steps = {s["step_id"]: s for s in record["steps"]}
    assert {n: s["status"] for n, s in steps.items()} == dict.fromkeys(
        ["start", "big", "after"], "success"
    )
    for step in steps.values():  # not stored: a resume runs them again
        assert step["metadata"]["output_stored"] is False
    assert list((Path(os.environ["PIPECTL_HOME"]) / "spool").glob("*.jsonl")) == []


@pytest.mark.slow
def test_a_tracker_file_that_is_not_a_database_is_named_in_a_clear_error(tmp_path):
    (tmp_path / "bad.db").write_bytes(b"this is not a database, " * 200)
    (tmp_path / "folder.db").mkdir()  # a path that cannot be opened as a file
    (tmp_path / "steps_ok.py").write_text("def a():\n    return 1\n")
    (tmp_path / "pipeline.yaml").write_text("name: ok\nsteps:\n  - {name: a, run: 'steps_ok:a'}\n")
    for name in ("bad.db", "folder.db"):
        url = f"sqlite:///{name}"
        for args in (
            ("runs", "list", "--tracker", url),
            ("runs", "show", "latest", "--tracker", url),
            ("run", "pipeline.yaml", "--tracker", url),
        ):
            proc = cli(*args, cwd=tmp_path)
            assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
            assert f"pipectl: error: --tracker: tracker {name}: " in proc.stderr, proc.stderr
            assert "Traceback" not in proc.stderr
    bad = cli("runs", "list", "--tracker", "sqlite:///bad.db", cwd=tmp_path).stderr
    assert "file is not a database" in bad
    assert (tmp_path / "bad.db").read_bytes() == b"this is not a database, " * 200


def test_an_unreadable_tracker_file_is_named_in_a_clear_error(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("the tests run as root, whom file permissions do not stop from reading")
    db = tmp_path / "locked.db"
    assert cli("runs", "list", "--tracker", f"sqlite:///{db}", cwd=tmp_path).returncode == 0
    db.chmod(0)
    try:
        proc = cli("runs", "list", "--tracker", f"sqlite:///{db}", cwd=tmp_path)
    finally:
        db.chmod(0o644)
    assert proc.returncode == 2 and f"tracker {db}: " in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_runs_list_and_story_read_a_read_only_tracker(tmp_path, request):
    (tmp_path / "steps_ro.py").write_text(
        "def a():\n    return 1\n\n\ndef b(a):\n    return a + 1\n"
    )
    (tmp_path / "pipeline.yaml").write_text(
        textwrap.dedent("""
        name: readonly
        steps:
          - {name: a, run: "steps_ro:a"}
          - {name: b, run: "steps_ro:b", depends_on: [a]}
    """)
    )
    if os.geteuid() == 0:  # root reads and writes whatever the permissions: a read-only mount
        folder = request.getfixturevalue("small_tmpfs")
    else:
        folder = tmp_path / "runs"
    url = f"sqlite:///{folder / 'pipectl.db'}"
    ran = cli("run", "pipeline.yaml", "--tracker", url, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    run_id = json.loads(cli("runs", "list", "--json", "--tracker", url, cwd=tmp_path).stdout)[0][
        "execution_id"
    ]
    before = sorted(p.name for p in folder.iterdir())
    if os.geteuid() == 0:
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
    else:
        (folder / "pipectl.db").chmod(0o444)
        folder.chmod(0o555)
    try:
        listed = cli("runs", "list", "--tracker", url, cwd=tmp_path)
        assert listed.returncode == 0, listed.stderr
        assert run_id[:12] in listed.stdout and "success" in listed.stdout
        shown = cli("runs", "show", run_id[:8], "--json", "--tracker", url, cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        assert [s["status"] for s in json.loads(shown.stdout)["steps"]] == ["success"] * 2
        story = cli("story", run_id, "-o", "story.md", "--tracker", url, cwd=tmp_path)
        assert story.returncode == 0, story.stderr
        assert "readonly" in (tmp_path / "story.md").read_text()
        assert sorted(p.name for p in folder.iterdir()) == before  # nothing written there
    finally:
        if os.geteuid() == 0:
            subprocess.run(["mount", "-o", "remount,rw", str(folder)], check=False)
        else:
            folder.chmod(0o755)
