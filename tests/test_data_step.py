"""The data step: streaming, backpressure, output isolation, exactly-once retries, the seed API."""

from __future__ import annotations

import asyncio
import time

import pytest

from pipectl import DataStepResult, Pipeline, PipelineRunConfig, RunStatus, StepStatus, Transform


class Numbers:
    """An extractor of ``n`` records in batches, optionally breaking at record ``fail_at``."""

    def __init__(self, n: int, batch: int = 100, fail_at: int | None = None):
        self.n, self.batch, self.fail_at = n, batch, fail_at
        self.yielded = 0

    def describe(self) -> str:
        return "numbers"

    def batches(self, ctx):
        batch = []
        for i in range(self.n):
            if i == self.fail_at:
                raise RuntimeError(f"source broke at {i}")
            batch.append({"id": i, "tag": ctx.params.get("tag")})
            if len(batch) == self.batch:
                self.yielded += len(batch)
                yield batch
                batch = []
        if batch:
            self.yielded += len(batch)
            yield batch


class Store:
    """A transactional output: rows become visible in ``rows`` only on commit."""

    guarantee = "transactional"

    def __init__(
        self, name: str, fail_after: int | None = None, delay: float = 0.0, fail_attempts: int = 1
    ):
        self.name, self.fail_after, self.delay = name, fail_after, delay
        self.fail_attempts = fail_attempts
        self.rows: list[dict] = []
        self.pending: list[dict] = []
        self.attempts = 0
        self.calls: list[str] = []
        self.on_write = None

    def describe(self) -> str:
        return self.name

    def open(self, ctx):
        self.attempts += 1
        self.pending = []
        self.calls.append("open")

    def write(self, batch):
        if self.delay:
            time.sleep(self.delay)
        if (
            self.fail_after is not None
            and self.attempts <= self.fail_attempts
            and len(self.pending) >= self.fail_after
        ):
            raise OSError(f"{self.name}: disk full")
        self.pending.extend(batch)
        if self.on_write:
            self.on_write(self)

    def commit(self):
        self.calls.append("commit")
        self.rows.extend(self.pending)
        self.pending = []

    def abort(self):
        self.calls.append("abort")
        self.pending = []

    def close(self):
        self.calls.append("close")


def test_seed_pipeline_core_example_returns_a_full_pipeline_run(plugin_manager):
    sqlite_like, jsonl_like = Store("sqlite"), Store("jsonl")
    pipeline = Pipeline(
        pipeline_id="weather_api",
        extractor=Numbers(1000),
        outputs=[sqlite_like, jsonl_like],
        plugin_manager=plugin_manager,
    )

    run = asyncio.run(
        pipeline.execute(
            PipelineRunConfig(pipeline_id="weather_api", parameters={"location_ids": ["NYC", "SF"]})
        )
    )

    assert run.status is RunStatus.SUCCESS
    assert run.pipeline_id == "weather_api" and len(run.run_id) >= 16
    assert run.start_time <= run.end_time
    assert run.parameters == {"location_ids": ["NYC", "SF"]}
    assert run.records_processed == 1000
    assert run.errors == []
    result = run.steps["extract_load"].output
    assert isinstance(result, DataStepResult)
    assert {n: r.written for n, r in result.outputs.items()} == {"sqlite": 1000, "jsonl": 1000}
    assert [r["id"] for r in sqlite_like.rows] == list(range(1000))
    assert jsonl_like.rows == sqlite_like.rows


def test_a_failing_output_does_not_stop_the_others(plugin_manager):
    good, bad = Store("good"), Store("bad", fail_after=300, fail_attempts=99)
    pipe = Pipeline("iso", plugin_manager=plugin_manager)
    pipe.data_step("load", extractor=Numbers(1000), outputs=[good, bad])

    run = pipe.run_sync()

    assert run.status is RunStatus.FAILED
    assert len(good.rows) == 1000 and good.calls[-2:] == ["commit", "close"]
    assert bad.rows == [] and "abort" in bad.calls and bad.calls[-1] == "close"
    (error,) = run.errors
    assert "output 'bad' failed: OSError: bad: disk full" in error
    assert "committed: good" in error


