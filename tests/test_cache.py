"""Step caching: ``cache:`` on a step (YAML and Python). A second run of an unchanged cached
step does not call it and records a cache hit; changing its code, an input or a param, or
``--no-cache`` / ``--refresh``, runs it again; so does an expired entry. The cache is kept in
the tracker's result store, authenticated: a planted entry is never unpickled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import CallLog

from pipectl import Cache, Pipeline, hookimpl
from pipectl.errors import PipelineValidationError
from pipectl.files import PipelineFileError

PIPECTL = [sys.executable, "-m", "pipectl.cli"]


def pipectl(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PIPECTL, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(cwd), "PIPECTL_HOME": str(cwd / ".home"), **env},
    )


def shown(cwd: Path) -> dict[str, Any]:
    """The latest run of the project, as ``pipectl runs show latest --json`` prints it."""
    out = pipectl("runs", "show", "latest", "--json", cwd=cwd)
    assert out.returncode == 0, out.stderr
    record: dict[str, Any] = json.loads(out.stdout)
    return record


def step_of(record: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in record["steps"] if s["step_name"] == name)


# -- the CLI, on a pipeline file ----------------------------------------------------------------

STEPS = """
from pathlib import Path

def source(params):
    return list(range(int(params["n"])))

def expensive(source):
    with open("calls.txt", "a") as f:
        f.write("expensive\\n")
    return sum(source) * {factor}

def report(expensive):
    return {{"total": expensive}}
"""

FILE = """\
name: shop
params:
  n: {type: int, default: 4}
steps:
  - name: source
    run: cache_steps:source
  - name: expensive
    run: cache_steps:expensive
    inputs: {source: source}
    cache: true
  - name: report
    run: cache_steps:report
    inputs: {expensive: expensive}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "cache_steps.py").write_text(STEPS.format(factor=10))
    (tmp_path / "shop.yaml").write_text(FILE)
    return tmp_path


def calls(folder: Path) -> int:
    path = folder / "calls.txt"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_a_second_run_takes_the_output_from_the_cache_and_records_a_hit(project):
    first = pipectl("run", "shop.yaml", cwd=project)
    assert first.returncode == 0, first.stderr
    first_id = shown(project)["run_id"]
    assert calls(project) == 1
    second = pipectl("run", "shop.yaml", cwd=project)
    assert second.returncode == 0, second.stderr
    assert calls(project) == 1  # not called again
    assert "cached" in second.stdout
    assert "1 step from the cache" in second.stdout
    record = shown(project)
    step = step_of(record, "expensive")
    assert step["status"] == "success"
    assert step["cached_from"] == first_id
    assert step["attempts"] == 0
    assert step_of(record, "report")["output_summary"] == {"total": 60}
    table = pipectl("runs", "show", "latest", cwd=project)
    assert "cached" in table.stdout and "from the cache" in table.stdout


def test_changed_code_input_or_param_runs_the_step_again(project):
    assert pipectl("run", "shop.yaml", cwd=project).returncode == 0
    assert pipectl("run", "shop.yaml", cwd=project).returncode == 0
    assert calls(project) == 1
    # its code changed
    (project / "cache_steps.py").write_text(STEPS.format(factor=11))
    assert pipectl("run", "shop.yaml", cwd=project).returncode == 0
    assert calls(project) == 2
    assert step_of(shown(project), "report")["output_summary"] == {"total": 66}
    assert pipectl("run", "shop.yaml", cwd=project).returncode == 0
    assert calls(project) == 2
    # an input changed (the upstream step's output, through a param of that step)
    assert pipectl("run", "shop.yaml", "-p", "n=5", cwd=project).returncode == 0
    assert calls(project) == 3
    assert step_of(shown(project), "report")["output_summary"] == {"total": 110}
    # the same input again: a hit, whichever run stored it
    assert pipectl("run", "shop.yaml", "-p", "n=4", cwd=project).returncode == 0
    assert calls(project) == 3


