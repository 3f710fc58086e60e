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
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

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

BAD_RECORD_MODES = ("fail", "skip", "dead_letter")
DEFAULT_BATCH_SIZE = 10_000
DEFAULT_BUFFER_SIZE = 4


class BadRecordError(PipectlError, ValueError):
    """A record could not be read or transformed, under ``on_bad_record: fail``."""

    def __init__(self, position: str, reason: str):
        self.position, self.reason = position, reason
        super().__init__(f"bad record at {position}: {reason} (on_bad_record: skip or "
                         "dead_letter would set it aside and go on)")


class DataStepError(PipectlError):
    """One or more outputs of a data step failed; the others committed. ``result`` is the
    step's :class:`DataStepResult` (each output's report), for trackers and resume."""

    def __init__(self, message: str, result: DataStepResult | None = None):
        super().__init__(message)
        self.result = result


class OutputReport:
    """What became of one output in a data step."""

    __slots__ = ("name", "written", "status", "error", "target")

    def __init__(self, name: str, target: str | None = None):
        self.name = name
        self.target = target  # where it writes: the output's describe(), e.g. "jsonl out/a.jsonl"
        self.written = 0
        self.status = "pending"  # committed | failed | aborted | skipped (committed earlier)
        self.error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"written": self.written, "status": self.status, "error": self.error,
                "target": self.target}

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
        """Records that went through the step (read, less the bad ones)."""
        return self.records_read

    def as_dict(self) -> dict[str, Any]:
        return {
            "records_read": self.records_read,
            "bad_records": self.bad_records,
            "outputs": {n: r.as_dict() for n, r in self.outputs.items()},
            "dead_letter_path": self.dead_letter_path,
        }

    def __repr__(self) -> str:
        return (f"DataStepResult(records_read={self.records_read}, "
                f"bad_records={self.bad_records}, outputs={list(self.outputs.values())})")


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


class _DeadLetters:
    """Bad records set aside with the reason beside each, committed with the step's attempt."""

    def __init__(self, path: Path):
        self.path = path
        self._tmp: Any = None
        self._tmp_path: str | None = None

    def add(self, raw: Any, reason: str, position: str) -> None:
        if self._tmp is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, self._tmp_path = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp",
                                                  dir=self.path.parent)
            self._tmp = os.fdopen(fd, "w", encoding="utf-8")
        self._tmp.write(json.dumps({"position": position, "reason": reason, "record": raw},
                                   ensure_ascii=False, default=str) + "\n")

    def commit(self) -> None:
        if self._tmp is None:
            return
        self._tmp.close()
        with open(self._tmp_path, encoding="utf-8") as src, \
                open(self.path, "a", encoding="utf-8") as dst:  # type: ignore[arg-type]
            dst.write(src.read())
        os.unlink(self._tmp_path)  # type: ignore[arg-type]
        self._tmp = None

    def abort(self) -> None:
        if self._tmp is not None:
            self._tmp.close()
            os.unlink(self._tmp_path)  # type: ignore[arg-type]
            self._tmp = None


class DataContext:
    """What extractors and outputs get from the runner."""

    def __init__(self, step: str, params: Mapping[str, Any], mode: str,
                 dead_letters: _DeadLetters | None, logger: Any):
        self.step = step
        self.params = params
        self.mode = mode
        self.bad = 0
        self.state: dict[str, Any] = {}  # transforms' own, for this attempt
        self._dead_letters = dead_letters
        self.logger = logger

    def bad_record(self, raw: Any, reason: str, position: str) -> None:
        """Report a record that cannot be used: raises under ``fail``, else sets it aside."""
        if self.mode == "fail":
            raise BadRecordError(position, reason)
        self.bad += 1
        if self._dead_letters is not None:
            self._dead_letters.add(raw, reason, position)


