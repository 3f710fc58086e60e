"""The ``dask`` executor: every step attempt is one task on a dask.distributed cluster.

The engine stays in the driver (the process running ``pipectl run``): dependencies, retries,
timeouts, skips, ``fail_fast``, cancellation and every lifecycle hook are decided there, as with
the ``local`` executor. Only the attempt itself (the ``pipectl_wrap_step`` middleware chain
around the step function) runs on a worker.

Outputs stay on the workers. For an output that later steps consume,
:meth:`DaskExecutor.execute` returns a :class:`DaskOutput` handle, not the value; the consuming
step's task gets the dask future, so dask moves the data from worker to worker and it never
passes through the driver. The outputs the driver needs come back as values when their step
ends: the run's results (outputs no step consumes, what the user reads in ``run.steps``), the
outputs a ``when`` condition, an ``inputs`` reference or a rollback reads, and data steps'
reports. So ``run.steps["report"].output`` is the value, as with ``local``.

When the run captures step logs (:mod:`pipectl.step_logs`: it has a tracker), each task
captures its attempt's on the worker and the driver adds them to the attempt's log
(:func:`run_attempt`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import pickle
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pipectl import step_logs
from pipectl.executors import call_through_middleware

__all__ = [
    "ComponentMissingOnWorker",
    "DaskExecutor",
    "DaskOutput",
    "OutputNotFetched",
    "PluginMissingOnWorkers",
    "ResourcesUnavailable",
    "SchedulerUnreachable",
    "UnpicklableOutput",
    "UnpicklableTask",
    "WorkerContext",
]

_log = logging.getLogger("pipectl_dask")

FETCH_CHOICES = ("leaves", "all", "none")


class SchedulerUnreachable(ConnectionError):
    """No dask scheduler answered at the address within the timeout."""

    def __init__(self, address: str, timeout: float, cause: BaseException | None = None):
        detail = f": {type(cause).__name__}: {cause}" if cause is not None and str(cause) else ""
        super().__init__(
            f"cannot reach the dask scheduler at {address} within {timeout:g} s"
            f"{detail}; is it running, and is the address right "
            "(PIPECTL_DASK_SCHEDULER / scheduler=)?"
        )
        self.address = address
        self.timeout = timeout


class UnpicklableOutput(TypeError):
    """A step returned a value that cannot be pickled, so it could not leave its worker."""

    def __init__(self, step: str, type_name: str, error: str):
        super().__init__(
            f"step {step!r} returned a {type_name}, which cannot be pickled "
            f"({error}); with the dask executor a step's output must be picklable "
            "to reach the steps that use it and the driver"
        )
        self.step = step
        self.type_name = type_name

    def __reduce__(self) -> Any:  # raised on a worker, re-raised in the driver
        return (_unpicklable, (self.step, self.type_name, str(self)), vars(self))


def _unpicklable(step: str, type_name: str, message: str) -> UnpicklableOutput:
    exc = UnpicklableOutput.__new__(UnpicklableOutput)
    TypeError.__init__(exc, message)
    exc.step, exc.type_name = step, type_name
    return exc


class OutputNotFetched(RuntimeError):
    """The handle's value stayed on the cluster and the cluster is gone (or not reachable)."""


class DaskOutput:
    """A step's output kept on a dask worker: what ``run.steps[name].output`` holds.

    ``key`` is the dask key of the attempt that produced it, ``type_name`` the value's type (known
    without fetching it), ``records_processed`` the value's own count when its type has one. Call
    :meth:`result` for the value: available for the outputs fetched at the end of the run
    (the final steps' by default, see ``DaskExecutor(fetch=...)``)."""

    __slots__ = (
        "_has_value",
        "_value",
        "key",
        "pipectl_stored",
        "records_processed",
        "step",
        "type_name",
    )

    def __init__(
        self,
        key: str,
        step: str,
        type_name: str,
        records_processed: int | None = None,
        stored: bool = False,
    ):
        self.key = key
        self.step = step
        self.type_name = type_name
        self.records_processed = records_processed
        #: the worker wrote the value to the run's result store (the tracker's), so a resume
        #: can take it from there
        self.pipectl_stored = stored
        self._value: Any = None
        self._has_value = False

    @property
    def fetched(self) -> bool:
        return self._has_value

    def result(self) -> Any:
        if not self._has_value:
            raise OutputNotFetched(
                f"the output of step {self.step!r} ({self.type_name}) stayed on the dask cluster "
                "and was released at the end of the run: only the outputs no step consumed are "
                "fetched by default (DaskExecutor(fetch='all') fetches every output)"
            )
        return self._value

    def _set(self, value: Any) -> None:
        self._value = value
        self._has_value = True

    def __reduce__(self) -> Any:
        if not self._has_value:  # e.g. the tracker's result store: it would keep an empty handle
            raise TypeError(
                f"the output of step {self.step!r} is on the dask cluster: a "
                "handle without its value cannot be pickled"
            )
        return (
            _restore,
            (
                self.key,
                self.step,
                self.type_name,
                self.records_processed,
                self._has_value,
                self._value,
                self.pipectl_stored,
            ),
        )

    def __repr__(self) -> str:
        where = "fetched" if self._has_value else "on the cluster"
        return f"<DaskOutput step={self.step!r} type={self.type_name} {where}>"


def _restore(
    key: str,
    step: str,
    type_name: str,
    records: int | None,
    has_value: bool,
    value: Any,
    stored: bool = False,
) -> DaskOutput:
    out = DaskOutput(key, step, type_name, records, stored)
    if has_value:
        out._set(value)
    return out