def test_no_cache_and_refresh_run_the_step_again(project):
    assert pipectl("run", "shop.yaml", cwd=project).returncode == 0
    no_cache = pipectl("run", "shop.yaml", "--no-cache", cwd=project)
    assert no_cache.returncode == 0, no_cache.stderr
    assert calls(project) == 2
    assert step_of(shown(project), "expensive")["cached_from"] is None
    refreshed = pipectl("run", "shop.yaml", "--refresh", "expensive", cwd=project)
    assert refreshed.returncode == 0, refreshed.stderr
    assert calls(project) == 3
    refreshed_id = shown(project)["run_id"]
    # the refresh stored its new output: the next run takes it from that run
    assert pipectl("run", "shop.yaml", cwd=project).returncode == 0
    assert calls(project) == 3
    assert step_of(shown(project), "expensive")["cached_from"] == refreshed_id


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--refresh", "expensiv"], "did you mean 'expensive'"),
        (["--refresh", "report"], "step 'report' of pipeline 'shop' is not cached"),
        (["--refresh", "expensive", "--no-cache"], "give one"),
    ],
)
def test_bad_refresh_is_a_clear_error(project, args, message):
    out = pipectl("run", "shop.yaml", *args, cwd=project)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert calls(project) == 0  # nothing ran


@pytest.mark.parametrize(
    ("cache", "line", "message"),
    [
        ("cache: {expires: soon}", "steps.expensive.cache.expires", "duration"),
        ("cache: {ttl: 1h}", "steps.expensive.cache.ttl", "unknown field"),
        ("cache: {key: nomodule_here:key}", "steps.expensive.cache.key", "nomodule_here"),
        ("cache: sometimes", "steps.expensive.cache", "expected true, false"),
        ("cache: {expires: 0}", "steps.expensive.cache.expires", "above 0"),
    ],
)
def test_a_bad_cache_field_names_its_file_and_line(project, cache, line, message):
    (project / "shop.yaml").write_text(FILE.replace("cache: true", cache))
    out = pipectl("validate", "shop.yaml", cwd=project)
    assert out.returncode == 2
    assert f"shop.yaml:10: {line}" in out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_a_set_of_strings_hashes_the_same_in_another_process(tmp_path):
    (tmp_path / "set_steps.py").write_text(
        textwrap.dedent(
            """
            def tags():
                return {"tags": {f"tag-{i}" for i in range(50)}, "ids": frozenset("abcdef")}

            def count(tags):
                with open("calls.txt", "a") as f:
                    f.write("count\\n")
                return len(tags["tags"])
            """
        )
    )
    (tmp_path / "t.yaml").write_text(
        "name: t\nsteps:\n  - name: tags\n    run: set_steps:tags\n"
        "  - name: count\n    run: set_steps:count\n    inputs: {tags: tags}\n    cache: true\n"
    )
    for seed in ("1", "2"):  # string hashing, so a set's order, differs between the two
        out = pipectl("run", "t.yaml", cwd=tmp_path, PYTHONHASHSEED=seed)
        assert out.returncode == 0, out.stderr
    assert calls(tmp_path) == 1
    assert step_of(shown(tmp_path), "count")["cached_from"] is not None


# -- the Python API ---------------------------------------------------------------------------


def _tracker(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'runs.db'}"


def _counted(tmp_path: Path, **options: Any) -> tuple[Pipeline, CallLog]:
    log = CallLog(tmp_path / "calls")
    pipe = Pipeline("p")

    @pipe.step
    def source() -> list[int]:
        return [1, 2, 3]

    @pipe.step(cache=options.pop("cache", True), depends_on="source", **options)
    def expensive(source: list[int]) -> int:
        log.record("expensive")
        return sum(source)

    return pipe, log


def test_python_cache_true_hits_on_the_second_run(tmp_path):
    pipe, log = _counted(tmp_path)
    first = pipe.run_sync(tracker=_tracker(tmp_path))
    second = pipe.run_sync(tracker=_tracker(tmp_path))
    assert first.ok and second.ok
    assert len(log) == 1
    assert second.steps["expensive"].cached_from == first.run_id
    assert second.steps["expensive"].output == 6
    assert second.steps["expensive"].attempts == 0
    assert first.steps["expensive"].cached_from is None


