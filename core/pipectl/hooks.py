"""A typed facade over the lifecycle hooks, and the one place the engine calls them from.

Every call goes through pluggy's hook execution (the plugin manager's ``_hookexec``, which
``pm.add_hookcall_monitoring`` and ``pm.enable_tracing`` wrap), so pluggy's monitoring and
tracing see each event with the implementations it reaches. What pipectl adds:

* **Isolation.** Each implementation of a *listener* hook (:data:`pipectl.hookspecs.LISTENER_HOOKS`)
  is wrapped, when it is registered, so that an exception it raises is logged as
  ``plugin_hook_failed`` (plugin, hook, error, traceback) and returns ``None``: pluggy's loop
  goes on with the next listener and the engine never sees the error (:func:`isolate`).
  ``pipectl_wrap_step`` is not a listener: an exception there fails the step.
* **Run scope.** :class:`Hooks` is built once per run from the manager's implementations plus
  the run's own listeners (``Pipeline.run(listeners=...)``, the tracker's listener, the CLI's
  live display). Those are never registered on the shared manager: another run in the same
  process does not call them. A sub-pipeline run gets its parent's run listeners too.
* **A fast path.** An event no implementation of the run listens to is not called at all (one
  truth test), unless a hook-call monitor is installed: then it is called with no
  implementation, so the monitor still sees it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from pipectl.hookspecs import LISTENER_HOOKS

if TYPE_CHECKING:  # pragma: no cover
    from pipectl.context import StepContext
    from pipectl.model import CacheEvent, PipelineRun, RunPlan, StepResult, StepSpec
    from pipectl.plugins import PipectlPluginManager

_ISOLATED = "__pipectl_isolated__"
_LISTENER_HOOKS = frozenset(LISTENER_HOOKS)
RUN_HOOKS = (*LISTENER_HOOKS, "pipectl_wrap_step")
"""The hooks a run calls (and the only ones a run listener may implement)."""


def report_failure(plugin: str, hook: str, exc: BaseException) -> None:
    """Log ``plugin_hook_failed``: ``plugin``'s implementation of ``hook`` raised ``exc``."""
    from pipectl import log

    try:
        log.get_logger().error(
            "plugin_hook_failed",
            plugin=plugin,
            hook=hook,
            error=f"{type(exc).__name__}: {exc}",
            exc_info=exc,
        )
    except Exception:  # noqa: BLE001 - reporting must not break the run either
        pass


