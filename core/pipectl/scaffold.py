"""``pipectl new plugin``: the skeleton of a plugin distribution that installs and works at once.

The names follow the conventions of docs/plugins.md: distribution ``pipectl-NAME``, module
``pipectl_NAME``, entry point ``NAME`` in the group ``pipectl``. Each kind gets a component that
does something real and small (an extractor of numbered records, a JSON Lines output, a
SQLite tracker on its own URL scheme, a listener that counts step outcomes), registered with
its heavy import inside the factory, and a test on the ``pipectl.testing`` fixtures that passes
as written. The layout is the one of the plugins in pipectl's repository (``plugins/``): the
package under ``src/``, ``tests/``, README and CHANGELOG beside ``pyproject.toml``.
"""

from __future__ import annotations

import re
from pathlib import Path

KINDS = ("extractor", "output", "tracker", "listener")

_NAME = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")


def names(name: str) -> tuple[str, str, str]:
    """(distribution, module, entry point) of a plugin called ``name`` (``weather``,
    ``pipectl-weather`` and ``pipectl_weather`` all give ``pipectl-weather``,
    ``pipectl_weather``, ``weather``)."""
    short = name.strip().lower()
    for prefix in ("pipectl-", "pipectl_"):
        if short.startswith(prefix):
            short = short[len(prefix) :]
    if not _NAME.match(short):
        raise ValueError(
            f"{name!r} is not a plugin name: lowercase letters and digits, words "
            "joined by - or _ (like weather or s3-files)"
        )
    entry = short.replace("_", "-")
    return f"pipectl-{entry}", f"pipectl_{entry.replace('-', '_')}", entry


