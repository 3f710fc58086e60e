"""The data plane: a data step streams records from an extractor through transforms into outputs.

Contracts (what extractor and output plugins implement):

* An **extractor** has ``batches(ctx)``, a sync or async generator of batches (lists of record
  dicts), and ``describe()``. A record it cannot parse goes to
  ``ctx.bad_record(raw, reason, position)`` (``position`` like ``"data/orders.csv:17"``), which
  raises under ``on_bad_record: fail`` and returns otherwise. An extractor with incremental state
  has ``state`` (read after a successful run) and ``set_state(state)`` (called before the next).
* An **output** has ``guarantee`` (``"transactional"``: nothing visible until ``commit``; or
  ``"idempotent"``: writes are upserts by key), and sync ``open(ctx)``, ``write(batch)``,
  ``commit()``, ``abort()``, ``close()``, called on a worker thread, in that order per attempt;
  ``close`` always. ``describe()`` names it in messages.

The runner (:func:`run_data_step`): each output has its own bounded buffer of batches, so memory
stays flat and a slow output holds the extractor back. An output that fails is aborted and the
others go on; an extraction failure aborts every output. The step fails if any output failed,
and a retry writes only to the outputs that did not commit yet: no record is written twice.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from pipectl import faults
from pipectl.errors import PipectlError

__all__ = [
    "BadRecordError",
    "DataContext",
    "DataStepError",
    "DataStepResult",
    "OutputReport",
    "Transform",
    "run_data_step",
]

# the data step's option rules live apart: validating a file needs them, not this module
from pipectl.data_options import (  # noqa: E402
    BAD_RECORD_MODES,
    DEFAULT_BUFFER_SIZE,
    parse_max_bad_records,
)


class BadRecordError(PipectlError, ValueError):
    """A record could not be read or transformed, under ``on_bad_record: fail``."""

    def __init__(self, position: str, reason: str):
        self.position, self.reason = position, reason
        super().__init__(
            f"bad record at {position}: {reason} (on_bad_record: skip or "
            "dead_letter would set it aside and go on)"
        )


class DataStepError(PipectlError):
    """One or more outputs of a data step failed; the others committed. ``result`` is the
    step's :class:`DataStepResult` (each output's report), for trackers and resume."""

    def __init__(self, message: str, result: DataStepResult | None = None):
        super().__init__(message)
        self.result = result


class OutputReport:
    """What became of one output in a data step."""

    __slots__ = ("name", "written", "status", "error", "target", "note")

    def __init__(self, name: str, target: str | None = None):
        self.name = name
        self.target = target  # where it writes: the output's describe(), e.g. "jsonl out/a.jsonl"
        self.written = 0
        self.status = "pending"  # committed | failed | aborted | skipped (committed earlier)
        self.error: str | None = None
        self.note: str | None = None  # e.g. "already committed by run 1f2e..."

    def as_dict(self) -> dict[str, Any]:
        out = {
            "written": self.written,
            "status": self.status,
            "error": self.error,
            "target": self.target,
        }
        if self.note:
            out["note"] = self.note
        return out

    def __repr__(self) -> str:
        return f"OutputReport({self.name!r}, written={self.written}, status={self.status!r})"


class DataStepResult:
    """The output of a data step: records read, bad records, and a report per output."""

    __slots__ = ("records_read", "bad_records", "outputs", "dead_letter_path", "state")

    def __init__(self) -> None:
        self.records_read = 0
        self.bad_records = 0
        self.outputs: dict[str, OutputReport] = {}
        self.dead_letter_path: str | None = None
        self.state: Any = None

    @property
    def records_processed(self) -> int:
        """Records the step delivered: the most any of its outputs committed (in this run or,
        for a load found committed already, in the run that did), so a step one of whose
        outputs failed still counts what the others committed. Each output's own count is in
        ``outputs``."""
        return max(
            (r.written for r in self.outputs.values() if r.status in ("committed", "skipped")),
            default=0,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "records_read": self.records_read,
            "bad_records": self.bad_records,
            "outputs": {n: r.as_dict() for n, r in self.outputs.items()},
            "dead_letter_path": self.dead_letter_path,
        }

    def __repr__(self) -> str:
        return (
            f"DataStepResult(records_read={self.records_read}, "
            f"bad_records={self.bad_records}, outputs={list(self.outputs.values())})"
        )


class Transform:
    """A transform of records: ``per="record"`` (default) calls ``func(record)``, which returns a
    record, ``None`` (drop it) or a list of records (split it); ``per="batch"`` calls
    ``func(batch)`` and uses the list it returns. Sync or async.

    A function whose second parameter is named ``ctx`` is called ``func(record, ctx)``: the
    attempt's :class:`DataContext`, whose ``state`` dict lives as long as the attempt (to drop
    repeated keys across batches, say) and starts empty on a retry."""

    __slots__ = ("func", "per", "is_async", "name", "takes_ctx")

    def __init__(self, func: Callable[..., Any], per: str = "record"):
        if per not in ("record", "batch"):
            raise ValueError(f"transform per= must be 'record' or 'batch', got {per!r}")
        self.func = func
        self.per = per
        self.is_async = inspect.iscoroutinefunction(func)
        self.name = getattr(func, "__qualname__", repr(func))
        try:
            names = list(inspect.signature(func).parameters)
        except (TypeError, ValueError):
            names = []
        self.takes_ctx = len(names) >= 2 and names[1] in ("ctx", "context")

    def bound(self, ctx: DataContext) -> Callable[[Any], Any]:
        """The function to call with one record (or batch) in this attempt."""
        if not self.takes_ctx:
            return self.func
        func = self.func
        return lambda item: func(item, ctx)


class BadRecordsExceeded(PipectlError):
    """More records were rejected than ``max_bad_records`` allows (or every one was): the step
    fails and no output commits."""


class _DeadLetters:
    """Bad records set aside with the reason, run and step beside each, committed with the
    step's attempt: the file is appended to by writing the old content and the new lines to a
    temporary file that is renamed over it, with a load marker (:mod:`pipectl.loads`), so a
    resumed load finds its bad records there already and does not add them twice."""

    def __init__(self, path: Path, run_id: str | None = None, step: str | None = None):
        self.path = path
        self.run_id, self.step = run_id, step
        self._tmp: Any = None
        self._tmp_path: str | None = None

    def add(self, raw: Any, reason: str, position: str) -> None:
        if self._tmp is None:
            from pipectl.loads import remove_stale_temp_files, temp_prefix

            self.path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temp_files(str(self.path))
            fd, self._tmp_path = tempfile.mkstemp(
                prefix=temp_prefix(str(self.path)), suffix=".tmp", dir=self.path.parent
            )
            self._tmp = os.fdopen(fd, "w", encoding="utf-8")
        line = {"position": position, "reason": reason, "record": raw}
        if self.run_id is not None:
            line = {"run_id": self.run_id, "step": self.step, **line}
        self._tmp.write(json.dumps(line, ensure_ascii=False, default=str) + "\n")

    def commit(self, load: Any = None) -> bool:
        """Append the bad records (once per load); False if the load had appended them."""
        if self._tmp is None:
            return True
        from pipectl.loads import FileMarker, temp_prefix

        self._tmp.close()
        self._tmp = None
        tmp, self._tmp_path = self._tmp_path, None
        marker = FileMarker(str(self.path))
        try:
            if load is not None and marker.find(load) is not None:
                return False
            new = os.path.join(
                self.path.parent,  # a temp file the next run would clean up
                f"{temp_prefix(str(self.path))}{os.urandom(6).hex()}.tmp",
            )
            with open(new, "wb") as dst:
                try:
                    with open(self.path, "rb") as old:
                        while chunk := old.read(1 << 20):
                            dst.write(chunk)
                except FileNotFoundError:
                    pass
                with open(tmp, "rb") as src:  # type: ignore[arg-type]
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
            try:
                if load is not None:
                    marker.prepare(new, load.marker(), keep=True)
                os.replace(new, self.path)
            except BaseException:
                os.unlink(new)
                raise
            return True
        finally:
            os.unlink(tmp)  # type: ignore[arg-type]

    def abort(self) -> None:
        if self._tmp is not None:
            self._tmp.close()
            os.unlink(self._tmp_path)  # type: ignore[arg-type]
            self._tmp = None


class DataContext:
    """What extractors and outputs get from the runner."""

    def __init__(
        self,
        step: str,
        params: Mapping[str, Any],
        mode: str,
        dead_letters: _DeadLetters | None,
        logger: Any,
        max_bad: int | None = None,
    ):
        self.step = step
        self.params = params
        self.mode = mode
        self.bad = 0
        self.bad_transformed = 0  # of ``bad``, the records a transform rejected
        self.max_bad = max_bad
        self.state: dict[str, Any] = {}  # transforms' own, for this attempt
        self._dead_letters = dead_letters
        self.logger = logger
        self.load: Any = None  # an output's own view has its Load here (pipectl.loads)

    def bad_record(self, raw: Any, reason: str, position: str) -> None:
        """Report a record that cannot be used: raises under ``fail``, else sets it aside."""
        if self.mode == "fail":
            raise BadRecordError(position, reason)
        self.bad += 1
        if self._dead_letters is not None:
            self._dead_letters.add(raw, reason, position)
        if self.max_bad is not None and self.bad > self.max_bad:
            raise BadRecordsExceeded(
                f"more than max_bad_records={self.max_bad} bad records (the last at "
                f"{position}: {reason}); nothing was committed"
                + (
                    f"; the bad records are in {self._dead_letters.path}"
                    if self._dead_letters is not None
                    else ""
                )
            )

    def for_output(self, load: Any) -> DataContext:
        """This context as one output sees it: the same run, its own ``load``."""
        view = object.__new__(DataContext)
        view.__dict__.update(self.__dict__)
        view.load = load
        return view


def resolve(kind: str, spec: Any, registries: Any) -> Any:
    """An extractor or output from an instance, ``{"type": name, **options}`` or a name."""
    if isinstance(spec, str):
        return registries.of(kind).create(spec)
    if isinstance(spec, Mapping):
        options = dict(spec)
        try:
            name = options.pop("type")
        except KeyError:
            raise ValueError(
                f"a {kind.rstrip('s')} given as a mapping needs a 'type' key, "
                f"got keys {sorted(options)}"
            ) from None
        options.pop("name", None)
        component = registries.of(kind).get(name)
        try:
            return component.factory(**options)
        except TypeError as exc:  # most often an option the component does not take
            raise ValueError(
                f"{kind.rstrip('s')} {name!r} (plugin {component.plugin!r}): "
                f"{exc}; check its options"
            ) from exc
    return spec


def output_name(spec: Any, component: Any, index: int) -> str:
    if isinstance(spec, Mapping):
        return str(spec.get("name") or f"{spec.get('type')}#{index}")
    name = getattr(component, "name", None)
    return str(name) if name else f"{type(component).__name__.lower()}#{index}"


def _describe(component: Any) -> str | None:
    try:
        return str(component.describe())
    except Exception:  # noqa: BLE001 - a description is a nicety, never a failure
        return None


_END = object()


async def _in_thread(func: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, func, *args)


def _apply_sync(
    transforms: list[Transform],
    batch: list[dict[str, Any]],
    ctx: DataContext,
    first_index: int,
    source: str,
) -> list[dict[str, Any]]:
    for transform in transforms:
        if transform.per == "batch":
            batch = list(transform.bound(ctx)(batch))
            continue
        out: list[dict[str, Any]] = []
        func = transform.bound(ctx)
        for n, record in enumerate(batch):
            try:
                result = func(record)
            except Exception as exc:  # noqa: BLE001 - a bad record, handled by the mode
                _transform_failed(
                    ctx, transform, record, exc, f"{source} record {first_index + n + 1}"
                )
                continue
            _keep(out, result)
        batch = out
    return batch


def _transform_failed(
    ctx: DataContext, transform: Transform, record: dict[str, Any], exc: Exception, position: str
) -> None:
    ctx.bad_transformed += 1
    ctx.bad_record(
        record, f"transform {transform.name} raised {type(exc).__name__}: {exc}", position
    )


def _keep(out: list[dict[str, Any]], result: Any) -> None:
    """A per-record transform's result: a record, None (dropped) or a list (split)."""
    if result is None:
        return
    if isinstance(result, list):
        out.extend(result)
    else:
        out.append(result)


