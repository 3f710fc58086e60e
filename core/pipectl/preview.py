"""What a step produced, in one line for people: the summary table of ``pipectl run``,
``pipectl runs show`` and the run story show it.

* :func:`preview` of a live value (``run.steps[name].output``): its type, its length or shape and
  a bounded repr, cut to a width: ``dict(3 keys): {'path': 'out/a.csv', 'rows': 114, ...}``,
  ``list[114]: [1, 2, 3, …]``, ``DataFrame(114×3): ...``, ``'done'``, ``42``.
* :func:`preview_summary` of what a tracker recorded of one (a step record's ``output_summary``,
  made by :func:`pipectl.tracking.summarize`), the same way.
* :func:`data_counts` of a data step's load: ``read 121, sqlite 114, jsonl 114, rejected 6``
  (:func:`record_data_counts` from a step record).

The values of the run's secret params never show: every one is masked (``***``) before the text
is cut, and a cut that ends inside what could be the start of a secret masks that start too.
:func:`run_secrets` gives the secret values of a run that ran in this process. The work is
bounded whatever the value (reprlib limits on containers and strings, a repr cut early).
"""

from __future__ import annotations

import builtins
import json
import reprlib
from collections.abc import Iterable, Mapping
from itertools import islice
from typing import TYPE_CHECKING, Any

__all__ = [
    "MAX_PREVIEW",
    "data_counts",
    "fit",
    "preview",
    "preview_summary",
    "record_data_counts",
    "run_secrets",
]

MAX_PREVIEW = 200
"""Characters of a preview at most, however wide the table (a pipe has no width)."""

_ELLIPSIS = "…"
_SHORT_STR = 40  # a longer string shows its length before it


def run_secrets(run: Any) -> tuple[str, ...]:
    """The values of the secret params of ``run`` (a :class:`~pipectl.model.PipelineRun` that
    ran in this process), to mask in what is shown of it; empty when it had none."""
    from pipectl.log import secrets_of

    return secrets_of(run)


# ---------------------------------------------------------------------------------------------
# Masking secrets
# ---------------------------------------------------------------------------------------------


def secret_spellings(secrets: Iterable[str]) -> tuple[str, ...]:
    """Each secret as it is, as repr writes it inside quotes and as JSON writes it, longest
    first (a value with quotes, backslashes or controls is escaped in a repr)."""
    out: dict[str, None] = {}
    for value in secrets:
        if not value:
            continue
        out[value] = None
        out[repr(value)[1:-1]] = None
        out[json.dumps(value, ensure_ascii=False)[1:-1]] = None
    return tuple(sorted(out, key=len, reverse=True))