def test_an_output_whose_open_fails_is_still_closed(plugin_manager):
    class CannotOpen(Store):
        def open(self, ctx):
            self.calls.append("open")
            raise ConnectionError("server down")

    good, broken = Store("good"), CannotOpen("broken")
    pipe = Pipeline("open", plugin_manager=plugin_manager)
    pipe.data_step("load", extractor=Numbers(10), outputs=[good, broken])

    run = pipe.run_sync()

    assert run.status is RunStatus.FAILED
    assert broken.calls == ["open", "abort", "close"]
    assert len(good.rows) == 10
    assert "output 'broken' failed: ConnectionError: server down" in run.errors[0]


def test_a_retry_writes_only_to_the_outputs_that_did_not_commit(plugin_manager):
    good, flaky = Store("good"), Store("flaky", fail_after=500)  # fails on attempt 1 only
    pipe = Pipeline("retry", plugin_manager=plugin_manager)
    pipe.data_step(
        "load",
        extractor=Numbers(1000),
        outputs=[good, flaky],
        retries=1,
        retry_delay=0,
        retry_jitter=0,
    )

    run = pipe.run_sync()

    assert run.status is RunStatus.SUCCESS, run.errors
    assert run.steps["load"].attempts == 2
    # each record exactly once in every output
    assert [r["id"] for r in good.rows] == list(range(1000))
    assert [r["id"] for r in flaky.rows] == list(range(1000))
    assert good.attempts == 1 and flaky.attempts == 2
    report = run.steps["load"].output.outputs
    assert report["good"].status == "skipped" and report["flaky"].status == "committed"


def test_an_extraction_error_commits_nothing_anywhere(plugin_manager):
    a, b = Store("a"), Store("b")
    pipe = Pipeline("broken-source", plugin_manager=plugin_manager)
    pipe.data_step("load", extractor=Numbers(1000, fail_at=500), outputs=[a, b])

    run = pipe.run_sync()

    assert run.status is RunStatus.FAILED
    assert run.steps["load"].error == "RuntimeError: source broke at 500"
    for out in (a, b):
        assert out.rows == []
        assert "commit" not in out.calls and "abort" in out.calls and out.calls[-1] == "close"


def test_a_slow_output_holds_the_extractor_back(plugin_manager):
    batch, buffer = 50, 2
    source = Numbers(5000, batch=batch)
    slow, fast = Store("slow", delay=0.002), Store("fast")
    lag = {"max": 0}

    def watch(store):
        lag["max"] = max(lag["max"], source.yielded - len(store.pending))

    slow.on_write = watch
    pipe = Pipeline("backpressure", plugin_manager=plugin_manager)
    pipe.data_step("load", extractor=source, outputs=[slow, fast], buffer_size=buffer)

    run = pipe.run_sync()

    assert run.ok, run.errors
    assert len(slow.rows) == len(fast.rows) == 5000
    # records read but not yet written by the slow output: its buffer, the batch being
    # written, and the batch the extractor holds while it waits to put it
    assert 0 < lag["max"] <= (buffer + 2) * batch


def test_transforms_map_drop_and_split_records(plugin_manager):
    out = Store("out")

    def double_evens(record):
        if record["id"] % 2:
            return None  # drop odd ids
        return [record, {**record, "copy": True}]  # split evens in two

    async def tag(record):
        return {**record, "tagged": True}

    def add_index(batch):
        return [{**r, "n": i} for i, r in enumerate(batch)]

    pipe = Pipeline("transforms", plugin_manager=plugin_manager)
    pipe.data_step(
        "load",
        extractor=Numbers(10, batch=10),
        outputs=[out],
        transforms=[double_evens, tag, Transform(add_index, per="batch")],
    )
    run = pipe.run_sync()

    assert run.ok, run.errors
    assert [(r["id"], r.get("copy", False)) for r in out.rows] == [
        (i, c) for i in range(0, 10, 2) for c in (False, True)
    ]
    assert all(r["tagged"] for r in out.rows)
    assert [r["n"] for r in out.rows] == list(range(10))


def _bad_on_seven(record):
    if record["id"] == 7:
        raise ValueError("seven is not allowed")
    return record


def test_bad_record_fail_mode_names_the_record_and_commits_nothing(plugin_manager):
    out = Store("out")
    pipe = Pipeline("bad-fail", plugin_manager=plugin_manager)
    pipe.data_step("load", extractor=Numbers(20), outputs=[out], transforms=[_bad_on_seven])
    run = pipe.run_sync()
    assert run.status is RunStatus.FAILED
    error = run.steps["load"].error
    assert "bad record at numbers record 8" in error and "seven is not allowed" in error
    assert out.rows == []