def resolve(kind: str, spec: Any, registries: Any) -> Any:
    """An extractor or output from an instance, ``{"type": name, **options}`` or a name."""
    if isinstance(spec, str):
        return registries.of(kind).create(spec)
    if isinstance(spec, Mapping):
        options = dict(spec)
        try:
            name = options.pop("type")
        except KeyError:
            raise ValueError(f"a {kind.rstrip('s')} given as a mapping needs a 'type' key, "
                             f"got keys {sorted(options)}") from None
        options.pop("name", None)
        component = registries.of(kind).get(name)
        try:
            return component.factory(**options)
        except TypeError as exc:  # most often an option the component does not take
            raise ValueError(f"{kind.rstrip('s')} {name!r} (plugin {component.plugin!r}): "
                             f"{exc}; check its options") from exc
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


def _apply_sync(transforms: list[Transform], batch: list[dict], ctx: DataContext,
                first_index: int, source: str) -> list[dict]:
    for transform in transforms:
        if transform.per == "batch":
            batch = list(transform.bound(ctx)(batch))
            continue
        out: list[dict] = []
        func = transform.bound(ctx)
        for n, record in enumerate(batch):
            try:
                result = func(record)
            except Exception as exc:  # noqa: BLE001 - a bad record, handled by the mode
                _transform_failed(ctx, transform, record, exc, f"{source} record {first_index + n}")
                continue
            _keep(out, result)
        batch = out
    return batch


def _transform_failed(ctx: DataContext, transform: Transform, record: dict, exc: Exception,
                      position: str) -> None:
    ctx.bad_record(record, f"transform {transform.name} raised {type(exc).__name__}: {exc}",
                   position)