#: seconds a cancelled data step waits for a commit under way to finish (it is never abandoned)
COMMIT_WAIT = 60.0


async def run_data_step(
    *,
    step: str,
    extractor: Any,
    outputs: list[tuple[str, Any]],
    transforms: Iterable[Transform] = (),
    params: Mapping[str, Any] | None = None,
    on_bad_record: str = "fail",
    dead_letter: str | os.PathLike[str] | None = None,
    buffer_size: int = DEFAULT_BUFFER_SIZE,
    committed: set[str] | None = None,
    logger: Any = None,
    max_bad_records: Any = None,
    pipeline: str | None = None,
    run_id: str | None = None,
    load_run: str | None = None,
    state: Any = None,
    state_explicit: bool = False,
    new_extractor: Callable[[], Any] | None = None,
) -> DataStepResult:
    """Stream ``extractor`` through ``transforms`` into every output of ``outputs`` (name, output).

    ``committed`` names outputs a previous attempt already committed: they are skipped (and the
    set is updated), so a retry writes no record twice. Raises the extraction error (nothing
    committed), or :class:`DataStepError` naming the outputs that failed (the others committed).

    With ``pipeline`` and ``run_id``, each output gets its load (:mod:`pipectl.loads`; named by
    ``load_run``, the run being resumed, else ``run_id``): an output whose destination holds the
    load's marker already is skipped ("already committed by run X"), and the extractor starts
    from the cursor of the outputs' last markers, else from ``state`` (the tracker's, or one
    given, which wins with ``state_explicit``). Outputs whose last markers hold different
    cursors (a crash between two commits, then a new run) are loaded separately, each from its
    own cursor, by a new extractor from ``new_extractor()``.

    ``max_bad_records``: a count or a percentage (``"5%"``) of the source's records; more bad
    records than that fail the step and commit nothing. A step that rejects every record of a
    non-empty source always fails.
    """
    if on_bad_record not in BAD_RECORD_MODES:
        raise ValueError(
            f"on_bad_record must be one of {', '.join(BAD_RECORD_MODES)}, got {on_bad_record!r}"
        )
    max_count, max_pct = parse_max_bad_records(max_bad_records)
    committed = committed if committed is not None else set()
    result = DataStepResult()
    loads = pipeline is not None and run_id is not None
    load_run = load_run or run_id
    dead = None
    if on_bad_record == "dead_letter":
        if dead_letter is None:
            from pipectl.project import home

            dead_letter = home() / "dead_letters" / f"{step}.jsonl"
        dead_path = Path(dead_letter)
        dead = _DeadLetters(dead_path, run_id, step)
        result.dead_letter_path = str(dead_path)
    ctx = DataContext(step, params or {}, on_bad_record, dead, logger, max_count)
    attempt = _Attempt(step, result, committed, buffer_size)

    def load_of(name: str) -> Any:
        if not loads:
            return None
        from pipectl.loads import Load

        return Load(pipeline, load_run, step, name, run_id)  # type: ignore[arg-type]

    for name, output in outputs:
        report = result.outputs[name] = OutputReport(name, _describe(output))
        if name in committed and not (loads and hasattr(output, "loaded")):
            report.status = "skipped"  # an output with markers is asked: it knows its count
            continue
        attempt.live[name] = output
        attempt.loads[name] = load_of(name)

    await attempt.open_all(ctx)
    cursors = await attempt.check_markers(
        state, use_markers=loads and not state_explicit and hasattr(extractor, "set_state")
    )
    groups: dict[str, tuple[Any, list[str]]] = {}
    for name in [n for n in attempt.live if n in attempt.opened]:
        cursor = cursors.get(name, state)
        key = json.dumps(cursor, sort_keys=True, default=str)
        groups.setdefault(key, (cursor, []))[1].append(name)
    if len(groups) > 1 and new_extractor is None:  # no second extractor: one load from `state`
        groups = {"": (state, [n for _, names in groups.values() for n in names])}
    if dead is not None and not groups:
        dead.abort()
    several = len(groups) > 1
    if several:  # each group opens its outputs when its turn comes: an open output may hold a
        for name in list(attempt.opened):  # lock (sqlite) that another group's commit needs
            await attempt.abort(name)
            await attempt.close(name)
    for i, (cursor, names) in enumerate(_oldest_first(list(groups.values()))):
        if several:
            await attempt.open_all(ctx, names)
            names = [n for n in names if n in attempt.opened]
            if not names:  # none of the group opened: nothing to read for
                continue
        source = extractor if i == 0 else new_extractor()  # type: ignore[misc]
        if cursor is not None and hasattr(source, "set_state"):
            source.set_state(cursor)
        # the first group reads from the oldest cursor: the bad records of the later ones'
        # (overlapping) reads are counted, not set aside a second time
        group_ctx = (
            ctx
            if i == 0
            else DataContext(step, params or {}, on_bad_record, None, logger, max_count)
        )
        await attempt.load(
            source,
            names,
            list(transforms),
            group_ctx,
            dead if i == 0 else None,
            (max_count, max_pct),
        )
        result.bad_records += group_ctx.bad
    if not groups and result.state is None:
        result.state = next((m.state for m in attempt.markers.values()), state)
    failed = [r for r in result.outputs.values() if r.status == "failed"]
    if failed:
        raise DataStepError(
            f"data step {step!r}: "
            + "; ".join(f"output {r.name!r} failed: {r.error}" for r in failed)
            + (f" (committed: {', '.join(sorted(committed))})" if committed else ""),
            result,
        )
    return result