def files(name: str, kind: str, pipectl_version: str) -> dict[str, str]:
    """The files of the skeleton, by path relative to the distribution's folder."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}: one of {', '.join(KINDS)}")
    dist, module, entry = names(name)
    cls = "".join(part.capitalize() for part in re.split(r"[-_]", entry))
    major, minor = (pipectl_version.split(".") + ["0"])[:2]
    next_minor = f"{major}.{int(minor) + 1}" if minor.isdigit() else "1"
    fill = {
        "dist": dist,
        "module": module,
        "entry": entry,
        "cls": cls,
        "kind": kind,
        "version": pipectl_version,
        "next_minor": next_minor,
    }
    out = {
        "pyproject.toml": _PYPROJECT,
        "README.md": _README,
        "CHANGELOG.md": _CHANGELOG,
        f"src/{module}/__init__.py": (
            '"""{dist}: a pipectl {kind} plugin."""\n\n__version__ = "0.1.0"\n'
        ),
        f"src/{module}/plugin.py": _PLUGIN[kind],
        f"tests/test_{module}.py": _TESTS[kind],
    }
    if kind != "listener":
        out[f"src/{module}/{kind}.py"] = _COMPONENT[kind]
    return {path.format(**fill): text.format(**fill) for path, text in out.items()}


def write(target: Path, name: str, kind: str, pipectl_version: str) -> list[Path]:
    """Write the skeleton under ``target`` (which must not exist); returns the files."""
    if target.exists():
        raise FileExistsError(f"{target} exists: pick another name or folder (-o)")
    written = []
    for relative, text in files(name, kind, pipectl_version).items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


# -- templates (str.format: literal braces are doubled) ----------------------------------------

_PYPROJECT = """[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
dynamic = ["version"]
description = "A pipectl {kind} plugin."
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["pipectl>={version},<{next_minor}"]  # the pipectl versions it was written for

[project.optional-dependencies]
test = ["pytest>=8"]

# pipectl finds the plugin through this entry point: group "pipectl", name "{entry}"
[project.entry-points.pipectl]
{entry} = "{module}.plugin"

[tool.setuptools.dynamic]
version = {{ attr = "{module}.__version__" }}

[tool.setuptools.packages.find]
where = ["src"]
"""

_README = """# {dist}

A pipectl {kind} plugin.

```bash
pip install -e .                # pipectl finds it through its entry point
pipectl plugins                 # lists "{entry}" with this distribution's version
pip install -e '.[test]' && pytest
```

The plugin module (`src/{module}/plugin.py`) registers the component through pipectl's hooks and
imports nothing heavy: put heavy imports inside the factory, which runs only when a pipeline
uses the component. See pipectl's plugin author guide (docs/plugins.md).
"""

_CHANGELOG = """# Changelog

## [Unreleased]

### Added
- The {kind} `{entry}`.
"""

_PLUGIN = {
    "extractor": '''"""The plugin module: registers the ``{entry}`` extractor. Imported at every pipectl start,
so it imports nothing heavy: the component is imported by the factory, on use."""

from pipectl import hookimpl


def make_extractor(**options):
    from {module}.extractor import {cls}Extractor

    return {cls}Extractor(**options)


@hookimpl
def pipectl_register_extractors(register):
    register("{entry}", make_extractor)
''',
    "output": '''"""The plugin module: registers the ``{entry}`` output. Imported at every pipectl start,
so it imports nothing heavy: the component is imported by the factory, on use."""

from pipectl import hookimpl


def make_output(**options):
    from {module}.output import {cls}Output

    return {cls}Output(**options)


@hookimpl
def pipectl_register_outputs(register):
    register("{entry}", make_output)
''',
    "tracker": '''"""The plugin module: registers a run tracker for ``{entry}://`` URLs. Imported at every
pipectl start, so it imports nothing heavy: the tracker is imported by the factory, on use."""

from pipectl import hookimpl


def make_tracker(url):
    from {module}.tracker import {cls}Tracker

    return {cls}Tracker(url)


@hookimpl
def pipectl_register_trackers(register):
    register("{entry}", make_tracker)
''',
    "listener": '''"""The plugin module: a lifecycle listener counting how the steps of every run end.

Listeners are called once per run, step or attempt (never per record), one at a time, maybe
from a worker thread: keep them short. An exception in one is logged and the run goes on."""

from collections import Counter

from pipectl import hookimpl

#: ``(pipeline, status)`` -> how many steps ended so, over the runs of this process
OUTCOMES = Counter()
#: ``(pipeline, run status)`` of every run that ended
RUNS = []


@hookimpl
def pipectl_step_finish(run, step, result):
    OUTCOMES[(run.pipeline_id, result.status.value)] += 1


@hookimpl
def pipectl_run_finish(run):
    RUNS.append((run.pipeline_id, run.status.value))
''',
}

_COMPONENT = {
    "extractor": '''"""The ``{entry}`` extractor: ``count`` numbered records, in batches of ``batch_size``.

Replace the body of ``batches`` with your source (an API, a file format, a database); keep
the contract: ``batches(ctx)`` yields lists of dicts (sync or async), ``describe()`` names
the source in messages, and a record that cannot be read goes to
``ctx.bad_record(raw, reason, position)``.
"""


class {cls}Extractor:
    def __init__(self, *, count: int = 10, batch_size: int = 1000):
        if not isinstance(count, int) or count < 0:
            raise ValueError(f"count must be an integer >= 0, got {{count!r}}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {{batch_size!r}}")
        self.count = count
        self.batch_size = batch_size

    def describe(self) -> str:
        return f"{entry} ({{self.count}} records)"

    def batches(self, ctx):
        for start in range(0, self.count, self.batch_size):
            stop = min(start + self.batch_size, self.count)
            yield [{{"id": i, "source": "{entry}"}} for i in range(start, stop)]
''',
    "output": '''"""The ``{entry}`` output: records as JSON Lines in ``path``, all or nothing per attempt.

The contract (see pipectl.loads): ``guarantee`` says why a retried step never writes a record
twice ("transactional": nothing is visible before ``commit``); ``open``, ``write``, ``commit``
or ``abort``, and always ``close``, are called in that order for each attempt. For exactly
once across crashes, ``commit`` makes the records and a marker of the load (``ctx.load``)
visible in one step, ``loaded(load)`` finds the marker of a load again (a resume skips it), and
``last_load(load)`` gives the latest marker of the step, whose ``state`` is the cursor the next
run starts from. Here the marker is a file beside ``path`` that names the inode of the file it
describes, written before the one rename that commits (pipectl.loads.FileMarker).
"""

import json
import os

from pipectl.loads import FileMarker, remove_stale_temp_files, temp_prefix


class {cls}Output:
    guarantee = "transactional"

    def __init__(self, *, path: str):
        if not isinstance(path, str) or not path:
            raise ValueError(f"path must be a file path, got {{path!r}}")
        self.path = path
        self._tmp = None
        self._file = None
        self._load = None

    def describe(self) -> str:
        return f"{entry} {{self.path}}"

    def open(self, ctx):
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        remove_stale_temp_files(self.path)  # left by pipectl processes that died
        self._load = getattr(ctx, "load", None)
        self._tmp = os.path.join(directory, f"{{temp_prefix(self.path)}}{{os.urandom(4).hex()}}.tmp")
        self._file = open(self._tmp, "w", encoding="utf-8")

    def write(self, batch):
        self._file.writelines(json.dumps(record) + "\\n" for record in batch)

    def commit(self):
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        if self._load is not None:  # valid only once the rename below is done
            FileMarker(self.path).prepare(self._tmp, self._load.marker(), keep=False)
        os.replace(self._tmp, self.path)  # readers see the old file or the new one
        self._file = self._tmp = None

    def loaded(self, load):
        return FileMarker(self.path).find(load)

    def last_load(self, load):
        return FileMarker(self.path).last(load)

    def abort(self):
        if self._file is not None:
            self._file.close()
            os.unlink(self._tmp)
            self._file = self._tmp = None

    def close(self):
        self.abort()
''',
    "tracker": '''"""A run tracker for ``{entry}:///path/to/file.db`` URLs.

A tracker is anything with the methods of :class:`pipectl.tracking.Tracker` (it records the
typed events of a run, and reads runs back). On a SQL database,
:class:`pipectl.tracking.SQLTracker` keeps the tables, the statements, the writer thread,
resume and retention, and a :class:`pipectl.tracking.SQLDialect` says what the database does
its own way: how to connect, its placeholder, how a write transaction starts, which errors
are worth retrying. This one keeps the runs in an SQLite file with the built-in dialect,
under its own URL scheme: give it your database's dialect instead.
"""

from pathlib import Path

from pipectl.tracking import SQLTracker, SqliteDialect


class {cls}Tracker(SQLTracker):
    def __init__(self, url: str):
        scheme = "{entry}:///"
        if not url.startswith(scheme):
            raise ValueError(f"a {entry} tracker URL is {{scheme}}path/to/file.db, got {{url!r}}")
        path = Path(url[len(scheme):])
        path.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(SqliteDialect(path), url=url, results=path.parent / "results")
''',
}

_TESTS = {
    "extractor": '''"""The ``{entry}`` extractor through pipectl, with the pipectl.testing fixtures."""

from pipectl import Pipeline

from {module} import plugin


def test_the_extractor_feeds_a_data_step(plugin_manager, register_plugin):
    register_plugin(plugin, name="{entry}")
    rows = []

    class Keep:
        guarantee = "transactional"

        def describe(self):
            return "keep"

        def open(self, ctx):
            self.pending = []

        def write(self, batch):
            self.pending.extend(batch)

        def commit(self):
            rows.extend(self.pending)

        def abort(self):
            self.pending = []

        def close(self):
            pass

    pipe = Pipeline("test-{entry}", plugin_manager=plugin_manager)
    pipe.data_step("load", extractor={{"type": "{entry}", "count": 25, "batch_size": 10}},
                   outputs=[Keep()])
    run = pipe.run_sync()
    assert run.ok, run.errors
    assert [r["id"] for r in rows] == list(range(25))
    assert run.steps["load"].records == 25
''',
    "output": '''"""The ``{entry}`` output through pipectl, with the pipectl.testing fixtures."""

import json

from pipectl import Pipeline
from pipectl.testing import check_output_contract

from {module} import plugin
from {module}.output import {cls}Output


def test_the_output_writes_every_record_once(plugin_manager, register_plugin, tmp_path):
    register_plugin(plugin, name="{entry}")
    target = tmp_path / "out.jsonl"

    def numbers():
        yield [{{"id": i}} for i in range(7)]

    pipe = Pipeline("test-{entry}", plugin_manager=plugin_manager)
    pipe.data_step("load", extractor={{"type": "python", "function": numbers}},
                   outputs=[{{"type": "{entry}", "path": str(target)}}])
    run = pipe.run_sync()
    assert run.ok, run.errors
    lines = target.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == list(range(7))


def test_the_output_keeps_the_exactly_once_contract(tmp_path):
    target = tmp_path / "contract.jsonl"

    def read():
        if not target.exists():
            return []
        return [json.loads(line) for line in target.read_text().splitlines()]

    check_output_contract(lambda: {cls}Output(path=str(target)), read)
''',
    "tracker": '''"""The ``{entry}`` tracker records a run, read back from it."""

from pipectl import Pipeline

from {module} import plugin


def test_the_tracker_records_a_run(plugin_manager, register_plugin, tmp_path):
    register_plugin(plugin, name="{entry}")
    url = f"{entry}:///{{tmp_path / 'runs.db'}}"
    pipe = Pipeline("test-{entry}", plugin_manager=plugin_manager)
    pipe.add_step("hello", lambda: "hello")
    run = pipe.run_sync(tracker=url)
    assert run.ok, run.errors

    from {module}.tracker import {cls}Tracker

    tracker = {cls}Tracker(url)
    record = tracker.get_run("latest")
    tracker.close()
    assert record["run_id"] == run.run_id and record["status"] == "success"
    assert [s["step_id"] for s in record["steps"]] == ["hello"]


def test_the_tracker_keeps_the_contract(tmp_path, monkeypatch):
    from pipectl.testing import check_tracker_contract

    from {module}.tracker import {cls}Tracker

    monkeypatch.setenv("PIPECTL_HOME", str(tmp_path / "home"))
    check_tracker_contract(lambda: {cls}Tracker(f"{entry}:///{{tmp_path / 'contract.db'}}"))
''',
    "listener": '''"""The listener sees every step of a run end, with the pipectl.testing fixtures."""

from pipectl import Pipeline

from {module} import plugin


def test_the_listener_counts_step_outcomes(plugin_manager, register_plugin):
    register_plugin(plugin, name="{entry}")
    pipe = Pipeline("test-{entry}", plugin_manager=plugin_manager)
    pipe.add_step("ok", lambda: 1)
    pipe.add_step("boom", lambda: 1 / 0)
    pipe.add_step("after", lambda boom: 2, depends_on=["boom"])
    run = pipe.run_sync()
    assert not run.ok
    counts = {{status: n for (name, status), n in plugin.OUTCOMES.items()
              if name == "test-{entry}"}}
    assert counts == {{"success": 1, "failed": 1, "skipped": 1}}
    assert plugin.RUNS[-1] == ("test-{entry}", "failed")
''',
}


# -- pipectl init: a small runnable project ------------------------------------------------------


def project_files() -> dict[str, str]:
    """The files ``pipectl init`` writes, by path relative to the project's folder."""
    return dict(_PROJECT)


def write_project(target: Path) -> list[Path]:
    """Write a new project into ``target`` (created if missing; it must hold none of the
    files, so nothing of the user's is overwritten); returns the files written."""
    files_ = project_files()
    taken = [rel for rel in files_ if (target / rel).exists()]
    if taken:
        raise FileExistsError(
            f"{target / taken[0]} exists: pipectl init writes a new project "
            "into an empty folder (or one without these files)"
        )
    written = []
    for relative, text in files_.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


_PROJECT = {
    "pipectl.toml": """# The project file. pipectl finds it by walking up from a pipeline file, so every pipeline
# below this folder shares these settings, from whatever folder `pipectl run` is typed in.
# Relative paths in a pipeline file are relative to that file; run history lives in .pipectl/.

# Where runs are recorded (relative to this folder), or postgresql://user@host/db.
tracker = "sqlite:///.pipectl/pipectl.db"

# Variables for ${env.NAME} in pipeline files, loaded when the file exists (the environment
# wins over it). Keep secrets there, out of git.
env_file = ".env"

# Installed plugins this project does not use (as `pipectl -p no:NAME`).
disable_plugins = []

# Write each run's story (an HTML report); {pipeline}, {run_id} and {short_id} are filled in.
# story = "stories/{pipeline}-{short_id}.html"

# Defaults for the params the pipelines declare (a pipeline's own default loses to these,
# -p NAME=VALUE wins over both).
[params]
currency = "EUR"

# Pruned after each `pipectl run`: the runs of each pipeline beyond the latest 50 (and their
# stored outputs). `pipectl runs prune` does it by hand.
[retention]
keep = 50
""",
    "pipeline.yaml": """# Load the sample orders into SQLite, setting aside the rows that cannot be parsed, then
# total the paid orders per city.
#
#   pipectl run pipeline.yaml          (from any folder: paths are relative to this file)
#   pipectl runs list                  (what ran, from the project's tracker)
name: orders
description: load the sample orders into SQLite, then total them per city
params:
  source: {type: path, default: data/orders.csv}
  out: {type: path, default: output}
  currency: {type: str, default: USD}     # the project file's [params] sets EUR

steps:
  - name: load_orders
    description: stream the CSV through parse_order into SQLite, in one transaction
    extract: {type: csv, path: "${params.source}"}
    transform: [steps:parse_order]
    load:
      - {type: sqlite, path: "${params.out}/orders.sqlite", table: orders, key: order_id}
    on_bad_record: dead_letter           # a row parse_order rejects is set aside, with why
    dead_letter: "${params.out}/rejected.jsonl"
    retries: 2

  - name: totals
    description: paid revenue per city, read back from the table
    run: steps:totals_by_city
    depends_on: [load_orders]
""",
    "steps.py": '''"""The project's step code: a per-record transform and a step function."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def parse_order(row: dict) -> dict:
    """One CSV row to a clean order; raising sets the row aside (on_bad_record: dead_letter)."""
    try:
        quantity, price = int(row["quantity"]), float(row["unit_price"])
    except ValueError:
        raise ValueError(f"bad quantity {row['quantity']!r} or price {row['unit_price']!r}") \\
            from None
    return {"order_id": row["order_id"], "city": row["city"], "status": row["status"],
            "quantity": quantity, "amount": round(quantity * price, 2)}


def totals_by_city(params: dict) -> dict:
    """Paid revenue per city, in the project's currency."""
    with sqlite3.connect(Path(params["out"]) / "orders.sqlite") as db:
        rows = db.execute("SELECT city, round(sum(amount), 2) FROM orders "
                          "WHERE status = 'paid' GROUP BY city ORDER BY city").fetchall()
    return {"currency": params["currency"], "revenue": dict(rows)}
''',
    "data/orders.csv": """order_id,city,status,quantity,unit_price
A-1,Lisbon,paid,2,12.50
A-2,Porto,paid,1,40.00
A-3,Lisbon,pending,3,9.99
A-4,Porto,paid,two,5.00
A-5,Lisbon,paid,1,7.50
A-6,Braga,paid,4,2.25
""",
    "tests/test_pipeline.py": '''"""The pipeline, run as `pipectl run` runs it (the project's param defaults too), into a
temporary folder: `run_pipeline` is a fixture of pipectl's test kit (pipectl.testing)."""

import json
import sqlite3
from pathlib import Path

PIPELINE = Path(__file__).resolve().parent.parent / "pipeline.yaml"


def test_orders_are_loaded_and_totalled(run_pipeline, tmp_path):
    run = run_pipeline(PIPELINE, params={"out": str(tmp_path)})

    assert run.status.value == "success", run.errors
    with sqlite3.connect(tmp_path / "orders.sqlite") as db:
        assert db.execute("SELECT count(*) FROM orders").fetchone()[0] == 5
    assert run.steps["totals"].output == {
        "currency": "EUR",  # from pipectl.toml's [params]
        "revenue": {"Braga": 9.0, "Lisbon": 32.5, "Porto": 40.0},
    }


def test_a_row_that_cannot_be_parsed_is_set_aside(run_pipeline, tmp_path):
    run_pipeline(PIPELINE, params={"out": str(tmp_path)})

    rejected = [json.loads(line) for line in (tmp_path / "rejected.jsonl").open()]
    assert [r["record"]["order_id"] for r in rejected] == ["A-4"]
''',
    ".gitignore": """.pipectl/
output/
stories/
.env
__pycache__/
.pytest_cache/
""",
    ".env.example": """# Copy to .env (which git ignores) and fill in: pipectl loads it before each run.
# DATABASE_PASSWORD=...
""",
}
