"""Where a pipeline's problems are in its file: :class:`SourceLines` (``steps.NAME.field`` to
its line, recorded when first needed) and :func:`locate`, which writes a validation error of a
pipeline loaded from a file as ``file:line: field: problem`` lines."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol

from pipectl.errors import PipectlError
from pipectl.files.loader import Map, Seq

__all__ = ["FromFile", "SourceLines", "locate", "locate_problem"]


class FromFile(Protocol):
    """What :func:`locate` reads of a pipeline (a :class:`~pipectl.Pipeline`)."""

    @property
    def source(self) -> str | None: ...

    @property
    def source_lines(self) -> Mapping[str, int]: ...


_MAX_SOURCE_LINES = 100_000  # lines remembered per pipeline: a file is bounded anyway
_MAX_SOURCE_DEPTH = 8


class SourceLines(dict[str, int]):
    """``steps.NAME[.field]`` -> its line in the file. The lines of the steps' fields are
    recorded at the first look-up: only a problem to report needs them, and a valid file of
    thousands of steps has none."""

    def __init__(self, lines: dict[str, int], steps: list[Any]):
        super().__init__(lines)
        self._steps: list[Any] | None = steps

    def _fill(self) -> None:
        steps, self._steps = self._steps, None
        if steps is None:
            return
        budget = [_MAX_SOURCE_LINES]
        for raw in steps:
            if isinstance(raw, Map) and isinstance(raw.get("name"), str):
                _record_lines(raw, f"steps.{raw['name']}", self, budget, 0)

    def __getitem__(self, key: str) -> int:
        self._fill()
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self._fill()
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self._fill()
        return super().__contains__(key)

    def __iter__(self) -> Any:
        self._fill()
        return super().__iter__()

    def __len__(self) -> int:
        self._fill()
        return super().__len__()

    def __eq__(self, other: object) -> bool:
        self._fill()
        return super().__eq__(other)

    __hash__ = None

    def __repr__(self) -> str:
        self._fill()
        return super().__repr__()

    def keys(self) -> Any:
        self._fill()
        return super().keys()

    def values(self) -> Any:
        self._fill()
        return super().values()

    def items(self) -> Any:
        self._fill()
        return super().items()

    def copy(self) -> dict[str, int]:
        self._fill()
        return dict(super().items())


def _record_lines(
    node: Any, field: str, lines: dict[str, int], budget: list[int], depth: int
) -> None:
    """The line of every key and item under a step (``steps.load.load[0].table``), so that a
    problem found later (validation) names the line of the field it is about."""
    if depth > _MAX_SOURCE_DEPTH:
        return
    if isinstance(node, Map):
        for key, value in node.items():
            if budget[0] <= 0:
                return
            budget[0] -= 1
            name = f"{field}.{key}"
            lines.setdefault(name, node.lines.get(key, node.line or 0))
            _record_lines(value, name, lines, budget, depth + 1)
    elif isinstance(node, Seq):
        for i, value in enumerate(node):
            if budget[0] <= 0:
                return
            budget[0] -= 1
            name = f"{field}[{i}]"
            if i < len(node.lines):
                lines.setdefault(name, node.lines[i])
            _record_lines(value, name, lines, budget, depth + 1)


_PROBLEM_FIELD = (
    ("no extractor named", "extract"),
    ("no output named", "load"),
    ("extract", "extract"),
    ("load", "load"),
    ("transform", "transform"),
    ("parameter", "run"),
    ("inputs", "inputs"),
)


def locate(pipe: FromFile, exc: PipectlError) -> str:
    """A validation error of a pipeline loaded from a file, one problem per line, each as
    ``file:line: field: problem`` (the line of the field it is about, else of its step)."""
    problems = getattr(exc, "problems", None)
    lines = getattr(pipe, "source_lines", None)
    if not problems or not lines or not pipe.source:
        return str(exc)
    return "\n".join(locate_problem(pipe, problem) for problem in problems)


_YAML_KEYS = {"transforms": "transform"}  # a data step's option named otherwise in a file


def locate_problem(pipe: FromFile, problem: str) -> str:
    """One problem of ``pipe`` (loaded from a file) as ``file:line: field: message``."""
    lines = pipe.source_lines
    step = getattr(problem, "step", None)
    if step is not None:  # a structured problem (pipectl.options.Problem)
        found: Any = problem
        head, _, rest = found.field.partition(".")
        key, bracket, tail = head.partition("[")
        head = _YAML_KEYS.get(key, key) + bracket + tail
        if head == "pools" and f"steps.{step}.pools" not in lines:  # written as pool: NAME
            head, rest = "pool", ""
        field = f"steps.{step}" + (f".{head}" if head else "") + (f".{rest}" if rest else "")
        text = found.message + (f"; {found.hint}" if found.hint else "")
    else:
        match = re.match(r"step '([^']+)': (.*)", problem, re.S)
        graph = re.match(r"step '([^']+)' (depends on .*|.*cycle.*)", problem, re.S)
        if match:
            step, text = match.groups()
            field = f"steps.{step}"
            for fragment, key in _PROBLEM_FIELD:
                if fragment in text and f"{field}.{key}" in lines:
                    field = f"{field}.{key}"
                    break
        elif graph:
            step, text = graph.group(1), problem
            field = f"steps.{step}"
            for key in ("depends_on", "inputs", "when"):
                if f"{field}.{key}" in lines:
                    field = f"{field}.{key}"
                    break
        elif problem.startswith(("executor: ", "tracker: ")):
            field, _, text = problem.partition(": ")
        else:
            return f"{pipe.source}: {problem}"
    line = None
    probe = field
    while probe and line is None:
        line = lines.get(probe)
        cut = max(probe.rfind("."), probe.rfind("["))
        probe = probe[:cut] if cut > 0 else ""
    return f"{pipe.source}:{line}: {field}: {text}" if line else f"{pipe.source}: {field}: {text}"
