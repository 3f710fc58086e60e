"""A typed facade over the lifecycle hooks, and the one place they are called from.

Each lifecycle listener is called on its own: an exception in one is logged as
``plugin_hook_failed`` (with plugin and hook) and the others are still called. The facade is
built once per run, so a hook nobody implements costs one truth test per event.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # pragma: no cover
    from pipectl.context import StepContext
    from pipectl.model import PipelineRun, StepResult, StepSpec
    from pipectl.plugins import PipectlPluginManager

_Impl = tuple[Callable[..., Any], tuple[str, ...], str]


def _impls(pm: PipectlPluginManager, hook_name: str) -> list[_Impl]:
    caller = getattr(pm.hook, hook_name)
    # pluggy calls the last registered (and tryfirst) implementations first
    return [(i.function, tuple(i.argnames), i.plugin_name) for i in reversed(caller.get_hookimpls())]


class Hooks:
    """The lifecycle hooks of one run."""

    __slots__ = ("_run_start", "_run_finish", "_step_start", "_step_retry", "_step_finish",
                 "_wrap_step")

    def __init__(self, pm: PipectlPluginManager | None):
        if pm is None:
            self._run_start = self._run_finish = self._step_start = []
            self._step_retry = self._step_finish = self._wrap_step = []
            return
        self._run_start = _impls(pm, "pipectl_run_start")
        self._run_finish = _impls(pm, "pipectl_run_finish")
        self._step_start = _impls(pm, "pipectl_step_start")
        self._step_retry = _impls(pm, "pipectl_step_retry")
        self._step_finish = _impls(pm, "pipectl_step_finish")
        self._wrap_step = _impls(pm, "pipectl_wrap_step")

    @staticmethod
    def _notify(hook: str, impls: list[_Impl], kwargs: dict[str, Any]) -> None:
        for function, argnames, plugin in impls:
            try:
                function(*[kwargs[a] for a in argnames])
            except Exception as exc:  # noqa: BLE001 - listeners are best-effort
                from pipectl import log

                try:
                    log.get_logger().error(
                        "plugin_hook_failed", plugin=plugin, hook=hook,
                        error=f"{type(exc).__name__}: {exc}", exc_info=exc,
                    )
                except Exception:  # noqa: BLE001 - reporting must not break the run either
                    pass

    def run_start(self, *, run: PipelineRun) -> None:
        if self._run_start:
            self._notify("pipectl_run_start", self._run_start, {"run": run})

    def run_finish(self, *, run: PipelineRun) -> None:
        if self._run_finish:
            self._notify("pipectl_run_finish", self._run_finish, {"run": run})

    def step_start(self, *, run: PipelineRun, step: StepSpec, attempt: int) -> None:
        if self._step_start:
            self._notify("pipectl_step_start", self._step_start,
                         {"run": run, "step": step, "attempt": attempt})

    def step_retry(self, *, run: PipelineRun, step: StepSpec, attempt: int,
                   error: BaseException, delay: float) -> None:
        if self._step_retry:
            self._notify("pipectl_step_retry", self._step_retry,
                         {"run": run, "step": step, "attempt": attempt, "error": error,
                          "delay": delay})

    def step_finish(self, *, run: PipelineRun, step: StepSpec, result: StepResult) -> None:
        if self._step_finish:
            self._notify("pipectl_step_finish", self._step_finish,
                         {"run": run, "step": step, "result": result})

    @property
    def step_start_listened(self) -> bool:
        return bool(self._step_start)

    @property
    def wraps_steps(self) -> bool:
        return bool(self._wrap_step)

    def wrap_step(self, *, step: StepSpec, context: StepContext) -> list[Any]:
        """The middlewares for ``step``, outermost first. An exception here fails the step."""
        kwargs = {"step": step, "context": context}
        out = []
        for function, argnames, _plugin in self._wrap_step:
            middleware = function(*[kwargs[a] for a in argnames])
            if middleware is not None:
                out.append(middleware)
        return out