def test_bad_record_skip_mode_counts_and_goes_on(plugin_manager):
    out = Store("out")
    pipe = Pipeline("bad-skip", plugin_manager=plugin_manager)
    pipe.data_step(
        "load",
        extractor=Numbers(20),
        outputs=[out],
        transforms=[_bad_on_seven],
        on_bad_record="skip",
    )
    run = pipe.run_sync()
    assert run.ok
    assert [r["id"] for r in out.rows] == [i for i in range(20) if i != 7]
    assert run.steps["load"].output.bad_records == 1


def test_bad_record_dead_letter_mode_writes_reason_beside_the_record(plugin_manager, tmp_path):
    import json

    out = Store("out")
    dead = tmp_path / "dead.jsonl"
    pipe = Pipeline("bad-dead", plugin_manager=plugin_manager)
    pipe.data_step(
        "load",
        extractor=Numbers(20),
        outputs=[out],
        transforms=[_bad_on_seven],
        on_bad_record="dead_letter",
        dead_letter=str(dead),
    )
    run = pipe.run_sync()
    assert run.ok
    (line,) = dead.read_text().splitlines()
    letter = json.loads(line)
    assert letter["position"] == "numbers record 8"  # the 8th record read (id 7)
    assert letter["run_id"] == run.run_id and letter["step"] == "load"
    assert "seven is not allowed" in letter["reason"]
    assert letter["record"]["id"] == 7
    assert run.steps["load"].output.dead_letter_path == str(dead)


def test_unknown_options_and_bad_modes_are_validation_errors(plugin_manager):
    from pipectl import PipelineValidationError

    pipe = Pipeline("bad-options", plugin_manager=plugin_manager)
    pipe.data_step("load", extractor=Numbers(1), outputs=[Store("x")], on_bad_record="ignore")
    with pytest.raises(PipelineValidationError, match="on_bad_record: must be one of"):
        pipe.validate()
    pipe2 = Pipeline("no-outputs", plugin_manager=plugin_manager)
    pipe2.data_step("load", extractor=Numbers(1), outputs=[])
    with pytest.raises(PipelineValidationError, match="needs 'load'"):
        pipe2.validate()


def test_a_data_step_inside_a_dag_feeds_its_result_downstream(plugin_manager):
    out = Store("out")
    pipe = Pipeline("dag", plugin_manager=plugin_manager)

    @pipe.step("prepare")
    def prepare():
        return "ready"

    pipe.data_step("load", extractor=Numbers(300), outputs=[out], depends_on=["prepare"])

    @pipe.step("report", depends_on=["load"])
    def report(load):
        return {n: r.written for n, r in load.outputs.items()}

    run = pipe.run_sync()
    assert run.ok
    assert run.steps["report"].output == {"out": 300}
    assert run.steps["load"].records == 300


def test_lifecycle_hooks_fire_per_step_not_per_record(plugin_manager, hook_recorder):
    pipe = Pipeline("hooks", plugin_manager=plugin_manager)
    pipe.data_step("load", extractor=Numbers(5000), outputs=[Store("a"), Store("b")])
    run = pipe.run_sync()
    assert run.ok
    assert hook_recorder.names() == [
        "pipectl_run_start",
        "pipectl_run_planned",
        "pipectl_step_start",
        "pipectl_output_finish",
        "pipectl_output_finish",
        "pipectl_step_finish",
        "pipectl_run_finish",
    ]  # one report per output
    (finish,) = hook_recorder.calls_for("step_finish")
    assert finish.result.records == 5000
    assert finish.result.status is StepStatus.SUCCESS


def test_close_errors_are_recorded_without_hiding_the_first_error(plugin_manager):
    class BadClose(Store):
        def close(self):
            raise RuntimeError("close exploded")

    out = BadClose("x", fail_after=0, fail_attempts=99)
    pipe = Pipeline("close", plugin_manager=plugin_manager)
    pipe.data_step("load", extractor=Numbers(10), outputs=[out])
    run = pipe.run_sync()
    assert run.status is RunStatus.FAILED
    error = run.steps["load"].error
    assert (
        "OSError: x: disk full" in error and "close failed: RuntimeError: close exploded" in error
    )
    assert error.index("disk full") < error.index("close exploded")