class WorkerContext:
    """The ``ctx`` a step function gets on a dask worker: a picklable subset of
    :class:`pipectl.context.StepContext`.

    It offers ``run_id``, ``pipeline_id``, ``step``, ``params`` (read-only), ``attempt``,
    ``logger`` (a structlog logger bound to ``run_id`` and ``step``; its lines go to the
    worker's log, and to the step's logs when the run captures them), ``components`` (the
    component registries of the plugins installed on the worker) and ``state``: this step's
    part of the run state (its entry of ``extractor_state`` and the keys that are tuples ending
    with its name, such as which outputs a data step committed), sent with the attempt; what
    the attempt changes in it goes back to the driver's run state when the attempt ends,
    succeeded or failed. The driver's ``services``, ``results`` and ``run_pipeline`` live in
    the driver and are not available: using them raises :class:`RuntimeError` saying so."""

    __slots__ = ("_logger", "_state", "attempt", "params", "pipeline_id", "run_id", "step")

    def __init__(
        self,
        run_id: str,
        pipeline_id: str,
        step: str,
        params: Mapping[str, Any],
        attempt: int,
        state: dict[Any, Any] | None = None,
    ):
        self.run_id = run_id
        self.pipeline_id = pipeline_id
        self.step = step
        self.params = MappingProxyType(dict(params))
        self.attempt = attempt
        self._logger: Any = None
        self._state = state if state is not None else {}

    @property
    def logger(self) -> Any:
        if self._logger is None:
            from pipectl import log

            self._logger = log.get_logger().bind(run_id=self.run_id, step=self.step)
        return self._logger

    @property
    def state(self) -> dict[Any, Any]:
        return self._state

    @property
    def components(self) -> Any:
        return worker_registries()

    def _driver_only(self, what: str) -> Any:
        raise RuntimeError(
            f"ctx.{what} is not available on a dask worker (step {self.step!r}): "
            "it lives in the driver; pass what the step needs as params or "
            "upstream outputs, or run the step with the local executor"
        )

    services = property(lambda self: self._driver_only("services"))
    results = property(lambda self: self._driver_only("results"))

    async def run_pipeline(self, pipeline: Any, params: Any = None) -> Any:
        self._driver_only("run_pipeline")

    def __repr__(self) -> str:
        return f"WorkerContext(run_id={self.run_id!r}, step={self.step!r}, attempt={self.attempt})"


_registries: Any = None


def worker_registries() -> Any:
    """The component registries of this worker process: the built-ins and every plugin
    installed in its environment (loaded once per process)."""
    global _registries
    if _registries is None:
        from pipectl.plugins import get_plugin_manager

        _registries = get_plugin_manager().registries
    return _registries


def step_state(shared: Mapping[Any, Any], step: str) -> dict[Any, Any]:
    """The part of the driver's run state that belongs to ``step`` (see :class:`WorkerContext`)."""
    part: dict[Any, Any] = {}
    extractors = shared.get("extractor_state")
    if isinstance(extractors, dict) and step in extractors:
        part["extractor_state"] = {step: extractors[step]}
    for key in ("load_run", "extractor_state_explicit"):  # the run's, read by data steps
        if key in shared:
            part[key] = shared[key]
    for key, value in shared.items():
        if isinstance(key, tuple) and key and key[-1] == step:
            part[key] = value
    return part


def merge_state(shared: dict[Any, Any], step: str, part: Mapping[Any, Any]) -> None:
    """Put what an attempt on a worker left in its part of the state back into the run's."""
    extractors = part.get("extractor_state")
    if isinstance(extractors, dict) and step in extractors:
        shared.setdefault("extractor_state", {})[step] = extractors[step]
    for key, value in part.items():
        if isinstance(key, tuple) and key and key[-1] == step:
            shared[key] = value


WorkerLogs = tuple[tuple[step_logs.LogLine, ...], int, int]
"""What an attempt logged on its worker: its lines (``(logged_at, stream, level, message)``,
partial lines ended) and how many lines and bytes its bounds left out there."""


class _WithState:
    """An attempt's output with the state it changed on the worker and the lines it logged
    there, when the driver captures them (see :func:`run_attempt`); either may be None."""

    __slots__ = ("logs", "output", "state")

    def __init__(self, output: Any, state: dict[Any, Any] | None, logs: WorkerLogs | None = None):
        self.output = output
        self.state = state
        self.logs = logs

    def __reduce__(self) -> Any:
        return (_WithState, (self.output, self.state, self.logs))


class ComponentMissingOnWorker(LookupError):
    """A step asked a worker for a component (extractor, output...) that no plugin installed on
    that worker registers, although the driver has it: the plugin is missing on the workers."""

    def __init__(
        self, message: str, step: str = "", kind: str = "", name: str = "", worker: str = ""
    ):
        super().__init__(message)
        self.step, self.kind, self.name, self.worker = step, kind, name, worker

    def __reduce__(self) -> Any:
        return (
            ComponentMissingOnWorker,
            (str(self), self.step, self.kind, self.name, self.worker),
            vars(self),
        )


class ResourcesUnavailable(RuntimeError):
    """A step asks for worker resources (``resources: {GPU: 1}``) that no worker offers."""


class PluginMissingOnWorkers(ImportError):
    """Code a step needs is installed in the driver but not on the dask workers."""

    def __reduce__(self) -> Any:
        return (PluginMissingOnWorkers, (str(self),), vars(self))


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except Exception:
        return "?"


def _context_to_worker(ctx: Any) -> Any:
    """How the driver's :class:`~pipectl.context.StepContext` travels, when a step's function
    or a middleware holds it: as the :class:`WorkerContext` of the same step and attempt."""
    return (WorkerContext, (ctx.run_id, ctx.pipeline_id, ctx.step, dict(ctx.params), ctx.attempt))