class _Attempt:
    """One attempt of a data step: its outputs from open to close."""

    def __init__(self, step: str, result: DataStepResult, committed: set[str], buffer_size: int):
        self.step = step
        self.result = result
        self.committed = committed
        self.buffer_size = buffer_size
        self.live: dict[str, Any] = {}
        self.loads: dict[str, Any] = {}
        self.opened: set[str] = set()
        self.markers: dict[str, Any] = {}  # outputs that held their load already

    async def close(self, name: str) -> None:
        self.opened.discard(name)
        try:
            await _in_thread(self.live[name].close)
        except Exception as exc:  # noqa: BLE001 - recorded, never hides the first error
            report = self.result.outputs[name]
            note = f"close failed: {type(exc).__name__}: {exc}"
            report.error = f"{report.error}; {note}" if report.error else note

    async def fail(self, name: str, exc: BaseException) -> None:
        report = self.result.outputs[name]
        report.status = "failed"
        report.error = report.error or f"{type(exc).__name__}: {exc}"
        try:
            await _in_thread(self.live[name].abort)
        except Exception as abort_exc:  # noqa: BLE001
            report.error += f"; abort failed: {type(abort_exc).__name__}: {abort_exc}"

    async def abort(self, name: str) -> None:
        try:
            await _in_thread(self.live[name].abort)
        except Exception:  # noqa: BLE001 - the error that stopped the step is the one to report
            pass

    async def open_all(self, ctx: DataContext, names: list[str] | None = None) -> None:
        for name in self.live if names is None else names:
            output = self.live[name]
            try:
                await _in_thread(output.open, ctx.for_output(self.loads[name]))
                self.opened.add(name)
            except Exception as exc:  # noqa: BLE001 - this output fails, the others go on
                await self.fail(name, exc)
                await self.close(
                    name
                )  # close always, as the contract says: open may have connected

    async def check_markers(self, state: Any, use_markers: bool) -> dict[str, Any]:
        """Skip the outputs that hold this load already; the cursor each other output's last
        load left (for those that keep markers, when ``use_markers``)."""
        cursors: dict[str, Any] = {}
        for name in [n for n in self.live if n in self.opened]:
            output, load = self.live[name], self.loads[name]
            if load is None or not hasattr(output, "loaded"):
                continue
            try:
                marker = await _in_thread(output.loaded, load)
                last = (
                    await _in_thread(output.last_load, load)
                    if marker is None and use_markers and hasattr(output, "last_load")
                    else None
                )
            except Exception as exc:  # noqa: BLE001 - this output fails, the others go on
                await self.fail(name, exc)
                await self.close(name)
                continue
            if marker is not None:
                report = self.result.outputs[name]
                report.status = "skipped"
                report.written = marker.records or 0
                report.note = f"already committed by run {marker.committed_by}"
                self.markers[name] = marker
                self.committed.add(name)
                await self.abort(name)
                await self.close(name)
            elif last is not None:
                cursors[name] = last.state
        return cursors

    async def load(
        self,
        extractor: Any,
        names: list[str],
        transforms: list[Transform],
        ctx: DataContext,
        dead: _DeadLetters | None,
        limits: tuple[int | None, float | None],
    ) -> None:
        """Stream ``extractor`` into the outputs ``names`` and commit them (or abort them all
        if the extraction fails)."""
        result, live, opened = self.result, self.live, self.opened
        sync_transforms = [t for t in transforms if not t.is_async]
        any_async = any(t.is_async for t in transforms)
        source = (
            extractor.describe() if hasattr(extractor, "describe") else type(extractor).__name__
        )
        queues: dict[str, asyncio.Queue[Any]] = {
            name: asyncio.Queue(maxsize=self.buffer_size) for name in names
        }
        stopping = False  # extraction failed: consumers finish the write under way and stop
        read = 0

        async def consume(name: str) -> None:
            queue, output, report = queues[name], live[name], result.outputs[name]
            try:
                while True:
                    batch = await queue.get()
                    if batch is _END or stopping:
                        return
                    # not cancellable in the middle: an output is never used by two threads at once
                    await asyncio.shield(_in_thread(output.write, batch))
                    report.written += len(batch)
                    faults.reach("data.mid-write")
            except BaseException as exc:
                queues.pop(name, None)  # the producer stops feeding it
                while not queue.empty():  # let a producer blocked on put() go on
                    queue.get_nowait()
                if not isinstance(exc, asyncio.CancelledError):
                    await self.fail(name, exc)
                raise

        consumers = {name: asyncio.create_task(consume(name)) for name in list(queues)}
        extraction_error: BaseException | None = None
        try:
            batches = extractor.batches(ctx)
            if inspect.isasyncgen(batches):
                agen: AsyncIterator[Any] = batches
            else:
                iterator = iter(batches)

                def next_batch() -> Any:
                    nonlocal read
                    try:
                        batch = next(iterator)
                    except StopIteration:
                        return _END
                    first = read
                    read += len(batch)
                    if sync_transforms and not any_async:
                        batch = _apply_sync(sync_transforms, batch, ctx, first, source)
                    return batch

                async def pull() -> Any:
                    while True:
                        batch = await _in_thread(next_batch)
                        if batch is _END:
                            return
                        yield batch

                agen = pull()
            from_async = agen is batches
            async for batch in agen:
                if from_async:
                    read += len(batch)
                    if sync_transforms and not any_async:
                        first = read - len(batch)
                        batch = _apply_sync(sync_transforms, batch, ctx, first, source)
                if any_async:  # the batch is still as read: all transforms apply here
                    first = read - len(batch)
                    batch = await _apply_mixed(transforms, batch, ctx, first, source)
                if not batch:
                    continue
                for name in list(queues):
                    queue = queues.get(name)
                    if queue is not None:
                        await queue.put(batch)
                if not queues and names:
                    break  # every output failed: stop reading
            _check_bad(ctx, read, limits, dead)
        except BaseException as exc:  # noqa: BLE001 - extraction failed: commit nothing
            extraction_error = exc
        result.records_read += read
        if extraction_error is not None:
            stopping = True
            for queue in list(queues.values()):
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(_END)
            await asyncio.gather(*consumers.values(), return_exceptions=True)
            for name in names:
                if name in opened and result.outputs[name].status == "pending":
                    result.outputs[name].status = "aborted"
                    await self.abort(name)
            for name in names:
                if name in opened:
                    await self.close(name)
            if dead is not None:
                if isinstance(extraction_error, BadRecordsExceeded):
                    dead.commit(self._dead_load(names))  # what was rejected, to look at
                else:
                    dead.abort()
            raise extraction_error
        for queue in list(queues.values()):
            await queue.put(_END)
        await asyncio.gather(*consumers.values(), return_exceptions=True)
        state = getattr(extractor, "state", None)
        result.state = state
        await self._commit(names, state, dead)

    def _dead_load(self, names: list[str]) -> Any:
        """The load of the bad records, named like the outputs' (output ``dead_letter``)."""
        load = next((self.loads[n] for n in names if self.loads.get(n) is not None), None)
        if load is None:
            return None
        from pipectl.loads import Load

        return Load(load.pipeline, load.run_id, load.step, "dead_letter", load.writer)

    async def _commit(self, names: list[str], state: Any, dead: _DeadLetters | None) -> None:
        """Commit the outputs one after the other. A commit under way is never abandoned: if
        the step is cancelled meanwhile (Ctrl-C, a timeout, fail_fast), it is waited for
        (at most :data:`COMMIT_WAIT` seconds), recorded as what it became, the outputs not
        committed yet are aborted, and then the cancellation goes on."""
        result, live = self.result, self.live
        loop = asyncio.get_running_loop()
        if dead is not None:  # first: a resumed load finds its bad records there already
            try:
                await _in_thread(dead.commit, self._dead_load(names))
            except BaseException:
                for name in [n for n in names if n in self.opened]:
                    self.result.outputs[name].status = "aborted"
                    await self.abort(name)
                    await self.close(name)
                raise
        pending = [n for n in names if n in self.opened]
        cancelled: BaseException | None = None
        first = True
        for name in pending:
            report = result.outputs[name]
            if report.status != "pending" or cancelled is not None:
                if report.status == "pending":
                    report.status = "aborted"
                    report.error = "not committed: the step was cancelled"
                    await self.abort(name)
                await self.close(name)
                continue
            if not first:
                faults.reach("data.between-commits")
            first = False
            load = self.loads.get(name)
            if load is not None:
                load.records, load.state = report.written, state
            future = loop.run_in_executor(None, live[name].commit)
            try:
                await asyncio.shield(future)
            except asyncio.CancelledError as exc:
                cancelled = exc
                await asyncio.wait([future], timeout=COMMIT_WAIT)
            if future.done() and not future.cancelled() and future.exception() is None:
                report.status = "committed"
                self.committed.add(name)
            elif future.done() and not future.cancelled():
                await self.fail(name, future.exception())  # type: ignore[arg-type]
            else:
                report.status = "failed"
                report.error = (
                    f"the commit did not finish within {COMMIT_WAIT:.0f} s of the "
                    "cancellation; whether it committed is unknown until it ends "
                    "(a resume checks the load's marker)"
                )
                self.opened.discard(name)  # its thread still uses it: do not close under it
                continue
            await self.close(name)
        if pending and not cancelled:
            faults.reach("data.after-commits")
        if cancelled is not None:
            raise cancelled  # the committed set says what committed, for a retry or resume