def isolate(impl: Any, hook: str) -> None:
    """Wrap pluggy ``HookImpl`` ``impl`` of listener hook ``hook`` in place, so that an
    exception it raises is logged as ``plugin_hook_failed`` and swallowed (pluggy then goes on
    with the next implementation). Wrappers and implementations already wrapped are left alone.

    pluggy calls ``impl.function(*args)`` with the arguments named by ``impl.argnames``
    (computed from the original function at registration), so the wrapper passes them through
    unchanged; ``__wrapped__`` is the original.
    """
    function = impl.function
    if impl.wrapper or impl.hookwrapper or getattr(function, _ISOLATED, False):
        return
    plugin = impl.plugin_name

    def isolated(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - listeners are best-effort
            report_failure(plugin, hook, exc)
            return None

    isolated.__name__ = getattr(function, "__name__", hook)
    isolated.__qualname__ = getattr(function, "__qualname__", hook)
    isolated.__wrapped__ = function  # type: ignore[attr-defined]
    setattr(isolated, _ISOLATED, True)
    setattr(impl, "function", isolated)  # noqa: B010 - HookImpl.function is typed Final


def isolate_plugin(pm: Any, plugin: Any) -> None:
    """:func:`isolate` every listener implementation ``plugin`` has in ``pm``."""
    for hook in LISTENER_HOOKS:
        caller = getattr(pm.hook, hook, None)
        if caller is None:
            continue
        for impl in caller.get_hookimpls():
            if impl.plugin is plugin:
                isolate(impl, hook)


# -- run listeners ---------------------------------------------------------------------------

_factory: Any = None
_factory_lock = threading.Lock()


def listener_name(listener: Any) -> str:
    """The name a run listener goes by in ``plugin_hook_failed`` and in monitoring."""
    name = getattr(listener, "plugin_name", None) or getattr(listener, "__name__", None)
    return name if isinstance(name, str) and name else type(listener).__name__


def _listener_impls(listeners: Iterable[Any]) -> dict[str, list[Any]]:
    """pluggy ``HookImpl`` objects for the hooks each of ``listeners`` implements, validated
    against the hookspecs as a plugin's are, listener hooks isolated.

    They are made by registering the listener in a private manager and unregistering it at
    once (the HookImpl objects outlive the registration): the shared manager never holds it.
    Raises ``TypeError`` naming the listener for a hook a run does not call, and pluggy's
    ``PluginValidationError`` for arguments the hookspec does not have.
    """
    global _factory
    import pluggy

    from pipectl import hookspecs

    out: dict[str, list[Any]] = {}
    with _factory_lock:
        if _factory is None:
            factory = pluggy.PluginManager("pipectl")
            factory.add_hookspecs(hookspecs)
            _factory = factory
        for listener in listeners:
            name = listener_name(listener)
            try:
                _factory.register(listener, name=name)
            except Exception:
                if _factory.get_plugin(name) is not None:  # pluggy < 1.7 registers partly
                    _factory.unregister(name=name)
                raise
            try:
                for caller in _factory.get_hookcallers(listener) or ():
                    if caller.name not in RUN_HOOKS:
                        what = (
                            "not a pipectl hook"
                            if caller.spec is None
                            else "not a hook a run calls"
                        )
                        raise TypeError(
                            f"run listener {name!r} implements {caller.name!r}, "
                            f"which is {what} (a run listener implements only "
                            f"{', '.join(RUN_HOOKS)})"
                        )
                    for impl in caller.get_hookimpls():
                        if impl.plugin is not listener:
                            continue
                        if impl.wrapper or impl.hookwrapper:
                            raise TypeError(
                                f"run listener {name!r}: {caller.name!r} cannot be "
                                "implemented as a wrapper"
                            )
                        if caller.name in _LISTENER_HOOKS:
                            isolate(impl, caller.name)
                        out.setdefault(caller.name, []).append(impl)
            finally:
                _factory.unregister(listener)
    return out


def _merge(impls: list[Any], extra: list[Any]) -> list[Any]:
    """``impls`` (a hook caller's, in pluggy's order: called last to first) with ``extra``
    added as pluggy adds a newly registered implementation: after the others of its kind, so
    called before them, ``tryfirst``/``trylast`` honoured."""
    out = list(impls)
    for impl in extra:
        split = next((i for i, m in enumerate(out) if m.hookwrapper or m.wrapper), len(out))
        if impl.trylast:
            out.insert(0, impl)
        elif impl.tryfirst:
            out.insert(split, impl)
        else:
            i = split - 1
            while i >= 0 and out[i].tryfirst:
                i -= 1
            out.insert(i + 1, impl)
    return out


class _NoManager:
    hookcall_monitors = 0


class Hooks:
    """The lifecycle hooks of one run: the manager's implementations and the run's listeners.

    Each event method tests its list of implementations (taken once, at the start of the run)
    and the manager's monitor count, and only then calls pluggy's hook execution with them.
    ``Hooks(None)`` calls nothing (runs and tests without plugins).
    """

    __slots__ = (
        "_pm",
        "_exec",
        "listeners",
        "_run_start",
        "_run_planned",
        "_run_finish",
        "_step_start",
        "_step_retry",
        "_step_finish",
        "_step_cache",
        "_output_finish",
        "_rollback_start",
        "_rollback_finish",
        "_wrap_step",
    )

    # pluggy ``HookImpl`` lists, one per hook of RUN_HOOKS (set in __init__ by name)
    _run_start: list[Any]
    _run_planned: list[Any]
    _run_finish: list[Any]
    _step_start: list[Any]
    _step_retry: list[Any]
    _step_finish: list[Any]
    _step_cache: list[Any]
    _output_finish: list[Any]
    _rollback_start: list[Any]
    _rollback_finish: list[Any]
    _wrap_step: list[Any]

    def __init__(self, pm: PipectlPluginManager | None, listeners: Iterable[Any] = ()):
        unique: dict[int, Any] = {}
        for listener in listeners:  # each once (by identity), in order
            unique.setdefault(id(listener), listener)
        self.listeners = tuple(unique.values())
        """The run's own listeners (handed down to its sub-pipeline runs)."""
        if pm is None:
            self._pm: Any = _NoManager()
            self._exec: Callable[..., Any] = _no_call
            for hook in RUN_HOOKS:
                setattr(self, "_" + hook.removeprefix("pipectl_"), [])
            return
        if pm.config is None:  # the manager's first run: pipectl_configure first
            from pipectl.config import configure

            configure(pm)
        self._pm = pm
        self._exec = pm._hookexec  # what pm.hook.<name>(...) calls, monitoring included
        own = _listener_impls(self.listeners) if self.listeners else {}
        for hook in RUN_HOOKS:
            caller = getattr(pm.hook, hook, None)
            impls = caller.get_hookimpls() if caller is not None else []
            if hook in own:
                impls = _merge(impls, own[hook])
            setattr(self, "_" + hook.removeprefix("pipectl_"), impls)

    # -- run ---------------------------------------------------------------------------------

    def run_start(self, *, run: PipelineRun) -> None:
        if self._run_start or self._pm.hookcall_monitors:
            self._exec("pipectl_run_start", self._run_start, {"run": run}, False)

    def run_planned(self, *, run: PipelineRun, plan: Callable[[], RunPlan]) -> None:
        """``plan`` is called (to build the :class:`~pipectl.model.RunPlan`) only when some
        implementation or monitor will see it."""
        if self._run_planned or self._pm.hookcall_monitors:
            self._exec(
                "pipectl_run_planned", self._run_planned, {"run": run, "plan": plan()}, False
            )

    def run_finish(self, *, run: PipelineRun) -> None:
        if self._run_finish or self._pm.hookcall_monitors:
            self._exec("pipectl_run_finish", self._run_finish, {"run": run}, False)

    # -- steps -------------------------------------------------------------------------------

    @property
    def step_start_listened(self) -> bool:
        return bool(self._step_start) or self._pm.hookcall_monitors > 0

    def step_start(self, *, run: PipelineRun, step: StepSpec, attempt: int) -> None:
        if self._step_start or self._pm.hookcall_monitors:
            self._exec(
                "pipectl_step_start",
                self._step_start,
                {"run": run, "step": step, "attempt": attempt},
                False,
            )

    def step_retry(
        self, *, run: PipelineRun, step: StepSpec, attempt: int, error: BaseException, delay: float
    ) -> None:
        if self._step_retry or self._pm.hookcall_monitors:
            self._exec(
                "pipectl_step_retry",
                self._step_retry,
                {"run": run, "step": step, "attempt": attempt, "error": error, "delay": delay},
                False,
            )

    def step_finish(self, *, run: PipelineRun, step: StepSpec, result: StepResult) -> None:
        if self._step_finish or self._pm.hookcall_monitors:
            self._exec(
                "pipectl_step_finish",
                self._step_finish,
                {"run": run, "step": step, "result": result},
                False,
            )

    @property
    def step_cache_listened(self) -> bool:
        return bool(self._step_cache) or self._pm.hookcall_monitors > 0

    def step_cache(self, *, run: PipelineRun, step: StepSpec, event: CacheEvent) -> None:
        if self._step_cache or self._pm.hookcall_monitors:
            self._exec(
                "pipectl_step_cache",
                self._step_cache,
                {"run": run, "step": step, "event": event},
                False,
            )

    @property
    def output_finish_listened(self) -> bool:
        return bool(self._output_finish) or self._pm.hookcall_monitors > 0

    def output_finish(self, *, run: PipelineRun, step: StepSpec, attempt: int, report: Any) -> None:
        if self._output_finish or self._pm.hookcall_monitors:
            self._exec(
                "pipectl_output_finish",
                self._output_finish,
                {"run": run, "step": step, "attempt": attempt, "report": report},
                False,
            )

    # -- rollback ----------------------------------------------------------------------------

    def rollback_start(self, *, run: PipelineRun, step: StepSpec, result: StepResult) -> None:
        if self._rollback_start or self._pm.hookcall_monitors:
            self._exec(
                "pipectl_rollback_start",
                self._rollback_start,
                {"run": run, "step": step, "result": result},
                False,
            )

    def rollback_finish(
        self, *, run: PipelineRun, step: StepSpec, result: StepResult, error: BaseException | None
    ) -> None:
        if self._rollback_finish or self._pm.hookcall_monitors:
            self._exec(
                "pipectl_rollback_finish",
                self._rollback_finish,
                {"run": run, "step": step, "result": result, "error": error},
                False,
            )

    # -- middleware --------------------------------------------------------------------------

    @property
    def wraps_steps(self) -> bool:
        return bool(self._wrap_step)

    def wrap_step(self, *, step: StepSpec, context: StepContext) -> list[Any]:
        """The middlewares for ``step``, outermost first (pluggy's call order; ``None``
        results dropped). Not isolated: an exception here fails the step. Called only when
        some implementation exists (it decides whether a step may skip the executor)."""
        if not self._wrap_step:
            return []
        middlewares: list[Any] = self._exec(
            "pipectl_wrap_step", self._wrap_step, {"step": step, "context": context}, False
        )
        return middlewares


def _no_call(*args: Any) -> list[Any]:
    return []
