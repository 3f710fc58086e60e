"""The README's quick start, exactly as it is written, on a fresh clone in a fresh venv."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def readme_quick_start() -> str:
    """The first ```bash block under the README's "## Quick start" heading."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1]
    match = re.search(r"```bash\n(.*?)\n```", section, re.S)
    assert match, "the README's quick start has no ```bash block"
    return match.group(1).strip()


def fresh_clone(target: Path) -> None:
    """What a fresh clone of this checkout holds: the files git tracks, plus the new files it
    would commit (not ignored), at their current contents."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in filter(None, listed.split("\0")):
        source = REPO_ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("git") is None or not (REPO_ROOT / ".git").exists(),
    reason="needs git and a git checkout to know what a clone holds",
)
def test_the_readme_quick_start_on_a_fresh_clone_and_venv(tmp_path):
    command = readme_quick_start()
    assert command == "pip install -e . && pipectl run examples/quickstart/pipeline.yaml"
    clone = tmp_path / "pipectl"
    fresh_clone(clone)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PIPECTL_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        VIRTUAL_ENV=str(venv),
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )

    proc = subprocess.run(
        ["bash", "-c", command], cwd=clone, env=env, capture_output=True, text=True, timeout=900
    )

    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    out = clone / "examples" / "quickstart" / "output"
    # the output says where the data went
    assert (
        "load_orders -> sqlite examples/quickstart/output/orders.sqlite table orders: 114 records"
    ) in proc.stdout
    assert (
        "load_orders -> jsonl examples/quickstart/output/orders.jsonl: 114 records" in proc.stdout
    )
    assert (
        "load_orders: 6 bad records set aside in examples/quickstart/output/rejected_orders.jsonl"
    ) in proc.stdout
    assert "of 'quickstart': success" in proc.stdout
    # and the data is there: each order once in both outputs, the bad rows with their reason
    with sqlite3.connect(out / "orders.sqlite") as db:
        ids = [row[0] for row in db.execute("SELECT order_id FROM orders")]
    lines = (out / "orders.jsonl").read_text().splitlines()
    assert len(ids) == len(set(ids)) == 114
    assert sorted(json.loads(line)["order_id"] for line in lines) == sorted(ids)
    rejected = [
        json.loads(line) for line in (out / "rejected_orders.jsonl").read_text().splitlines()
    ]
    assert len(rejected) == 6
    assert all("unparseable quantity" in r["reason"] for r in rejected)
    # pipectl came from the clone, into the venv
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import pipectl; print(pipectl.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    assert where.strip().startswith(str(clone))

    # the same from inside examples/quickstart and from an unrelated folder: the same outputs
    # in the same places, one run history (the repository's pipectl.toml makes it one project)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for cwd, file in (
        (clone / "examples" / "quickstart", "pipeline.yaml"),
        (elsewhere, str(clone / "examples" / "quickstart" / "pipeline.yaml")),
    ):
        again = subprocess.run(
            ["pipectl", "run", file], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
        )
        assert again.returncode == 0, again.stdout + again.stderr
        with sqlite3.connect(out / "orders.sqlite") as db:
            assert sorted(r[0] for r in db.execute("SELECT order_id FROM orders")) == sorted(ids)
        assert len((out / "orders.jsonl").read_text().splitlines()) == 114
    assert list(elsewhere.iterdir()) == []
    assert not (clone / "examples" / "quickstart" / ".pipectl").exists()
    history = subprocess.run(
        ["pipectl", "runs", "list", "--json"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert json.loads(history.stdout) == []  # an unrelated folder has no history of its own
    history = subprocess.run(
        ["pipectl", "runs", "list", "--json"],
        cwd=clone / "examples",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert [r["pipeline_name"] for r in json.loads(history.stdout)] == ["quickstart"] * 3
    assert list(elsewhere.iterdir()) == []  # and reading it created nothing

    # pipectl init: a project that runs and whose test passes, in the same fresh venv
    init = subprocess.run(
        [
            "bash",
            "-c",
            "pipectl init demo && cd demo && pipectl run "
            "pipeline.yaml && python -m pip install -q pytest && "
            "python -m pytest -q -p no:cacheprovider",
        ],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert init.returncode == 0, init.stdout + init.stderr
    assert "2 passed" in init.stdout


def loaded(out_dir: Path) -> tuple[list[tuple], list[dict], list[dict]]:
    """What a quick start run left in ``out_dir``: the SQLite rows, the JSON Lines records and
    the rejected rows (without the run id, with the copy's path left out), each sorted."""
    with sqlite3.connect(out_dir / "orders.sqlite") as db:
        rows = sorted(db.execute("SELECT * FROM orders").fetchall())
    lines = sorted(
        (json.loads(line) for line in (out_dir / "orders.jsonl").read_text().splitlines()),
        key=lambda o: o["order_id"],
    )
    rejected = [
        {k: v for k, v in json.loads(line).items() if k != "run_id"}
        for line in (out_dir / "rejected_orders.jsonl").read_text().splitlines()
    ]
    for r in rejected:  # "csv /tmp/.../quickstart/data/orders.csv record 116": the copy's path
        r["position"] = r["position"].replace(str(out_dir.parent), "quickstart")
    return rows, lines, sorted(rejected, key=lambda r: r["position"])


@pytest.mark.slow
def test_the_python_quick_start_is_the_yaml_one_in_python(tmp_path):
    """``python examples/quickstart/pipeline.py``, run from an unrelated folder: the same data
    step as pipeline.yaml, writing the same rows into the same files beside itself."""
    by_python = tmp_path / "python" / "quickstart"
    by_yaml = tmp_path / "yaml" / "quickstart"
    for copy in (by_python, by_yaml):
        shutil.copytree(
            REPO_ROOT / "examples" / "quickstart",
            copy,
            ignore=shutil.ignore_patterns("output", "__pycache__"),
        )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    proc = subprocess.run(
        [sys.executable, str(by_python / "pipeline.py")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=elsewhere,
    )
    yaml_run = subprocess.run(
        [sys.executable, "-m", "pipectl", "run", str(by_yaml / "pipeline.yaml"), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=elsewhere,
    )

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert yaml_run.returncode == 0, yaml_run.stdout + yaml_run.stderr
    assert "Traceback" not in proc.stderr
    out_dir = by_python / "output"
    assert not list(elsewhere.iterdir())  # nothing written where it was run from
    # it prints where the data went, as `pipectl run` does
    assert (
        f"load_orders -> sqlite {out_dir / 'orders.sqlite'} table orders: 114 records"
        in proc.stdout
    )
    assert f"load_orders -> jsonl {out_dir / 'orders.jsonl'}: 114 records" in proc.stdout
    assert (
        f"load_orders: 6 bad records set aside in {out_dir / 'rejected_orders.jsonl'}"
        in proc.stdout
    )
    assert "Chicago" in proc.stdout  # revenue_by_city ran on the table just loaded
    # the same rows as the YAML pipeline, in the same files
    rows, lines, rejected = loaded(out_dir)
    assert (rows, lines, rejected) == loaded(by_yaml / "output")
    # 121 CSV lines: 6 unparseable, 1 repeated order line
    assert len(rows) == len(lines) == 114
    assert {r[0] for r in rows} == {o["order_id"] for o in lines}
    assert all(o["customer_email"] == o["customer_email"].strip().lower() for o in lines)
    assert all(o["city"] == o["city"].title() for o in lines)
    assert len(rejected) == 6 and all("unparseable quantity" in r["reason"] for r in rejected)
