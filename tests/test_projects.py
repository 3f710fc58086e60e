"""Projects: a pipeline file's relative paths resolve against its folder, run history lives in the
project's .pipectl/ whatever folder the command is typed in, the project file's settings apply,
read-only commands create nothing, and `pipectl init` writes a project that runs and tests."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PIPECTL = [sys.executable, "-m", "pipectl"]


def pipectl(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "PIPECTL_HOME"}  # the project decides
    return subprocess.run(
        [*PIPECTL, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=timeout,
    )


def runs_in(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT pipeline_name, status FROM pipeline_executions ORDER BY started_at"
        ).fetchall()


@pytest.fixture
def quickstart(tmp_path: Path) -> Path:
    """A copy of the repository's examples with its project file, in a fresh folder."""
    repo = tmp_path / "repo"
    shutil.copytree(
        ROOT / "examples" / "quickstart",
        repo / "examples" / "quickstart",
        ignore=shutil.ignore_patterns("output", "__pycache__", ".pipectl"),
    )
    shutil.copy(ROOT / "pipectl.toml", repo / "pipectl.toml")
    return repo


@pytest.mark.slow
def test_the_quick_start_gives_the_same_outputs_and_one_history_from_any_folder(
    quickstart, tmp_path
):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    folder = quickstart / "examples" / "quickstart"
    file = "examples/quickstart/pipeline.yaml"
    for cwd, arg in (
        (quickstart, file),
        (folder, "pipeline.yaml"),
        (elsewhere, str(folder / "pipeline.yaml")),
    ):
        proc = pipectl("run", arg, "--no-progress", cwd=cwd)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        with sqlite3.connect(folder / "output" / "orders.sqlite") as db:
            assert db.execute("SELECT count(*) FROM orders").fetchone()[0] == 114
        assert len((folder / "output" / "orders.jsonl").read_text().splitlines()) == 114
    # nothing written beside the shell's folders, one history at the project's root
    assert not (folder / "examples").exists()
    assert not (folder / ".pipectl").exists() and not (elsewhere / ".pipectl").exists()
    assert list(elsewhere.iterdir()) == []
    assert runs_in(quickstart / ".pipectl" / "pipectl.db") == [("quickstart", "success")] * 3
    # and every folder of the project reads that history
    for cwd in (quickstart, folder):
        listed = pipectl("runs", "list", "--json", cwd=cwd)
        assert listed.returncode == 0, listed.stderr
        assert len(json.loads(listed.stdout)) == 3


