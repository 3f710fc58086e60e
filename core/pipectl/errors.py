"""The exceptions pipectl raises on purpose."""

from __future__ import annotations


class PipectlError(Exception):
    """Base of every error pipectl raises on purpose."""


class PipelineValidationError(PipectlError, ValueError):
    """A pipeline definition is invalid. ``problems`` lists every problem found, one per line."""

    def __init__(self, pipeline: str, problems: list[str]):
        self.pipeline = pipeline
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"pipeline {pipeline!r} is invalid:\n{lines}")


class PluginError(PipectlError):
    """A plugin could not be loaded or broke the contract."""


class UnknownComponentError(PipectlError, LookupError):
    """A pipeline asked for a component (extractor, executor, ...) that no plugin registered."""

    def __init__(self, kind: str, name: str, known: list[str]):
        import difflib

        self.kind, self.name, self.known = kind, name, known
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        available = ", ".join(sorted(known)) or "none"
        super().__init__(
            f"no {kind.rstrip('s').replace('_', ' ')} named {name!r}{hint} (available: {available}; "
            "`pipectl plugins --all` lists what is installed)"
        )


class DuplicateComponentError(PluginError):
    """Two plugins registered a component of the same kind under the same name."""


class ExecutorError(PipectlError):
    """The executor could not be built from its options or could not start (a scheduler that
    does not answer, ...): nothing ran and nothing was recorded."""

    def __init__(self, executor: str, problem: str):
        self.executor = executor
        super().__init__(f"executor {executor!r}: {problem}")


class StepTimeout(PipectlError, TimeoutError):
    """An attempt of a step ran longer than the step's timeout."""

    def __init__(self, step: str, timeout: float):
        self.step, self.timeout = step, timeout
        super().__init__(f"step {step!r} timed out after {timeout:g}s")


class SubPipelineFailed(PipectlError):
    """A sub-pipeline's run did not succeed; ``run`` is its record."""

    def __init__(self, name: str, run: object):
        self.run = run
        errors = getattr(run, "errors", None) or []
        status = getattr(getattr(run, "status", None), "value", "failed")
        detail = "; ".join(errors[:3]) + (
            f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        )
        super().__init__(f"sub-pipeline {name!r} {status}" + (f": {detail}" if detail else ""))