def mask_text(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every spelling of each of ``secrets`` (:func:`secret_spellings`) as
    ``***``."""
    return _mask(text, secret_spellings(secrets))


def _mask(text: str, spellings: tuple[str, ...]) -> str:
    for value in spellings:
        if value in text:
            text = text.replace(value, "***")
    return text


def _mask_tail(text: str, spellings: tuple[str, ...]) -> str:
    """``text`` cut at its end: the beginning of a secret (3 characters or more) it ends in,
    masked."""
    for value in spellings:
        for k in range(min(len(value) - 1, len(text)), 2, -1):
            if text.endswith(value[:k]):
                return text[:-k] + "***"
    return text


def _cut(text: str, width: int, spellings: tuple[str, ...]) -> str:
    """``text`` in at most ``width`` characters, ending in an ellipsis when cut."""
    if len(text) <= width:
        return text
    if width <= 1:
        return _ELLIPSIS[:width]
    return _mask_tail(text[: width - 1], spellings) + _ELLIPSIS


def fit(text: str, width: int, secrets: Iterable[str] = ()) -> str:
    """``text`` in at most ``width`` characters, ending in ``…`` when cut; each of ``secrets``
    (values) masked, and the beginning of one where the text is cut too."""
    spellings = secret_spellings(secrets)
    return _cut(_mask(text, spellings), width, spellings)


def _clean(text: str, limit: int, spellings: tuple[str, ...], one_line: bool = True) -> str:
    """The beginning of ``text`` (on one line: runs of white space as one space), secrets
    masked, in at most ``limit`` characters (bounded work: a huge text is cut before it is
    looked at)."""
    cut = len(text) > limit * 4
    text = text[: limit * 4]
    if cut:
        text = _mask_tail(text, spellings)
    text = _mask(text, spellings)
    if one_line:
        text = " ".join(text.split())
    return _cut(text, limit, spellings)


# ---------------------------------------------------------------------------------------------
# A live value
# ---------------------------------------------------------------------------------------------


class _Cut:
    """A part of a recorded summary that the tracker cut: shown as ``<list[100]>``."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


class _Repr(reprlib.Repr):
    """reprlib's bounded repr, with secrets masked in every string and object repr before it
    is cut, an object's repr on one line, mappings in their own order, and subclasses of the
    built-in containers walked as those (never a whole repr of a long one)."""

    def __init__(self, spellings: tuple[str, ...]):
        super().__init__()
        self.spellings = spellings
        self.fillvalue = _ELLIPSIS
        self.maxlevel = 3
        self.maxdict = 8
        # the first 5 items of a sequence, as the tracker records those of a long one
        self.maxlist = self.maxtuple = self.maxset = self.maxfrozenset = 5
        self.maxdeque = self.maxarray = 5
        self.maxstring = 60
        self.maxother = 80
        self.maxlong = 40

    if TYPE_CHECKING:  # reprlib.Repr's own helper, which its stubs leave out

        def _repr_iterable(
            self, x: Iterable[Any], level: int, left: str, right: str, maxiter: int, trail: str = ""
        ) -> str: ...

    def repr1(self, x: Any, level: int) -> str:
        if isinstance(x, _Cut):
            return x.text
        if isinstance(x, str):
            return self.repr_str(x, level)
        if x is None or type(x) in (bool, float):
            return builtins.repr(x)
        if isinstance(x, int) and not isinstance(x, bool):
            return self.repr_int(x, level)
        if isinstance(x, Mapping):
            return self.repr_mapping(x, level)
        if isinstance(x, list):
            return self._repr_iterable(x, level, "[", "]", self.maxlist)
        if isinstance(x, tuple):
            return self._repr_iterable(x, level, "(", ")", self.maxtuple, ",")
        if isinstance(x, (set, frozenset)):
            if not x:
                return f"{type(x).__name__}()"
            return self._repr_iterable(x, level, "{", "}", self.maxset)
        if isinstance(x, (bytes, bytearray)):
            text = builtins.repr(bytes(x[: self.maxother]))
            return _clean(text, self.maxother, self.spellings) + (
                _ELLIPSIS if len(x) > self.maxother else ""
            )
        return self.repr_instance(x, level)

    def repr_str(self, x: str, level: int) -> str:
        return builtins.repr(_clean(x, self.maxstring, self.spellings, one_line=False))

    def repr_int(self, x: int, level: int) -> str:
        try:
            text = builtins.repr(x)
        except ValueError:  # more digits than int-to-str allows
            return f"<int of {x.bit_length():,} bits>"
        return _clean(text, self.maxlong, self.spellings)

    def repr_mapping(self, x: Mapping[Any, Any], level: int) -> str:
        try:
            n = len(x)
            if n == 0:
                return "{}"
            if level <= 0:
                return "{" + self.fillvalue + "}"
            pieces = [
                f"{self.repr1(k, level - 1)}: {self.repr1(v, level - 1)}"
                for k, v in islice(x.items(), self.maxdict)
            ]
        except Exception:  # noqa: BLE001 - a mapping that does not behave
            return self.repr_instance(x, level)
        if n > self.maxdict:
            pieces.append(self.fillvalue)
        return "{" + ", ".join(pieces) + "}"

    def repr_instance(self, x: Any, level: int) -> str:
        try:
            text = builtins.repr(x)
        except Exception:  # noqa: BLE001 - a repr that raises is no reason to fail
            return f"<{type(x).__name__}: repr failed>"
        return _clean(text, self.maxother, self.spellings)


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def _shape(value: Any) -> str | None:
    """``114×3`` for a value with a ``shape`` of integers (a DataFrame, an array)."""
    try:
        shape = value.shape
        if isinstance(shape, tuple) and shape and all(isinstance(d, int) for d in shape):
            return "×".join(f"{d:,}" for d in shape)
    except Exception:  # noqa: BLE001 - an attribute that raises
        pass
    return None


def _head(value: Any) -> str | None:
    """The type and size of ``value`` (``dict(3 keys)``, ``list[114]``, ``str(3,000 chars)``,
    ``DataFrame(114×3)``), or None when its repr says enough (a number, a short string)."""
    kind = type(value)
    name = kind.__name__
    if value is None or kind in (bool, int, float, complex):
        return None
    if isinstance(value, str):
        return f"str({_plural(len(value), 'char')})" if len(value) > _SHORT_STR else None
    if isinstance(value, Mapping):
        try:
            return f"{name}({_plural(len(value), 'key')})"
        except Exception:  # noqa: BLE001
            return name
    shape = _shape(value)
    if shape is not None:
        return f"{name}({shape})"
    if isinstance(value, (list, tuple, set, frozenset, bytes, bytearray)) or (
        hasattr(kind, "__len__") and hasattr(kind, "__iter__")
    ):
        try:
            return f"{name}[{len(value):,}]"
        except Exception:  # noqa: BLE001 - a __len__ that raises
            return name
    return name


def _join(head: str | None, body: str, width: int, spellings: tuple[str, ...]) -> str:
    """``head: body`` in at most ``width`` characters: the body cut first."""
    if head is None:
        return _cut(body, width, spellings)
    if not body or body == head:
        return _cut(head, width, spellings)
    if len(head) + 3 > width:
        return _cut(head, width, spellings)
    return head + ": " + _cut(body, width - len(head) - 2, spellings)


def _is_data_result(value: Any) -> bool:
    return isinstance(getattr(value, "outputs", None), Mapping) and hasattr(value, "records_read")


def preview(value: Any, width: int = MAX_PREVIEW, secrets: Iterable[str] = ()) -> str:
    """One line of ``value`` in at most ``width`` characters (and :data:`MAX_PREVIEW`):
    its type and size, then a bounded repr; a data step's result as :func:`data_counts`.
    Each of ``secrets`` (values) is shown as ``***``."""
    width = max(min(width, MAX_PREVIEW), 1)
    spellings = secret_spellings(secrets)
    if _is_data_result(value):
        return _cut(_mask(data_counts(value), spellings), width, spellings)
    body = _mask(_Repr(spellings).repr(value), spellings)
    head = _head(value)
    if head == type(value).__name__ and head in body[:80]:
        head = None  # Foo(x=1), <mod.Foo object at 0x...>: the repr names the type already
    return _join(head, body, width, spellings)


# ---------------------------------------------------------------------------------------------
# What a tracker recorded
# ---------------------------------------------------------------------------------------------


def _cut_marker(value: Any) -> bool:
    """Whether ``value`` is the tracker's summary of a value too big to record whole."""
    return (
        isinstance(value, Mapping)
        and value.get("truncated") is True
        and isinstance(value.get("type"), str)
        and ("first" in value or "preview" in value)
    )


def _size(summary: Mapping[str, Any]) -> str:
    """``list[100]``, ``dict(60 keys)``, ``str(3,000 chars)`` of a cut summary."""
    kind: str
    kind, length = summary["type"], summary.get("length")
    if not isinstance(length, int):
        return kind
    if kind == "str":
        return f"str({_plural(length, 'char')})"
    if kind in ("dict", "OrderedDict", "defaultdict") or (
        isinstance(summary.get("first"), Mapping) and kind not in ("list", "tuple")
    ):
        return f"{kind}({_plural(length, 'key')})"
    return f"{kind}[{length:,}]"


def _unwrap(value: Any, depth: int = 0) -> Any:
    """A recorded summary with the cut parts nested in it as :class:`_Cut` placeholders."""
    if _cut_marker(value):
        return _Cut(f"<{_size(value)}>")
    if depth > 3:
        return value
    if isinstance(value, Mapping):
        return {k: _unwrap(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v, depth + 1) for v in value]
    return value


def preview_summary(summary: Any, width: int = MAX_PREVIEW, secrets: Iterable[str] = ()) -> str:
    """:func:`preview` of a value as a tracker recorded it (``output_summary``): a cut
    summary as its type and size and its first items or first characters."""
    width = max(min(width, MAX_PREVIEW), 1)
    spellings = secret_spellings(secrets)
    if _cut_marker(summary):
        head = _size(summary)
        if "first" in summary:
            first = _Repr(spellings).repr(_unwrap(summary["first"]))
            if first[-1:] in ("]", "}", ")") and len(first) > 2:
                first = first[:-1] + ", " + _ELLIPSIS + first[-1]
            return _join(head, _mask(first, spellings), width, spellings)
        text = summary.get("preview")
        text = text if isinstance(text, str) else ""
        body = _clean(text, 80, spellings, one_line=summary["type"] != "str")
        if not body.endswith(_ELLIPSIS):
            body += _ELLIPSIS  # it goes on
        if summary["type"] == "str":
            body = builtins.repr(body)
        return _join(head, body, width, spellings)
    return preview(_unwrap(summary), width, secrets)


# ---------------------------------------------------------------------------------------------
# A data step's load
# ---------------------------------------------------------------------------------------------


def _counts(read: Any, outputs: list[tuple[str, str, Any, bool]], bad: Any) -> str:
    """``read 121, sqlite 114, jsonl 114, rejected 6``; an output's name loses its ``#N``
    when its type names one output only."""
    bases = [name.split("#", 1)[0] for name, *_ in outputs]
    parts = [f"read {read:,}"] if isinstance(read, int) else []
    for (name, status, written, earlier), base in zip(outputs, bases, strict=True):
        shown = base if bases.count(base) == 1 else name
        written = written if isinstance(written, int) else 0
        if status == "committed":
            parts.append(f"{shown} {written:,}")
        elif status == "skipped" and earlier:
            parts.append(f"{shown} {written:,} (committed earlier)")
        else:
            parts.append(f"{shown} {status or 'unknown'}")
    if isinstance(bad, int) and bad:
        parts.append(f"rejected {bad:,}")
    return ", ".join(parts)


def data_counts(result: Any) -> str:
    """A data step's load (its :class:`~pipectl.data.DataStepResult`) in one line: the records
    read, written per output and rejected: ``read 121, sqlite 114, jsonl 114, rejected 6``."""
    outputs = [
        (
            str(name),
            getattr(r, "status", ""),
            getattr(r, "written", 0),
            bool(getattr(r, "note", None)),
        )
        for name, r in getattr(result, "outputs", {}).items()
    ]
    return _counts(
        getattr(result, "records_read", None), outputs, getattr(result, "bad_records", 0)
    )


def record_data_counts(step: Mapping[str, Any]) -> str | None:
    """:func:`data_counts` from a step record (``pipectl runs show --json``), or None when the
    step loaded nothing (no data step, or one that never ran)."""
    reports = step.get("outputs")
    if not isinstance(reports, Mapping) or not reports:
        return None
    outputs = [
        (str(name), str(r.get("status") or ""), r.get("written"), bool(r.get("note")))
        for name, r in reports.items()
        if isinstance(r, Mapping)
    ]
    summary = step.get("output_summary")
    read = summary.get("records_read") if isinstance(summary, Mapping) else None
    return _counts(read, outputs, step.get("bad_records"))