@pytest.mark.slow
def test_without_a_project_file_the_pipeline_files_folder_is_the_project(tmp_path):
    folder = tmp_path / "pipes"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "in.jsonl").write_text('{"id": 1}\n{"id": 2}\n')
    (folder / "p.yaml").write_text(
        "name: p\nsteps:\n  - name: copy\n    extract: {type: jsonl, path: data/in.jsonl}\n"
        "    load: {type: jsonl, path: out/copy.jsonl}\n"
    )
    proc = pipectl("run", "pipes/p.yaml", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (folder / "out" / "copy.jsonl").read_text().count("\n") == 2
    assert runs_in(folder / ".pipectl" / "pipectl.db") == [("p", "success")]
    assert not (tmp_path / ".pipectl").exists() and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_path_params_resolve_against_the_file_but_given_values_against_the_shell(tmp_path):
    project = tmp_path / "proj"
    (project / "sub").mkdir(parents=True)
    (project / "pipectl.toml").write_text('[params]\nproject_dir = "from-project"\n')
    (project / "sub" / "p.yaml").write_text(
        "name: p\nparams:\n"
        "  file_dir: {type: path, default: here}\n"
        "  project_dir: {type: path, default: unused}\n"
        "  given: {type: path, default: unused}\n"
        "  text: {type: str, default: stays/relative}\n"
        "steps:\n  - name: show\n    run: show:main\n"
    )
    (project / "sub" / "show.py").write_text(
        "import json\n\ndef main(params):\n    print('PARAMS=' + json.dumps(dict(params)))\n"
        "    return params\n"
    )
    shell = tmp_path / "shell"
    shell.mkdir()
    proc = pipectl(
        "run", str(project / "sub" / "p.yaml"), "-p", "given=mine.csv", "--no-progress", cwd=shell
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(
        x for x in proc.stdout.splitlines() + proc.stderr.splitlines() if x.startswith("PARAMS=")
    )
    params = json.loads(line[len("PARAMS=") :])
    assert params == {
        "file_dir": str(project / "sub" / "here"),
        "project_dir": str(project / "from-project"),
        "given": str(shell / "mine.csv"),
        "text": "stays/relative",
    }


@pytest.mark.slow
def test_the_project_file_sets_tracker_params_story_and_plugins(tmp_path):
    (tmp_path / "pipectl.toml").write_text(
        'tracker = "sqlite:///history/runs.db"\n'
        'story = "stories/{pipeline}.md"\n'
        'disable_plugins = ["dask"]\n'
        'env_file = ".env"\n'
        '[params]\ngreeting = "hello from the project"\n'
    )
    (tmp_path / ".env").write_text("WHO=the env file\n")
    (tmp_path / "pipes").mkdir()
    (tmp_path / "pipes" / "p.yaml").write_text(
        "name: p\nparams:\n  greeting: {type: str, default: hi}\n"
        "  who: {type: str, default: '${env.WHO}'}\n"
        "steps:\n  - name: greet\n    run: greet:main\n"
    )
    (tmp_path / "pipes" / "greet.py").write_text(
        "def main(params):\n    return f\"{params['greeting']}, {params['who']}\"\n"
    )
    proc = pipectl(
        "run", "p.yaml", "--no-progress", "-v", "--log-format", "json", cwd=tmp_path / "pipes"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert runs_in(tmp_path / "history" / "runs.db") == [("p", "success")]
    assert not (tmp_path / ".pipectl" / "pipectl.db").exists()
    story = (tmp_path / "stories" / "p.md").read_text()
    assert "| `greeting` | `hello from the project` |" in story
    assert "| `who` | `the env file` |" in story
    events = [json.loads(line) for line in proc.stderr.splitlines()]
    plugins = next(e for e in events if e["event"] == "plugins")["plugins"]
    assert {"dask": "blocked"}.items() <= {p["name"]: p["status"] for p in plugins}.items()


@pytest.mark.parametrize(
    "text, fragment",
    [
        ('trackr = "sqlite:///x.db"\n', "trackr: unknown setting; did you mean 'tracker'?"),
        ('tracker = "x.db"\n', "tracker: 'x.db' is not a URL"),
        ("[retention]\nkeep = 0\n", "retention.keep: expected a whole number"),
        ('[retention]\nolder_than = "soon"\n', "retention.older_than"),
        ('disable_plugins = "dask"\n', "disable_plugins: expected a list of plugin names"),
        ("tracker = \n", "not valid TOML"),
    ],
)
def test_a_bad_project_file_is_named_with_exit_2(tmp_path, text, fragment):
    (tmp_path / "pipectl.toml").write_text(text)
    (tmp_path / "p.yaml").write_text("name: p\nsteps:\n  - name: a\n    run: os:getcwd\n")
    proc = pipectl("run", "p.yaml", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "pipectl.toml" in proc.stderr and fragment in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / ".pipectl").exists()


@pytest.mark.slow
def test_pyproject_tool_pipectl_is_a_project_file(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.pipectl]\ntracker = "sqlite:///var/t.db"\n'
    )
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "p.yaml").write_text(
        "name: p\nsteps:\n  - name: a\n    run: os:getcwd\n"
    )
    proc = pipectl("run", "p.yaml", "--no-progress", cwd=tmp_path / "a" / "b")
    assert proc.returncode == 0, proc.stderr
    assert runs_in(tmp_path / "var" / "t.db") == [("p", "success")]
    listed = pipectl("runs", "list", cwd=tmp_path / "a")
    assert "p" in listed.stdout and "success" in listed.stdout


@pytest.mark.slow
def test_read_only_commands_create_nothing(tmp_path):
    (tmp_path / "p.yaml").write_text("name: p\nsteps:\n  - name: a\n    run: os:getcwd\n")
    listed = pipectl("runs", "list", cwd=tmp_path)
    assert listed.returncode == 0 and "no runs recorded" in listed.stdout
    assert json.loads(pipectl("runs", "list", "--json", cwd=tmp_path).stdout) == []
    shown = pipectl("runs", "show", "latest", cwd=tmp_path)
    assert shown.returncode == 2 and "no runs recorded" in shown.stderr
    story = pipectl("story", "latest", cwd=tmp_path)
    assert story.returncode == 2 and "Traceback" not in story.stderr
    for args in (("validate", "p.yaml"), ("graph", "p.yaml"), ("run", "p.yaml", "--dry-run")):
        assert pipectl(*args, cwd=tmp_path).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.yaml"]


@pytest.mark.slow
def test_pipectl_home_still_wins(tmp_path):
    (tmp_path / "pipectl.toml").write_text("")
    (tmp_path / "p.yaml").write_text("name: p\nsteps:\n  - name: a\n    run: os:getcwd\n")
    home = tmp_path / "home"
    proc = pipectl("run", "p.yaml", "--no-progress", cwd=tmp_path, env={"PIPECTL_HOME": str(home)})
    assert proc.returncode == 0, proc.stderr
    assert runs_in(home / "pipectl.db") == [("p", "success")]
    assert not (tmp_path / ".pipectl").exists()


@pytest.mark.slow
def test_verbose_shows_the_plan_and_scheduling_as_json(tmp_path):
    (tmp_path / "p.yaml").write_text(
        "name: p\nmax_concurrent: 1\nsteps:\n"
        "  - {name: a, run: 'os:getcwd'}\n  - {name: b, run: 'os:getcwd'}\n"
        "  - {name: c, run: 'os:getcwd', depends_on: [a, b]}\n"
    )
    quiet = pipectl("run", "p.yaml", "--log-format", "json", cwd=tmp_path)
    loud = pipectl("run", "p.yaml", "--log-format", "json", "-v", cwd=tmp_path)
    assert quiet.returncode == loud.returncode == 0, loud.stderr
    assert all(json.loads(line)["level"] != "debug" for line in quiet.stderr.splitlines())
    events = [json.loads(line) for line in loud.stderr.splitlines()]
    by_name = {e["event"]: e for e in events}
    assert by_name["plan"]["levels"] == [["a", "b"], ["c"]]
    assert by_name["plan"]["max_concurrent"] == 1
    assert {"plugins", "project", "step_ready"} <= by_name.keys()
    assert by_name["project"]["root"] == str(tmp_path)


@pytest.mark.slow
def test_init_writes_a_project_that_runs_and_passes_its_tests(tmp_path):
    made = pipectl("init", "demo", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    demo = tmp_path / "demo"
    assert {"pipectl.toml", "pipeline.yaml", "steps.py", "data", "tests", ".gitignore"} <= {
        p.name for p in demo.iterdir()
    }
    ran = pipectl("run", "pipeline.yaml", "--no-progress", cwd=demo)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "1 bad records set aside" in ran.stdout
    assert runs_in(demo / ".pipectl" / "pipectl.db") == [("orders", "success")]
    tested = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=demo,
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "PIPECTL_HOME"},
    )
    assert "2 passed" in tested.stdout, tested.stdout + tested.stderr
    # the tests ran in a temporary home: the project's history did not grow
    assert len(runs_in(demo / ".pipectl" / "pipectl.db")) == 1
    again = pipectl("init", "demo", cwd=tmp_path)
    assert again.returncode == 2 and "exists" in again.stderr


@pytest.mark.slow
def test_the_project_retention_prunes_after_each_run(tmp_path):
    (tmp_path / "pipectl.toml").write_text("[retention]\nkeep = 2\n")
    (tmp_path / "p.yaml").write_text("name: p\nsteps:\n  - name: a\n    run: os:getcwd\n")
    (tmp_path / "q.yaml").write_text("name: q\nsteps:\n  - name: a\n    run: os:getcwd\n")
    assert pipectl("run", "q.yaml", "--no-progress", cwd=tmp_path).returncode == 0
    outputs = []
    for _ in range(4):
        proc = pipectl("run", "p.yaml", "--no-progress", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        outputs.append(proc.stderr)
    db = tmp_path / ".pipectl" / "pipectl.db"
    assert runs_in(db) == [("q", "success"), ("p", "success"), ("p", "success")]
    assert "pruned 1 old run(s)" in outputs[-1] and "pruned" not in outputs[1]
    # and the stored outputs of the pruned runs went with them
    with sqlite3.connect(db) as conn:
        kept = {r for (r,) in conn.execute("SELECT execution_id FROM pipeline_executions")}
    stored = {p.name for p in (tmp_path / ".pipectl" / "results").iterdir()}
    assert stored <= kept and len(stored) == 3