def test_an_expired_entry_runs_the_step_again(tmp_path):
    pipe, log = _counted(tmp_path, cache=Cache(expires=0.3))
    pipe.run_sync(tracker=_tracker(tmp_path))
    pipe.run_sync(tracker=_tracker(tmp_path))
    assert len(log) == 1  # still fresh
    time.sleep(0.4)
    again = pipe.run_sync(tracker=_tracker(tmp_path))
    assert len(log) == 2
    assert again.steps["expensive"].cached_from is None
    assert pipe.run_sync(tracker=_tracker(tmp_path)).steps["expensive"].cached_from == (
        again.run_id
    )


def test_expires_takes_a_duration_text(tmp_path):
    pipe = Pipeline("p")
    pipe.add_step("a", lambda: 1, cache={"expires": "2h"})
    assert pipe.spec.step("a").cache == Cache(expires=7200.0)
    with pytest.raises(ValueError, match="duration"):
        Cache(expires="soon")
    with pytest.raises(ValueError, match="unknown field 'ttl'"):
        pipe.add_step("b", lambda: 1, cache={"ttl": "2h"})


def test_params_count_only_for_steps_that_can_read_them(tmp_path):
    log = CallLog(tmp_path / "calls")
    pipe = Pipeline("p")

    @pipe.step(cache=True)
    def with_ctx(ctx) -> int:
        log.record("with_ctx")
        return ctx.params["rate"]

    @pipe.step(cache=True)
    def plain() -> int:
        log.record("plain")
        return 7

    tracker = _tracker(tmp_path)
    pipe.run_sync({"rate": 1, "unrelated": "a"}, tracker=tracker)
    pipe.run_sync({"rate": 1, "unrelated": "a"}, tracker=tracker)
    assert log.count("with_ctx") == 1 and log.count("plain") == 1
    run = pipe.run_sync(
        {"rate": 2, "unrelated": "a"}, tracker=tracker
    )  # a param it can read changed
    assert log.count("with_ctx") == 2
    assert run.steps["with_ctx"].output == 2
    assert log.count("plain") == 1  # it cannot see params: still a hit


def test_a_changed_function_is_a_miss(tmp_path):
    tracker = _tracker(tmp_path)
    log = CallLog(tmp_path / "calls")

    def make(version: int) -> Pipeline:
        pipe = Pipeline("p")
        if version == 1:

            def step() -> int:
                log.record("v1")
                return 1
        else:

            def step() -> int:
                log.record("v2")
                return 2

        pipe.add_step("step", step, cache=True)
        return pipe

    make(1).run_sync(tracker=tracker)
    make(1).run_sync(tracker=tracker)
    run = make(2).run_sync(tracker=tracker)
    assert log.calls == ["v1", "v2"]
    assert run.steps["step"].output == 2


def test_a_key_function_stands_for_the_inputs(tmp_path):
    log = CallLog(tmp_path / "calls")
    version = {"v": "a"}
    pipe = Pipeline("p")

    @pipe.step
    def source() -> object:
        return object()  # a new object each run: its pickle differs (its identity does not)

    def key(inputs: dict[str, Any], params: dict[str, Any]) -> Any:
        assert set(inputs) == {"source"}
        return version["v"]

    @pipe.step(cache=Cache(key=key), depends_on="source")
    def use(source: object) -> str:
        log.record("use")
        return "used"

    tracker = _tracker(tmp_path)
    pipe.run_sync(tracker=tracker)
    pipe.run_sync(tracker=tracker)
    assert len(log) == 1
    version["v"] = "b"
    pipe.run_sync(tracker=tracker)
    assert len(log) == 2


def test_inputs_that_cannot_be_hashed_run_the_step_every_time_and_say_why(tmp_path):
    import threading

    log = CallLog(tmp_path / "calls")
    events = Events()
    pipe = Pipeline("p")

    @pipe.step
    def source() -> object:
        return threading.Lock()

    @pipe.step(cache=True, depends_on="source")
    def use(source: object) -> int:
        log.record("use")
        return 1

    tracker = _tracker(tmp_path)
    assert pipe.run_sync(tracker=tracker).ok
    assert pipe.run_sync(tracker=tracker, listeners=[events]).ok
    assert len(log) == 2
    assert events.seen == [("use", "miss")]
    assert "cannot be hashed" in events.events[0].reason
    assert "key function" in events.events[0].reason