def test_extractor_state_comes_back_with_the_run_and_goes_into_the_next(plugin_manager):
    class SinceCursor:
        """Incremental: reads ids above the cursor it was given, remembers the highest."""

        def __init__(self, upto):
            self.upto = upto
            self.state = None

        def describe(self):
            return "since"

        def set_state(self, state):
            self.state = state

        def batches(self, ctx):
            start = (self.state or {}).get("last_id", -1) + 1
            rows = [{"id": i} for i in range(start, self.upto)]
            if rows:
                self.state = {"last_id": rows[-1]["id"]}
                yield rows

    out = Store("out")
    first = Pipeline("incremental", plugin_manager=plugin_manager)
    first.data_step("load", extractor=SinceCursor(5), outputs=[out])
    run1 = first.run_sync()
    assert run1.ok and run1.extractor_state == {"load": {"last_id": 4}}

    second = Pipeline("incremental", plugin_manager=plugin_manager)
    second.data_step("load", extractor=SinceCursor(8), outputs=[out])
    run2 = second.run_sync(extractor_state=run1.extractor_state)
    assert run2.ok
    assert [r["id"] for r in out.rows] == list(range(8))  # 0-4, then only 5-7
    assert run2.extractor_state == {"load": {"last_id": 7}}


def test_a_misspelled_component_is_a_validation_error_with_a_hint(plugin_manager):
    from pipectl import PipelineValidationError

    pipe = Pipeline("typo", plugin_manager=plugin_manager)
    pipe.data_step(
        "load",
        extractor={"type": "csvv", "path": "x.csv"},
        outputs=[{"type": "jsnl", "path": "o.jsonl"}],
    )
    with pytest.raises(PipelineValidationError) as info:
        pipe.validate()
    text = str(info.value)
    assert "no extractor named 'csvv'; did you mean 'csv'?" in text
    assert "no output named 'jsnl'; did you mean 'jsonl'?" in text or "csvv" in text


def test_a_misspelled_component_option_names_the_component(plugin_manager, tmp_path):
    pipe = Pipeline("option-typo", plugin_manager=plugin_manager)
    pipe.data_step(
        "load",
        extractor={"type": "csv", "path": str(tmp_path / "x.csv"), "typs": {}},
        outputs=[{"type": "jsonl", "path": str(tmp_path / "o.jsonl")}],
    )
    from pipectl import PipelineValidationError

    with pytest.raises(PipelineValidationError) as caught:  # before anything runs
        pipe.run_sync()
    (problem,) = caught.value.problems
    assert problem.step == "load" and problem.field == "extract.typs"
    assert "extractor 'csv' (plugin 'files'): unknown option" in problem
    assert "did you mean 'types'?" in problem.hint


def test_bad_record_positions_are_right_with_async_transforms(plugin_manager):
    async def reject_seven(record):
        if record["id"] == 7:
            raise ValueError("no sevens")
        return record

    out = Store("out")
    pipe = Pipeline("async-bad", plugin_manager=plugin_manager)
    pipe.data_step("load", extractor=Numbers(20, batch=5), outputs=[out], transforms=[reject_seven])
    run = pipe.run_sync()
    assert run.status is RunStatus.FAILED
    assert "bad record at numbers record 8:" in run.steps["load"].error  # counted from 1


def test_a_transform_taking_ctx_keeps_state_across_batches_and_starts_over_on_a_retry(
    plugin_manager,
):
    seen_sizes = []

    def first_of_each_tens(record, ctx):
        seen = ctx.state.setdefault("tens", set())
        if len(seen) == 0:
            seen_sizes.append("new attempt")
        tens = record["id"] // 10
        if tens in seen:
            return None
        seen.add(tens)
        return {"tens": tens}

    store = Store("store", fail_after=5)  # the first attempt fails after 5 records
    pipe = Pipeline("state", plugin_manager=plugin_manager)
    pipe.data_step(
        "load",
        extractor=Numbers(100, batch=7),
        outputs=[store],
        transforms=[first_of_each_tens],
        retries=1,
        retry_delay=0,
        retry_jitter=0,
    )

    run = pipe.run_sync()

    assert run.ok, run.errors
    assert [r["tens"] for r in store.rows] == list(range(10))  # across batches of 7
    assert seen_sizes == ["new attempt", "new attempt"]  # the retry started with no state