def _keep(out: list[dict], result: Any) -> None:
    """A per-record transform's result: a record, None (dropped) or a list (split)."""
    if result is None:
        return
    if isinstance(result, list):
        out.extend(result)
    else:
        out.append(result)


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
) -> DataStepResult:
    """Stream ``extractor`` through ``transforms`` into every output of ``outputs`` (name, output).

    ``committed`` names outputs a previous attempt already committed: they are skipped (and the
    set is updated), so a retry writes no record twice. Raises the extraction error (nothing
    committed), or :class:`DataStepError` naming the outputs that failed (the others committed).
    """
    if on_bad_record not in BAD_RECORD_MODES:
        raise ValueError(f"on_bad_record must be one of {', '.join(BAD_RECORD_MODES)}, "
                         f"got {on_bad_record!r}")
    committed = committed if committed is not None else set()
    result = DataStepResult()
    dead = None
    if on_bad_record == "dead_letter":
        dead_path = Path(dead_letter or Path(".pipectl") / "dead_letters" / f"{step}.jsonl")
        dead = _DeadLetters(dead_path)
        result.dead_letter_path = str(dead_path)
    ctx = DataContext(step, params or {}, on_bad_record, dead, logger)
    transforms = list(transforms)
    sync_transforms = [t for t in transforms if not t.is_async]
    any_async = any(t.is_async for t in transforms)
    source = extractor.describe() if hasattr(extractor, "describe") else type(extractor).__name__

    live: dict[str, Any] = {}
    for name, output in outputs:
        report = result.outputs[name] = OutputReport(name, _describe(output))
        if name in committed:
            report.status = "skipped"
            continue
        live[name] = output

    async def close(name: str) -> None:
        try:
            await _in_thread(live[name].close)
        except Exception as exc:  # noqa: BLE001 - recorded, never hides the first error
            report = result.outputs[name]
            note = f"close failed: {type(exc).__name__}: {exc}"
            report.error = f"{report.error}; {note}" if report.error else note

    async def fail(name: str, exc: BaseException) -> None:
        report = result.outputs[name]
        report.status = "failed"
        report.error = report.error or f"{type(exc).__name__}: {exc}"
        try:
            await _in_thread(live[name].abort)
        except Exception as abort_exc:  # noqa: BLE001
            report.error += f"; abort failed: {type(abort_exc).__name__}: {abort_exc}"

    queues: dict[str, asyncio.Queue] = {}
    opened: set[str] = set()
    for name, output in live.items():
        try:
            await _in_thread(output.open, ctx)
            opened.add(name)
            queues[name] = asyncio.Queue(maxsize=buffer_size)
        except Exception as exc:  # noqa: BLE001 - this output fails, the others go on
            await fail(name, exc)
            await close(name)  # close always, as the contract says: open may have connected

    stopping = False  # extraction failed: consumers finish the write under way and stop

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
        except BaseException as exc:
            queues.pop(name, None)  # the producer stops feeding it
            while not queue.empty():  # let a producer blocked on put() go on
                queue.get_nowait()
            if not isinstance(exc, asyncio.CancelledError):
                await fail(name, exc)
            raise

    consumers = {name: asyncio.create_task(consume(name)) for name in list(queues)}
    extraction_error: BaseException | None = None
    try:
        batches = extractor.batches(ctx)
        if inspect.isasyncgen(batches):
            agen = batches
        else:
            iterator = iter(batches)

            def next_batch() -> Any:
                try:
                    batch = next(iterator)
                except StopIteration:
                    return _END
                first = result.records_read
                result.records_read += len(batch)
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
                result.records_read += len(batch)
                if sync_transforms and not any_async:
                    first = result.records_read - len(batch)
                    batch = _apply_sync(sync_transforms, batch, ctx, first, source)
            if any_async:  # the batch is still as read: all transforms apply here
                first = result.records_read - len(batch)
                batch = await _apply_mixed(transforms, batch, ctx, first, source)
            if not batch:
                continue
            for name in list(queues):
                queue = queues.get(name)
                if queue is not None:
                    await queue.put(batch)
            if not queues and live:
                break  # every output failed: stop reading
    except BaseException as exc:  # noqa: BLE001 - extraction failed: commit nothing
        extraction_error = exc
    if extraction_error is not None:
        stopping = True
        for queue in list(queues.values()):
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait(_END)
        await asyncio.gather(*consumers.values(), return_exceptions=True)
        for name in opened:
            if result.outputs[name].status == "pending":
                result.outputs[name].status = "aborted"
                try:
                    await _in_thread(live[name].abort)
                except Exception:  # noqa: BLE001 - the extraction error is the one to report
                    pass
        for name in opened:
            await close(name)
        if dead is not None:
            dead.abort()
        raise extraction_error
    for name, queue in list(queues.items()):
        await queue.put(_END)
    await asyncio.gather(*consumers.values(), return_exceptions=True)
    for name in opened:
        report = result.outputs[name]
        if report.status == "pending":
            try:
                await _in_thread(live[name].commit)
                report.status = "committed"
                committed.add(name)
            except Exception as exc:  # noqa: BLE001
                await fail(name, exc)
        await close(name)
    result.bad_records = ctx.bad
    if dead is not None:
        dead.commit()
    result.state = getattr(extractor, "state", None)
    failed = [r for r in result.outputs.values() if r.status == "failed"]
    if failed:
        raise DataStepError(
            f"data step {step!r}: "
            + "; ".join(f"output {r.name!r} failed: {r.error}" for r in failed)
            + (f" (committed: {', '.join(sorted(committed))})" if committed else ""),
            result,
        )
    return result


async def _apply_mixed(transforms: list[Transform], batch: list[dict], ctx: DataContext,
                       first_index: int, source: str) -> list[dict]:
    for transform in transforms:
        if not transform.is_async:
            batch = await _in_thread(_apply_sync, [transform], batch, ctx, first_index, source)
            continue
        func = transform.bound(ctx)
        if transform.per == "batch":
            batch = list(await func(batch))
            continue
        out: list[dict] = []
        for n, record in enumerate(batch):
            try:
                item = await func(record)
            except Exception as exc:  # noqa: BLE001 - a bad record, handled by the mode
                _transform_failed(ctx, transform, record, exc, f"{source} record {first_index + n}")
                continue
            _keep(out, item)
        batch = out
    return batch