def _register_context_pickling() -> None:
    import copyreg

    from pipectl.context import StepContext

    copyreg.pickle(StepContext, _context_to_worker)


class UnpicklableTask(TypeError):
    """A step's function, arguments or middleware cannot be pickled, so it cannot go to a
    dask worker."""


class _Ctx:
    """Stands for the step's ``ctx`` in a task's arguments (the real one stays in the driver)."""

    def __reduce__(self) -> Any:
        return (_ctx_marker, ())


class _Params(_Ctx):
    def __reduce__(self) -> Any:
        return (_params_marker, ())


CTX = _Ctx()
PARAMS = _Params()


def _ctx_marker() -> _Ctx:
    return CTX


def _params_marker() -> _Params:
    return PARAMS


_Info = tuple[str, str, str, dict[str, Any], int, str | None, dict[Any, Any] | None, Any]
"""What a task knows of its attempt: run id, pipeline id, step, params, attempt, the file name
of code shipped by value, the step's part of the run state, the result store."""


def run_attempt(
    func: Callable[..., Any],
    is_async: bool,
    kwargs: dict[str, Any],
    middleware: tuple[Any, ...],
    info: _Info,
    check_pickle: bool,
    logs: tuple[str, bool] | None = None,
) -> Any:
    """The task of one attempt, on a worker: the middleware chain around ``func(**kwargs)``.

    When the attempt changed its part of the run state (``ctx.state``), the output comes back
    wrapped with the state (:class:`_WithState`), or the exception carries it
    (``pipectl_state``), so the driver can merge it.

    ``logs``: the driver captures the attempt's logs (``(the task's key, whether the driver
    fetches the output)``), so the attempt's are captured here (:func:`_captured`); None: nothing
    is (and nothing costs)."""
    if logs is None:
        return _attempt(func, is_async, kwargs, middleware, info, check_pickle)
    return _captured(func, is_async, kwargs, middleware, info, check_pickle, *logs)


#: the lines of attempts whose output stays on this worker, by task key, until the driver takes
#: them (:meth:`DaskExecutor._take_logs`); bounded, in case a driver never comes for them
_KEPT_LOGS: OrderedDict[str, WorkerLogs] = OrderedDict()
_KEPT_MAX = 256
_kept_lock = threading.Lock()


def _captured(
    func: Callable[..., Any],
    is_async: bool,
    kwargs: dict[str, Any],
    middleware: tuple[Any, ...],
    info: _Info,
    check_pickle: bool,
    key: str,
    fetched: bool,
) -> Any:
    """:func:`_attempt`, what it prints, writes to stderr, logs with ``logging`` and pipectl's
    events (``ctx.logger``) captured into a buffer of its own (:mod:`pipectl.step_logs`:
    installed for the task, reference-counted, and :data:`~pipectl.step_logs.CURRENT` set in
    the task's own context, which the worker's thread runs it in, so concurrent tasks of a
    worker never mix their lines). The lines go back to the driver with what goes there: the
    output when the driver fetches it (:class:`_WithState`), the exception
    (``pipectl_logs``); when the output stays on the cluster, they wait here for the driver
    (:meth:`DaskExecutor._take_logs`)."""
    log = step_logs.AttemptLog(1)
    step_logs.install()
    token = step_logs.CURRENT.set(log)
    try:
        try:
            output = _attempt(func, is_async, kwargs, middleware, info, check_pickle)
        finally:
            step_logs.CURRENT.reset(token)
            step_logs.uninstall()
    except BaseException as exc:
        lines = _worker_logs(log)
        if lines is not None:
            with contextlib.suppress(Exception):
                exc.pipectl_logs = lines  # type: ignore[attr-defined]
        raise
    lines = _worker_logs(log)
    if lines is None:
        return output
    if isinstance(output, _WithState):
        output.logs = lines
        return output
    if fetched or type(output).__module__ == "pipectl.data":  # the driver fetches it
        return _WithState(output, None, lines)
    with _kept_lock:
        _KEPT_LOGS[key] = lines
        while len(_KEPT_LOGS) > _KEPT_MAX:
            _KEPT_LOGS.popitem(last=False)
    return output


def _worker_logs(log: step_logs.AttemptLog) -> WorkerLogs | None:
    """The lines of ``log`` (closed), without the framing the driver's attempt adds itself;
    None when it has none."""
    lines = log.close()
    if not lines:
        return None
    # an attempt 1 with lines begins with the step_started event; one that left lines out
    # ends with the note saying how many: the driver's own attempt log writes both
    return lines[1 : len(lines) - (1 if log.left_lines else 0)], log.left_lines, log.left_bytes


def _pop_kept_logs(key: str) -> WorkerLogs | None:
    """Run on a worker by the driver (``Client.run``): the lines kept for task ``key``."""
    with _kept_lock:
        return _KEPT_LOGS.pop(key, None)