def test_a_key_function_returning_none_is_not_cached(tmp_path):
    log = CallLog(tmp_path / "calls")
    pipe = Pipeline("p")
    pipe.add_step("s", lambda: log.record("s"), cache=Cache(key=lambda inputs, params: None))
    tracker = _tracker(tmp_path)
    pipe.run_sync(tracker=tracker)
    pipe.run_sync(tracker=tracker)
    assert len(log) == 2


class Events:
    """A run listener keeping the ``pipectl_step_cache`` events."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.seen: list[tuple[str, str]] = []
        self.finished: dict[str, Any] = {}

    @hookimpl
    def pipectl_step_cache(self, run, step, event):
        self.events.append(event)
        self.seen.append((step.name, event.kind))

    @hookimpl
    def pipectl_step_finish(self, run, step, result):
        self.finished[step.name] = result


def test_hooks_see_the_miss_the_store_and_the_hit(tmp_path):
    pipe, _ = _counted(tmp_path)
    tracker = _tracker(tmp_path)
    first_events, second_events = Events(), Events()
    first = pipe.run_sync(tracker=tracker, listeners=[first_events])
    pipe.run_sync(tracker=tracker, listeners=[second_events])
    assert first_events.seen == [("expensive", "miss"), ("expensive", "stored")]
    miss, stored = first_events.events
    assert miss.reason == "not cached yet"
    assert stored.cached_from == first.run_id and stored.key == miss.key
    assert second_events.seen == [("expensive", "hit")]
    (hit,) = second_events.events
    assert hit.key == miss.key and hit.cached_from == first.run_id
    assert hit.stored_at == stored.stored_at
    assert second_events.finished["expensive"].cached_from == first.run_id
    refresh_events = Events()
    pipe.run_sync(tracker=tracker, listeners=[refresh_events], refresh="expensive")
    assert refresh_events.seen == [("expensive", "miss"), ("expensive", "stored")]
    assert refresh_events.events[0].reason == "refresh"


def test_without_a_tracker_the_step_runs_and_the_miss_says_why(tmp_path):
    pipe, log = _counted(tmp_path)
    events = Events()
    pipe.run_sync(listeners=[events])
    pipe.run_sync()
    assert len(log) == 2
    assert events.seen == [("expensive", "miss")]
    assert "no result store" in events.events[0].reason


def test_refresh_names_are_checked(tmp_path):
    pipe, _ = _counted(tmp_path)
    with pytest.raises(PipelineValidationError, match="did you mean 'expensive'"):
        pipe.run_sync(refresh="expensiv")
    with pytest.raises(PipelineValidationError, match="'source' is not cached"):
        pipe.run_sync(refresh="source")


def test_a_planted_entry_is_not_unpickled(tmp_path):
    pipe, log = _counted(tmp_path)
    tracker = _tracker(tmp_path)
    events = Events()
    pipe.run_sync(tracker=tracker, listeners=[events])
    entries = list((tmp_path / "results" / "_cache").rglob("*.pickle"))
    assert len(entries) == 1
    boom = tmp_path / "boom"
    import pickle

    class Planted:
        def __reduce__(self):
            return (Path.touch, (boom,))

    data = entries[0].read_bytes()
    # keep the header, swap the pickle: the tag no longer matches
    entries[0].write_bytes(
        data[: len(data) - len(pickle.dumps(6, protocol=5))] + pickle.dumps(Planted())
    )
    run = pipe.run_sync(tracker=tracker)
    assert run.ok
    assert not boom.exists()
    assert len(log) == 2  # ran again
    assert run.steps["expensive"].cached_from is None


def test_an_output_holding_a_secret_is_not_stored(tmp_path):
    (tmp_path / "secret_steps.py").write_text(
        textwrap.dedent(
            """
            def leak(params):
                with open("calls.txt", "a") as f:
                    f.write("leak\\n")
                return "token=" + params["token"]
            """
        )
    )
    (tmp_path / "s.yaml").write_text(
        textwrap.dedent(
            """\
            name: s
            params:
              token: {type: str, secret: true}
            steps:
              - name: leak
                run: secret_steps:leak
                cache: true
            """
        )
    )
    for _ in range(2):
        out = pipectl("run", "s.yaml", "-p", "token=hunter2-secret", cwd=tmp_path)
        assert out.returncode == 0, out.stderr
    assert calls(tmp_path) == 2  # never stored, so never a hit
    for path in (tmp_path / ".home").rglob("*"):
        if path.is_file():
            assert b"hunter2-secret" not in path.read_bytes(), path


def test_to_yaml_writes_the_cache_back(tmp_path):
    (tmp_path / "keys.py").write_text("def key(inputs, params):\n    return 1\n")
    sys.path.insert(0, str(tmp_path))
    try:
        from keys import key

        pipe = Pipeline("p")
        pipe.add_step("a", _plain, cache=True)
        pipe.add_step("b", _plain, cache=Cache(expires="90m", key=key))
        text = pipe.to_yaml()
        assert "cache: true" in text
        assert "expires: 5400" in text and "key: keys:key" in text
        path = tmp_path / "p.yaml"
        path.write_text(text)
        back = Pipeline.from_yaml(path)
        assert back.spec.step("a").cache == Cache()
        assert back.spec.step("b").cache.expires == 5400
        assert back.spec.step("b").cache.key is key
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("keys", None)


def _plain() -> int:
    return 1


def test_a_data_step_is_cached_only_when_it_says_so(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i}) + "\n" for i in range(5)))
    for cached in (False, True):
        log = CallLog(tmp_path / f"records-{cached}")

        def seen(record: dict[str, Any], log: CallLog = log) -> dict[str, Any]:
            log.record(str(record["id"]))
            return record

        pipe = Pipeline(f"load{int(cached)}")
        pipe.data_step(
            "load",
            extractor={"type": "jsonl", "path": str(source)},
            transforms=[seen],
            outputs=[{"type": "jsonl", "path": str(tmp_path / f"out-{cached}.jsonl")}],
            cache=cached,
        )
        tracker = _tracker(tmp_path)
        first = pipe.run_sync(tracker=tracker)
        second = pipe.run_sync(tracker=tracker)
        assert first.ok and second.ok, (first.errors, second.errors)
        if cached:  # the load is not made again: the second run's result is the first's
            assert len(log) == 5
            assert second.steps["load"].cached_from == first.run_id
            assert second.steps["load"].records == first.steps["load"].records == 5
        else:
            assert len(log) == 10
            assert second.steps["load"].cached_from is None


def test_the_story_shows_a_cache_hit_as_its_own_outcome(tmp_path):
    pipe, _ = _counted(tmp_path)
    tracker = _tracker(tmp_path)
    pipe.run_sync(tracker=tracker)
    second = pipe.run_sync(tracker=tracker)
    from pipectl.plugins import default_plugin_manager
    from pipectl.story import render_html, render_markdown
    from pipectl.tracking import open_tracker

    store = open_tracker(tracker, default_plugin_manager().registries)
    assert store is not None
    try:
        record = store.get_run(second.run_id)
    finally:
        store.close()
    html = render_html(record)
    assert "s-cached" in html
    assert "from the cache: stored by run" in html
    assert "cached" in render_markdown(record)


def test_a_file_pipeline_round_trips_and_validates_cache(tmp_path):
    (tmp_path / "p.yaml").write_text(
        "name: p\nsteps:\n  - name: a\n    run: os.path:basename\n    cache: {expires: 1h}\n"
    )
    pipe = Pipeline.from_yaml(tmp_path / "p.yaml")
    assert pipe.spec.step("a").cache == Cache(expires=3600.0)
    (tmp_path / "bad.yaml").write_text(
        "name: p\nsteps:\n  - name: a\n    run: os.path:basename\n    cache: {expires: -1}\n"
    )
    with pytest.raises(PipelineFileError, match=r"bad.yaml:5: steps\.a\.cache\.expires"):
        Pipeline.from_yaml(tmp_path / "bad.yaml")


def test_a_cached_mapped_step_caches_each_item(tmp_path):
    log = CallLog(tmp_path / "calls")
    values = {"list": [1, 2, 3, 4]}
    pipe = Pipeline("mapped")

    @pipe.step
    def numbers() -> list[int]:
        return list(values["list"])

    @pipe.step(inputs={"n": "numbers"}, map="n", cache=True)
    def square(n: int) -> int:
        log.record(str(n))
        return n * n

    tracker = _tracker(tmp_path)
    first = pipe.run_sync(tracker=tracker)
    assert first.steps["square"].output == [1, 4, 9, 16]
    second = pipe.run_sync(tracker=tracker)
    assert second.steps["square"].output == [1, 4, 9, 16]
    assert sorted(log.calls) == ["1", "2", "3", "4"]  # every item from the cache
    items = second.steps["square"].items
    assert [i.cached_from for i in items] == [first.run_id] * 4
    values["list"] = [1, 2, 5, 4]  # one item changed: only it runs
    third = pipe.run_sync(tracker=tracker)
    assert third.steps["square"].output == [1, 4, 25, 16]
    assert sorted(log.calls) == ["1", "2", "3", "4", "5"]
    assert [i.cached_from is None for i in third.steps["square"].items] == [
        False,
        False,
        True,
        False,
    ]


def test_pipectl_cache_clear_removes_the_entries(project):
    assert pipectl("run", "shop.yaml", cwd=project).returncode == 0
    dry = pipectl("cache", "clear", "--dry-run", cwd=project)
    assert dry.returncode == 0 and "would remove 1 entry" in dry.stdout
    young = pipectl("cache", "clear", "--older-than", "1h", cwd=project)
    assert young.returncode == 0 and "no cache entries to remove older than 1h" in young.stdout
    assert pipectl("run", "shop.yaml", cwd=project).returncode == 0
    assert calls(project) == 1  # still cached
    cleared = pipectl("cache", "clear", cwd=project)
    assert cleared.returncode == 0 and "removed 1 entry" in cleared.stdout
    assert pipectl("run", "shop.yaml", cwd=project).returncode == 0
    assert calls(project) == 2  # the entry was gone: it ran, and stored it again
    assert pipectl("run", "shop.yaml", cwd=project).returncode == 0
    assert calls(project) == 2
    bad = pipectl("cache", "clear", "--older-than", "soon", cwd=project)
    assert bad.returncode == 2 and "--older-than" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("keep", [0, 10, -7], ids=["empty", "cut-short", "last-bytes-lost"])
def test_an_entry_cut_short_is_a_miss_and_is_replaced(tmp_path, keep):
    """What a crash of the machine can leave of an entry written without an fsync: nothing,
    or part of it. Its check fails, the step runs, and its new output replaces it."""
    pipe, log = _counted(tmp_path)
    tracker = _tracker(tmp_path)
    pipe.run_sync(tracker=tracker)
    (entry,) = (tmp_path / "results" / "_cache").rglob("*.pickle")
    data = entry.read_bytes()
    entry.write_bytes(data[:keep])
    run = pipe.run_sync(tracker=tracker)
    assert run.ok and run.steps["expensive"].output == 6
    assert run.steps["expensive"].cached_from is None
    assert len(log) == 2
    assert entry.read_bytes() != data[:keep]  # replaced by a whole entry
    again = pipe.run_sync(tracker=tracker)
    assert again.steps["expensive"].cached_from == run.run_id
    assert len(log) == 2


@pytest.mark.parametrize("point", ["cache.mid-store", "cache.after-store"])
def test_a_kill_while_storing_never_leaves_a_partial_hit(project, point):
    """SIGKILL at the step cache's named points: mid-store leaves no entry (the next run calls
    the step and stores it); after the store the entry is whole (the next run takes it)."""
    killed = pipectl("run", "shop.yaml", cwd=project, PIPECTL_FAULT=point)
    assert killed.returncode == -9, killed.stderr
    assert calls(project) == 1
    entries = list((project / ".home" / "results" / "_cache").rglob("*.pickle"))
    assert len(entries) == (0 if point == "cache.mid-store" else 1)
    after = pipectl("run", "shop.yaml", cwd=project)
    assert after.returncode == 0, after.stderr
    record = shown(project)
    if point == "cache.mid-store":  # no entry: it ran again, and stored a whole one
        assert calls(project) == 2
        assert step_of(record, "expensive")["cached_from"] is None
        again = pipectl("run", "shop.yaml", cwd=project)
        assert again.returncode == 0 and calls(project) == 2
    else:  # the output was made and stored before the kill: taken from the cache
        assert calls(project) == 1
        assert step_of(record, "expensive")["cached_from"] is not None
    assert step_of(shown(project), "report")["output_summary"] == {"total": 60}