def _oldest_first(groups: list[tuple[Any, list[str]]]) -> list[tuple[Any, list[str]]]:
    """Groups of outputs by cursor, the oldest cursor first (no cursor: everything, first) when
    the cursors compare (``{"cursor": value}`` with values of one type), else as they are."""

    def key(group: tuple[Any, list[str]]) -> tuple[bool, Any]:
        cursor = group[0]
        value = cursor.get("cursor") if isinstance(cursor, Mapping) else cursor
        return (value is not None, value)

    try:
        return sorted(groups, key=key)
    except TypeError:
        return groups


def _check_bad(
    ctx: DataContext, read: int, limits: tuple[int | None, float | None], dead: _DeadLetters | None
) -> None:
    """Fail the load if it rejected too many records (a percentage) or every one of them."""
    if not ctx.bad:
        return
    seen = read + ctx.bad - ctx.bad_transformed  # records the source gave, the bad ones too
    where = f"; the bad records are in {dead.path}" if dead is not None else ""
    if seen and ctx.bad >= seen:
        raise BadRecordsExceeded(
            f"every record of the source was rejected ({ctx.bad:,} bad "
            f"records); nothing was committed{where}"
        )
    _, pct = limits
    if pct is not None and seen and ctx.bad * 100.0 / seen > pct:
        raise BadRecordsExceeded(
            f"{ctx.bad:,} of {seen:,} records were rejected ({ctx.bad * 100.0 / seen:.1f}%), "
            f"more than max_bad_records={pct:g}%; nothing was committed{where}"
        )


async def _apply_mixed(
    transforms: list[Transform],
    batch: list[dict[str, Any]],
    ctx: DataContext,
    first_index: int,
    source: str,
) -> list[dict[str, Any]]:
    for transform in transforms:
        if not transform.is_async:
            batch = await _in_thread(_apply_sync, [transform], batch, ctx, first_index, source)
            continue
        func = transform.bound(ctx)
        if transform.per == "batch":
            batch = list(await func(batch))
            continue
        out: list[dict[str, Any]] = []
        for n, record in enumerate(batch):
            try:
                item = await func(record)
            except Exception as exc:  # noqa: BLE001 - a bad record, handled by the mode
                _transform_failed(
                    ctx, transform, record, exc, f"{source} record {first_index + n + 1}"
                )
                continue
            _keep(out, item)
        batch = out
    return batch