def _attempt(
    func: Callable[..., Any],
    is_async: bool,
    kwargs: dict[str, Any],
    middleware: tuple[Any, ...],
    info: _Info,
    check_pickle: bool,
) -> Any:
    """:func:`run_attempt` without capturing."""
    run_id, pipeline_id, step, params, attempt, filename, state, store = info
    if filename is not None:
        code = getattr(func, "__code__", None)
        if code is not None and code.co_filename == _DYNAMIC:
            _restore_filename(func, filename)
    ctx: WorkerContext | None = None
    before = None
    call_kwargs = {}
    for name, value in kwargs.items():
        if value is CTX:
            if ctx is None:
                if state is not None:
                    import copy

                    before = copy.deepcopy(state)
                ctx = WorkerContext(run_id, pipeline_id, step, params, attempt, state)
            value = ctx
        elif value is PARAMS:
            value = MappingProxyType(params)
        call_kwargs[name] = value
    try:
        if middleware:
            output = asyncio.run(
                _through_middleware(func, is_async, call_kwargs, middleware, attempt)
            )
        elif is_async:
            output = asyncio.run(func(**call_kwargs))
        else:
            output = func(**call_kwargs)
            if inspect.isawaitable(output):  # a sync callable that returned a coroutine
                output = asyncio.run(_await(output))
        if store is not None and output is not None:
            _store_output(store, run_id, step, output)  # checks it pickles, too
        elif check_pickle and output is not None:
            _check_picklable(step, output)
    except BaseException as exc:
        if ctx is not None and ctx._state and ctx._state != before:
            with contextlib.suppress(Exception):
                exc.pipectl_state = ctx._state  # type: ignore[attr-defined]
        if type(exc).__name__ == "UnknownComponentError" and ctx is not None:
            raise ComponentMissingOnWorker(
                f"{exc}",
                step,
                getattr(exc, "kind", ""),
                getattr(exc, "name", ""),
                _worker_address(),
            ) from None
        raise
    if ctx is not None and ctx._state and ctx._state != before:
        return _WithState(output, ctx._state)
    return output


async def _await(awaitable: Any) -> Any:
    return await awaitable


async def _through_middleware(
    func: Callable[..., Any],
    is_async: bool,
    kwargs: dict[str, Any],
    middleware: tuple[Any, ...],
    attempt: int,
) -> Any:
    async def call() -> Any:
        output = func(**kwargs)
        if is_async or inspect.isawaitable(output):
            output = await output
        return output

    def link(index: int) -> Callable[[], Any]:
        if index == len(middleware):
            return call
        inner = link(index + 1)
        return lambda: middleware[index](inner, attempt)

    return await link(0)()


_SCALARS = (bool, int, float, str, bytes, bytearray, type(None))


def _store_output(store: Any, run_id: str, step: str, output: Any) -> None:
    """Write ``output`` to the run's result store from the worker; an output that cannot be
    pickled fails its step (:class:`UnpicklableOutput`); a store that cannot be written (not
    reachable from this worker) is only logged: a resume will run the step again."""
    try:
        blob = pickle.dumps(output, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        try:
            import cloudpickle

            blob = cloudpickle.dumps(output, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise UnpicklableOutput(
                step, _type_name(type(output)), f"{type(exc).__name__}: {exc}"
            ) from None
    try:
        store.put(run_id, step, blob)
    except Exception as exc:
        _log.warning(
            "pipectl-dask: could not store the output of step %r in the result "
            "store from this worker: %s",
            step,
            exc,
        )


def _picklable(obj: Any) -> bool:
    if obj is None:
        return False
    try:
        pickle.dumps(obj)
    except Exception:
        return False
    return True


def _check_picklable(step: str, output: Any) -> None:
    if type(output) in _SCALARS:
        return
    buffers: list[Any] = []  # protocol 5: large buffers (arrays, bytearrays) are not copied
    try:
        pickle.dumps(output, protocol=5, buffer_callback=buffers.append)
    except Exception:
        try:
            import cloudpickle

            cloudpickle.dumps(output, protocol=5, buffer_callback=buffers.append)
        except Exception as exc:
            raise UnpicklableOutput(
                step, _type_name(type(output)), f"{type(exc).__name__}: {exc}"
            ) from None


def _unpicklable_task(step: str, exc: BaseException) -> UnpicklableTask:
    return UnpicklableTask(
        f"step {step!r} cannot go to a dask worker: its function, arguments or a "
        "pipectl_wrap_step middleware holds something that cannot be pickled "
        f"({_serialize_detail(exc)}); create such objects inside the step (or the "
        "middleware), not around it"
    )


def _serialize_detail(exc: BaseException) -> str:
    """The innermost cause of a serialization failure (``cannot pickle '_thread.lock'``)."""
    inner: BaseException | None = exc
    while inner is not None and (inner.__cause__ or inner.__context__) is not None:
        inner = inner.__cause__ or inner.__context__
    return f"{type(inner).__name__}: {inner}" if inner is not None else str(exc)


def _distribution_of(module: str) -> str | None:
    """``name==version`` of the installed distribution holding ``module``, if any."""
    top = module.partition(".")[0]
    try:
        from importlib.metadata import packages_distributions, version

        names = packages_distributions().get(top) or []
        return f"{names[0]}=={version(names[0])}" if names else None
    except Exception:
        return None


def _add_logs(log: step_logs.AttemptLog, logs: Any) -> None:
    """Append what an attempt logged on its worker (:data:`WorkerLogs`) to the driver's attempt
    log: timestamps and streams kept, within the attempt's bounds."""
    if isinstance(logs, tuple) and len(logs) == 3:
        lines, left_lines, left_bytes = logs
        log.extend(lines, left_lines, left_bytes)


async def _call_here(invocation: Any) -> Any:
    output = invocation.func(**invocation.kwargs)
    if inspect.isawaitable(output):
        output = await output
    return output


#: the scheduler of the run whose sub-pipeline step is running (in this task's context)
_PARENT_SCHEDULER: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "pipectl_dask_parent_scheduler", default=None
)


def _quicken(client: Any, interval: float) -> None:
    """Send the client's messages to the scheduler at most ``interval`` seconds apart instead
    of distributed's 10 ms: the engine submits a step when its upstream ends, so in a chain
    every submission would otherwise wait for the next 10 ms batch."""
    comm = getattr(client, "scheduler_comm", None)
    if comm is not None and hasattr(comm, "interval"):
        comm.interval = interval


def _records_of(output: Any) -> int | None:
    records = getattr(output, "records_processed", None)
    return records if isinstance(records, int) else None


def _type_name(tp: Any) -> str:
    if not isinstance(tp, type):
        return "object"
    module = tp.__module__
    return tp.__qualname__ if module == "builtins" else f"{module}.{tp.__qualname__}"


_installed_modules: set[str] | None = None


def _installed_top_levels() -> set[str]:
    """Top-level module names of the installed distributions (once per process)."""
    global _installed_modules
    if _installed_modules is None:
        from importlib.metadata import packages_distributions

        _installed_modules = set(packages_distributions())
    return _installed_modules


def ship_by_value(module_name: str) -> list[str]:
    """Have cloudpickle send the code of ``module_name``, and of the modules loaded from the
    same directory, by value when that code is not installed (not in the standard library nor
    in an installed distribution): a pipeline's own ``transforms.py`` then runs on workers
    that never saw the file. Returns the modules registered."""
    top = module_name.partition(".")[0]
    if (
        not top
        or top == "__main__"
        or top in sys.stdlib_module_names
        or top in sys.builtin_module_names
        or top in _installed_top_levels()
    ):
        return []
    module = sys.modules.get(top)
    origin = getattr(module, "__file__", None)
    if not origin:
        return []
    from pathlib import Path

    import cloudpickle

    root = Path(origin).resolve().parent
    if module is not None and getattr(module, "__path__", None):  # a package: its parent
        root = root.parent
    registered = []
    for name, loaded in list(sys.modules.items()):
        file = getattr(loaded, "__file__", None)
        if (
            not file
            or "." in name
            or name in sys.stdlib_module_names
            or name in _installed_top_levels()
        ):
            continue
        try:
            inside = Path(file).resolve().is_relative_to(root)
        except (OSError, ValueError):
            continue
        if inside:
            with contextlib.suppress(Exception):
                cloudpickle.register_pickle_by_value(loaded)
                registered.append(name)
    return registered


def _modules_of(func: Any, depth: int = 0) -> list[str]:
    """The modules of ``func`` and of the callables its closure holds (directly, in lists, or
    as the ``func`` of an object such as a data step's ``Transform``)."""
    module = getattr(func, "__module__", None) or type(func).__module__
    found = [module] if module else []
    if depth > 2:
        return found
    for cell in getattr(func, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        items = value if isinstance(value, (list, tuple)) else (value,)
        for item in items:
            inner = getattr(item, "func", None) if not callable(item) else item
            if callable(inner) and not isinstance(inner, type):
                found.extend(_modules_of(inner, depth + 1))
    return found


class _ByValue:
    """A step function pickled by cloudpickle, code included; unpickles as the function.

    cloudpickle names the file of code it ships ``<dynamic-code>``; ``filename`` goes with the
    task and :func:`run_attempt` puts it back, so a traceback from a worker points at the
    user's file and line."""

    __slots__ = ("blob", "filename")

    def __init__(self, func: Any):
        import cloudpickle

        self.blob = cloudpickle.dumps(func, protocol=5)
        code = getattr(func, "__code__", None)
        self.filename = code.co_filename if code is not None else None

    def __reduce__(self) -> Any:
        return (_load_by_value, (self.blob,))


_DYNAMIC = "<dynamic-code>"


def _refile(code: Any, filename: str) -> Any:
    consts = tuple(_refile(c, filename) if isinstance(c, type(code)) else c for c in code.co_consts)
    if code.co_filename == _DYNAMIC or consts != code.co_consts:
        code = code.replace(
            co_filename=filename if code.co_filename == _DYNAMIC else code.co_filename,
            co_consts=consts,
        )
    return code


def _load_by_value(blob: bytes) -> Any:
    import cloudpickle

    return cloudpickle.loads(blob)


def _restore_filename(func: Any, filename: str) -> None:
    """Put the file name cloudpickle dropped back on ``func`` and on the functions of its module
    that it calls (same file), so a traceback from the worker names the user's file."""
    module = getattr(func, "__module__", None)
    for obj in (func, *getattr(func, "__globals__", {}).values()):
        code = getattr(obj, "__code__", None)
        if (
            code is not None
            and code.co_filename == _DYNAMIC
            and getattr(obj, "__module__", None) == module
        ):
            with contextlib.suppress(Exception):
                obj.__code__ = _refile(code, filename)


class DaskExecutor:
    """Runs each step attempt as one dask task (see the module's documentation).

    :param scheduler: the address of a running scheduler (``tcp://host:8786``).
    :param local_workers: start a ``LocalCluster`` of that many worker processes instead (closed
        at the end of the run); with neither, a local cluster of one worker per core.
    :param threads_per_worker: threads of each local worker.
    :param timeout: seconds to wait for the scheduler before giving up.
    :param fetch: ``"leaves"`` (default): the run's results (outputs no step consumes) come
        to the driver when their step ends, the others stay on the cluster; ``"all"``: the
        consumed outputs are also fetched at the end of the run, into their
        :class:`DaskOutput` handles and in place of them in ``run.steps``; ``"none"``: even the
        results stay on the cluster (handles only).
    :param check_pickle: pickle each output on its worker right away, so an output that could
        never leave it fails its step with :class:`UnpicklableOutput` (costs one serialization).
    :param client: an existing asynchronous ``distributed.Client`` to use (not closed).
    :param announce: print the scheduler and the dashboard link to stderr when the run starts.
    :param ship_code: send the code of step modules that are not installed (a pipeline's own
        ``transforms.py``) to the workers by value, see :func:`ship_by_value`.
    :param submit_interval: seconds between the batches of messages the executor's own client
        sends to the scheduler (distributed batches them every 10 ms; a chain of steps, each
        submitted when its upstream ends, would wait for the next batch at every step).
    :param store_outputs: when the run's tracker keeps outputs for resume, have the worker
        write each output that stays on the cluster to that result store (the tracker writes
        the others); a resume then takes them from there. Needs the store's directory to be
        reachable from the workers (a local cluster, a shared file system); where it is not, a
        resume runs those steps again.
    """

    name = "dask"

    @property
    def framework_paths(self) -> tuple[str, ...]:
        """Left out of a failed step's traceback: the client's frames that re-raise it."""
        import distributed

        return (str(Path(distributed.__file__).resolve().parent),)

    def __init__(
        self,
        scheduler: str | None = None,
        local_workers: int | None = None,
        threads_per_worker: int = 1,
        timeout: float = 10,
        fetch: str = "leaves",
        check_pickle: bool = True,
        client: Any = None,
        announce: bool = True,
        ship_code: bool = True,
        store_outputs: bool = True,
        submit_interval: float = 0.001,
    ):
        if fetch not in FETCH_CHOICES:
            raise ValueError(f"fetch={fetch!r}: expected one of {', '.join(FETCH_CHOICES)}")
        if scheduler is not None and local_workers is not None:
            raise ValueError("give either scheduler (an address) or local_workers, not both")
        self.scheduler = scheduler
        self.local_workers = None if local_workers is None else int(local_workers)
        self.threads_per_worker = int(threads_per_worker)
        self.timeout = float(timeout)
        self.fetch = fetch
        self.check_pickle = check_pickle
        self.announce = announce
        self.ship_code = ship_code
        self.store_outputs = store_outputs
        self.submit_interval = float(submit_interval)
        if not 0 < self.submit_interval <= 1:
            raise ValueError(
                f"submit_interval={submit_interval!r}: expected seconds, more than 0 and at most 1"
            )
        self._shipped: set[str] = set()  # top-level modules looked at
        self._not_installed: set[str] = set()  # those whose code travels by value
        self._by_value: dict[int, tuple[Any, Any]] = {}
        self.client: Any = client
        self._own_client = client is None
        self.cluster: Any = None
        self.dashboard_link: str | None = None
        self._run_id = ""
        self._pipeline_id = ""
        self._futures: dict[str, Any] = {}  # key -> future of every output still held
        self._outputs: dict[str, DaskOutput] = {}
        self._consumed: set[str] = set()
        self._cancels: set[asyncio.Task] = set()
        self._params: dict[str, Any] | None = None
        self._run: Any = None
        self._store: Any = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self, run: Any, config: Any, max_concurrent: int | None) -> None:
        self._run = run
        self._offered: frozenset[str] | None = None  # the workers' resource names (asked once)
        _register_context_pickling()
        store = getattr(config, "result_store", None)  # the tracker's, when it keeps outputs
        self._store = store if self.store_outputs and _picklable(store) else None
        self._run_id = run.run_id
        self._pipeline_id = run.pipeline_id
        if self.client is None:
            self.client = await self._connect()
        if self._own_client:
            _quicken(self.client, self.submit_interval)
        self.dashboard_link = getattr(self.client, "dashboard_link", None)
        where = self.scheduler or getattr(self.client.scheduler, "address", "a local cluster")
        _log.info(
            "pipectl-dask: run %s on %s, dashboard: %s", run.run_id, where, self.dashboard_link
        )
        if self.announce and not getattr(run, "parent_run_id", None):  # not for a sub-pipeline
            kind = "local cluster" if self.cluster is not None else "scheduler"
            print(
                f"dask: {kind} {where}, dashboard: {self.dashboard_link or 'none'}",
                file=sys.stderr,
                flush=True,
            )
        try:
            from pipectl import log

            log.get_logger().info(
                "dask_executor_started",
                run_id=run.run_id,
                scheduler=where,
                dashboard=self.dashboard_link,
            )
        except Exception:
            pass

    async def _connect(self) -> Any:
        from distributed import Client

        parent = _PARENT_SCHEDULER.get()
        if self.scheduler is None and parent is not None:  # a sub-pipeline's run
            self.scheduler = parent
        if self.scheduler is None:
            from distributed import LocalCluster

            self.cluster = await LocalCluster(
                n_workers=self.local_workers,
                processes=True,
                threads_per_worker=self.threads_per_worker,
                asynchronous=True,
                dashboard_address=":0",
            )
            return await Client(self.cluster, asynchronous=True)
        client = Client(self.scheduler, asynchronous=True, timeout=self.timeout)
        try:
            return await asyncio.wait_for(client, self.timeout + 1)
        except (OSError, TimeoutError) as exc:
            with contextlib.suppress(Exception):
                await client.close()
            raise SchedulerUnreachable(self.scheduler, self.timeout, exc) from None
        except ValueError as exc:  # a malformed address
            with contextlib.suppress(Exception):
                await client.close()
            raise ValueError(f"scheduler={self.scheduler!r}: {exc}") from None

    async def shutdown(self) -> None:
        client = self.client
        try:
            if self._cancels:
                await asyncio.gather(*self._cancels, return_exceptions=True)
            if client is not None:
                await self._fetch_outputs()
        finally:
            futures = list(self._futures.values())
            self._futures.clear()
            for future in futures:
                with contextlib.suppress(Exception):
                    future.release()
            if self._own_client and client is not None:
                self.client = None
                await client.close()
            if self.cluster is not None:
                cluster, self.cluster = self.cluster, None
                await cluster.close()

    async def _fetch_outputs(self) -> None:
        if self.fetch == "none":
            return
        wanted = [
            o
            for key, o in self._outputs.items()
            if self.fetch == "all" or key not in self._consumed
        ]
        if not wanted:
            return
        values = await self.client.gather([self._futures[o.key] for o in wanted])
        steps = getattr(self._run, "steps", None) if self.fetch == "all" else None
        for output, value in zip(wanted, values, strict=True):
            output._set(value)
            result = steps.get(output.step) if steps is not None else None
            if result is not None and result.output is output:
                # fetch="all": the run's results show values, as with local (the same result
                # object the listeners saw, its handle replaced by the value it stood for)
                object.__setattr__(result, "output", value)

    # -- attempts -----------------------------------------------------------------------------

    async def execute(self, invocation: Any) -> Any:
        client = self.client
        if client is None:
            raise RuntimeError("the dask executor was not started")
        spec = invocation.step
        context = invocation.context
        if getattr(invocation.func, "runs_in_driver", False):
            # a sub-pipeline step: it orchestrates a child run, whose executor (built from the
            # same options) uses this run's cluster rather than starting one of its own
            token = _PARENT_SCHEDULER.set(self.client.scheduler.address)
            try:
                return await call_through_middleware(invocation, _call_here)
            finally:
                _PARENT_SCHEDULER.reset(token)
        step_params = getattr(context, "params", None)
        if self._params is None:
            self._params = dict(step_params or {})
        kwargs: dict[str, Any] = {}
        for name, value in invocation.kwargs.items():
            if isinstance(value, DaskOutput):
                future = self._futures.get(value.key)
                if future is not None:
                    self._consumed.add(value.key)
                    value = future
                # else: an output of an earlier run (resume): passed as it is
            elif value is context and context is not None:
                value = CTX
            elif value is step_params and step_params is not None:
                value = PARAMS
            kwargs[name] = value
        try:
            func = self._shippable(invocation.func) if self.ship_code else invocation.func
        except Exception as exc:
            raise _unpicklable_task(spec.name, exc) from None
        key = f"pipectl-{spec.name}-a{invocation.attempt}-{self._run_id}"
        shared = getattr(context, "state", None)
        state = step_state(shared, spec.name) if isinstance(shared, dict) else None
        fetch = invocation.driver_reads or (
            getattr(invocation, "final", False) and self.fetch != "none"
        )
        keeps = getattr(spec, "store_output", True)  # store_output=False: never stored
        store = self._store if self._store is not None and not fetch and keeps else None
        info = (
            self._run_id,
            self._pipeline_id,
            spec.name,
            self._params,
            invocation.attempt,
            func.filename if isinstance(func, _ByValue) else None,
            state,
            store,
        )
        resources = getattr(spec, "resources", None) or None
        pools = getattr(spec, "pools", None)
        if pools:  # a pool the workers offer as a resource limits each worker too
            offered = await self._offered_resources()
            extra = {n: float(w) for n, w in pools.items() if n in offered}
            if extra:
                resources = {**extra, **(resources or {})}
        if resources:
            await self._check_resources(spec.name, resources)
        # the attempt's logs are captured (a tracked run): the worker captures them too
        log = step_logs.CURRENT.get()
        future = client.submit(
            run_attempt,
            func,
            invocation.is_async,
            kwargs,
            tuple(invocation.middleware),
            info,
            self.check_pickle,
            None if log is None else (key, bool(fetch)),
            key=key,
            pure=False,
            resources=resources,
        )
        try:
            await future._state.wait()
        except asyncio.CancelledError:
            self._cancel(future)
            raise
        if future.status != "finished":
            try:
                await future  # raises the step's exception, with its traceback
            except BaseException as exc:
                part = getattr(exc, "pipectl_state", None)
                if isinstance(part, dict) and isinstance(shared, dict):
                    merge_state(shared, spec.name, part)
                if log is not None:
                    _add_logs(log, getattr(exc, "pipectl_logs", None))
                if isinstance(exc, TypeError) and "Could not serialize" in str(exc):
                    raise _unpicklable_task(spec.name, exc) from None
                raise self._explain(exc, spec.name, context, invocation.func) from (
                    None
                    if isinstance(exc, (ComponentMissingOnWorker, ImportError, RuntimeError))
                    else exc
                )
            finally:
                future.release()
            raise RuntimeError(f"dask task {key} ended {future.status}")
        tp = future.type
        if tp is _WithState:  # the attempt changed its part of the run state: fetch both
            try:
                wrapped = await future
            finally:
                future.release()
            if isinstance(shared, dict) and wrapped.state is not None:
                merge_state(shared, spec.name, wrapped.state)
            if log is not None:
                _add_logs(log, wrapped.logs)
            return wrapped.output
        if fetch or getattr(tp, "__module__", "") == "pipectl.data":
            # the engine reads it (a condition, an input reference, a rollback), it is a
            # result of the run (no step consumes it), or it is a data step's report (small;
            # the tracker reads what each output committed)
            try:
                return await future
            finally:
                future.release()
        if log is not None:  # the output stays on the cluster: its lines wait on the worker
            await self._take_logs(future, key, log)
        records = None
        if tp is not None and hasattr(tp, "records_processed"):
            records = await client.submit(
                _records_of, future, pure=False, key=f"pipectl-records-{key}"
            )
        output = DaskOutput(key, spec.name, _type_name(tp), records, stored=store is not None)
        self._futures[key] = future
        self._outputs[key] = output
        return output

    async def _take_logs(self, future: Any, key: str, log: step_logs.AttemptLog) -> None:
        """Add to ``log`` the lines the attempt of task ``key`` logged on its worker, which
        kept them there with its output (:func:`_captured`): two small requests (the
        scheduler's, which worker; that worker's, the lines), none of which waits for a worker
        thread."""
        try:
            who = await self.client.who_has([future])
            workers = list(who.get(key, ()))
            if workers:
                found = await self.client.run(_pop_kept_logs, key, workers=workers)
                for logs in found.values():
                    if logs is not None:
                        _add_logs(log, logs)
                        break
        except Exception as exc:  # a worker gone: its lines with it
            _log.debug("pipectl-dask: the logs of %s were not fetched: %s", key, exc)

    async def _offered_resources(self) -> frozenset[str]:
        """The names of the resources the cluster's workers offer (asked once per run): a
        step's resource pool of one of these names is also asked of a worker, weight for
        weight, so the workers offering it bound it per worker (the engine bounds the pool
        for the whole run, in the driver)."""
        offered = getattr(self, "_offered", None)
        if offered is None:
            info = await self.client.scheduler.identity()
            offered = frozenset(
                name
                for worker in info.get("workers", {}).values()
                for name in (worker.get("resources") or {})
            )
            self._offered = offered
        return offered

    async def _check_resources(self, step: str, resources: Mapping[str, float]) -> None:
        """A step asking for resources no worker has would wait forever: fail it instead."""
        info = await self.client.scheduler.identity()
        workers = info.get("workers", {})
        for worker in workers.values():
            offered = worker.get("resources") or {}
            if all(offered.get(name, 0) >= amount for name, amount in resources.items()):
                return
        offers = sorted(
            {
                ", ".join(f"{k}={v:g}" for k, v in sorted((w.get("resources") or {}).items()))
                or "none"
                for w in workers.values()
            }
        )
        asked = ", ".join(f"{k}={v:g}" for k, v in resources.items())
        raise ResourcesUnavailable(
            f"step {step!r} asks for resources {asked}, which no worker of the dask cluster "
            f"has (its {len(workers)} worker(s) offer: {'; '.join(offers) or 'nothing'}); "
            'start workers with them (dask worker ... --resources "GPU=1") or change the '
            "step's resources"
        )

    def _explain(
        self, exc: BaseException, step: str, context: Any, func: Any = None
    ) -> BaseException:
        """A missing component or module on a worker, when this process has it: say which
        plugin distribution the workers lack."""
        cause = exc.__cause__
        if isinstance(exc, RuntimeError) and "deserialization of the task graph" in str(exc):
            # the scheduler (or a worker) could not unpickle the task: it lacks a module
            if isinstance(cause, ModuleNotFoundError) and cause.name:
                exc = cause
            else:
                dists = sorted(
                    {
                        d
                        for m in _modules_of(func)
                        if (d := _distribution_of(m))
                        and not d.startswith(("pipectl==", "pipectl-dask=="))
                    }
                )
                if not dists:
                    return exc
                return PluginMissingOnWorkers(
                    f"step {step!r}: the dask cluster could not unpickle its task (a module "
                    f"is missing there); it uses {', '.join(dists)}, installed here: install "
                    "the same on the scheduler and every worker (their Python environment "
                    "needs the pipeline's plugins)"
                )
        if isinstance(exc, ComponentMissingOnWorker):
            registries = getattr(context, "components", None)
            try:
                component = registries.of(exc.kind).get(exc.name)
            except Exception:
                return exc
            kind = exc.kind.rstrip("s").replace("_", " ")
            module = getattr(component.factory, "__module__", "") or ""
            dist = _distribution_of(module) or f"the distribution of plugin {component.plugin!r}"
            return PluginMissingOnWorkers(
                f"step {step!r} uses the {kind} {exc.name!r} of plugin {component.plugin!r}, "
                f"which is installed here but not on dask worker {exc.worker}; install "
                f"{dist} on every worker (their Python environment needs the pipeline's "
                "plugins)"
            )
        if (
            isinstance(exc, ModuleNotFoundError)
            and exc.name
            and not isinstance(exc, PluginMissingOnWorkers)
        ):
            top = exc.name.partition(".")[0]
            if top in sys.modules:  # importable here, not on the worker
                dist = _distribution_of(top)
                what = dist or f"the code of module {top!r}"
                return PluginMissingOnWorkers(
                    f"step {step!r} needs module {exc.name!r}, which is installed here but "
                    f"the dask workers cannot import it; install {what} on the scheduler and "
                    "every worker (their Python environment needs the pipeline's plugins)"
                )
        return exc

    def _shippable(self, func: Any) -> Any:
        """``func``, or a :class:`_ByValue` of it when its code, or code it holds (a data step's
        transforms, in its closure), comes from a module that is not installed (dask's pickling
        would refer to the module by name, which the workers cannot import)."""
        cached = self._by_value.get(id(func))
        if cached is not None and cached[0] is func:
            return cached[1]
        by_value = False
        for module in _modules_of(func):
            top = module.partition(".")[0]
            if top and top not in self._shipped:
                self._shipped.add(top)
                if ship_by_value(top):
                    self._not_installed.add(top)
            by_value = by_value or top in self._not_installed
        shipped: Any = _ByValue(func) if by_value else func
        self._by_value[id(func)] = (func, shipped)
        return shipped

    def _cancel(self, future: Any) -> None:
        """The awaiting side gave up (timeout, fail_fast, Ctrl-C): forget the task on the
        cluster. A function already running on a worker runs on until it returns."""
        try:
            task = asyncio.ensure_future(
                self.client.cancel([future], reason="pipectl: attempt cancelled")
            )
        except TypeError:  # an older distributed without reason=
            task = asyncio.ensure_future(self.client.cancel([future]))
        self._cancels.add(task)
        task.add_done_callback(self._cancels.discard)
