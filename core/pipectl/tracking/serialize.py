"""What the trackers record of values, bounded: step inputs and outputs summarised
(:func:`summarize`), a run's params (:func:`params_json`), long texts clipped (:func:`clip`),
any value made JSON-able with bounded work (:class:`Bounded`), and the masking of secret
params' values in what is recorded (:func:`mask_secrets`, :func:`cut_secrets`)."""

from __future__ import annotations

import functools
import itertools
import json
import re
from collections.abc import Mapping, Sequence, Set
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "MAX_DEPTH",
    "MAX_NODES",
    "PARAMS_CHARS",
    "SUMMARY_CHARS",
    "TEXT_CHARS",
    "Bounded",
    "clip",
    "clip_texts",
    "cut_secrets",
    "iso_time",
    "mask_secrets",
    "now_iso",
    "params_json",
    "summarize",
    "to_json",
]

SUMMARY_CHARS = 2000
"""Input and output summaries are cut to at most this many characters of JSON."""

PARAMS_CHARS = 65_536
"""A run's params are recorded in at most this many characters of JSON; a param that does not
fit is recorded as a cut summary (``{"type", "truncated": true, "length", "preview"}``), which a
resume does not reuse (the pipeline file or ``-p`` gives it again)."""

TEXT_CHARS = 65_536
"""A step's error message and traceback are cut to this many characters (beginning and end)."""

MAX_NODES, MAX_DEPTH = 10_000, 100
"""What the tracker looks at of one value it records (a param, an output) at most: that many
values (containers and items), nested that deep; a container inside itself is not entered. So
recording a value costs milliseconds whatever it is (shared references expanding to 10^9
items, a 100 MB string, a list nested 100,000 deep, a cycle, an object whose repr raises)."""


def iso_time(value: datetime | float | None) -> str | None:
    """``value`` (a datetime, or seconds since the epoch) in ISO 8601; None for None."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        value = datetime.fromtimestamp(value, UTC)
    return value.isoformat()


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


_encoder: json.JSONEncoder | None = None


def to_json(value: Any) -> str:
    global _encoder
    if _encoder is None:  # one encoder: json.dumps with options builds one per call
        _encoder = json.JSONEncoder(default=_default, ensure_ascii=False, separators=(",", ":"))
    return _encoder.encode(value)


def _default(value: Any) -> Any:
    if hasattr(value, "as_dict"):
        return value.as_dict()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return repr(value)


def summarize(value: Any, limit: int = SUMMARY_CHARS, _depth: int = 0) -> Any:
    """A JSON-able summary of a step's input or output, at most ``limit`` characters of JSON,
    made with bounded work (:class:`Bounded`): small values as they are, long lists and
    mappings as their type, length and first items, anything else too big as its type, length
    and the beginning of its JSON (:func:`_cut`)."""
    kind = type(value)
    if (
        value is None
        or kind is bool
        or kind is float
        or (kind is int and -_BIG_INT < value < _BIG_INT)
    ):
        return value
    if kind is str:
        fits = len(value) <= limit - 2 and len(to_json(value)) <= limit
        return value if fits else _cut(value, value, limit)
    if (kind is dict or kind is list) and len(value) <= 50 and _flat(value, limit):
        text = to_json(value)  # the common small output, by the C encoder: no walk needed
        if len(text) <= limit:
            return value
    if _depth < 2:  # the shape of a list or a mapping, not deeper
        value = _as_dict(value)
        try:
            shape = _shape(value, limit, _depth)
        except Exception:  # noqa: BLE001 - a container that does not behave: walked as it is
            shape = None
        if shape is not None and len(to_json(shape)) <= limit:
            return shape
    walk = Bounded(limit)
    plain = walk(value)
    text = to_json(plain)
    return plain if not walk.cut and len(text) <= limit else _cut(value, text, limit)


def _flat(value: dict[Any, Any] | list[Any], limit: int) -> bool:
    """A list or dict of scalars only (short strings, numbers, None), with string keys: what
    the C encoder turns into JSON in bounded time."""
    values = value.values() if type(value) is dict else value
    if type(value) is dict and any(type(k) is not str or len(k) > limit for k in value):
        return False
    for item in values:
        kind = type(item)
        if item is None or kind is bool or kind is float:
            continue
        if kind is int and -_BIG_INT < item < _BIG_INT:
            continue
        if kind is str and len(item) <= limit:
            continue
        return False
    return True


def _shape(value: Any, limit: int, depth: int) -> dict[str, Any] | None:
    """The summary of a long list or a big mapping (its first items), or of a mapping holding
    containers (each value summarized in its share of the room); None for anything else."""
    mapping = type(value) is dict or isinstance(value, Mapping)
    if not mapping and isinstance(value, (list, tuple)) and len(value) > 20:
        return {
            "type": type(value).__name__,
            "length": len(value),
            "truncated": True,
            "first": summarize(list(value[:5]), limit // 2, depth + 1),
        }
    if mapping and len(value) > 50:  # never serialize it all
        keys = list(itertools.islice(value, 20))
        return {
            "type": type(value).__name__,
            "length": len(value),
            "truncated": True,
            "first": summarize({k: value[k] for k in keys}, limit // 2, depth + 1),
        }
    if (
        mapping
        and depth == 0
        and any(isinstance(v, (list, tuple, Mapping)) for v in value.values())
    ):
        share = max(limit // max(len(value), 1), 200)  # each value its share of the room
        return {_key(k): summarize(v, share, depth + 1) for k, v in value.items()}
    return None


def _cut(value: Any, text: str, limit: int) -> dict[str, Any]:
    """What is recorded of a value too big to record whole, in at most ``limit`` characters of
    JSON: its type, its length, and the beginning of ``text`` (its bounded JSON, or the string
    itself)."""
    summary: dict[str, Any] = {"type": type(value).__name__[:100], "truncated": True}
    try:
        summary["length"] = len(value)
    except Exception:  # noqa: BLE001 - no length
        pass
    summary["preview"] = _fit(text, limit - len(to_json(summary)) - len(',"preview":'))
    return summary


def _fit(text: str, room: int) -> str:
    """The beginning of ``text`` whose JSON string takes at most ``room`` characters."""
    cut = text[: max(room - 2, 0)]
    while cut and len(to_json(cut)) > room:  # a character takes 1 to 6 in JSON
        cut = cut[: len(cut) - (len(to_json(cut)) - room)]
    return cut


class Bounded:
    """Makes a JSON-able copy of a value with bounded work, whatever the value: at most
    ``nodes`` values visited (containers and items), :data:`MAX_DEPTH` deep, about ``room``
    characters of text in all. A string that does not fit is cut (``…[N chars]``); a
    container met again inside itself (``<cycle>``), one past the limits (``…``) and the rest
    of a long one (``… N more``) are left out, and ``cut`` says so. An object that JSON has no
    type for is its ``as_dict()`` if it has one, else its ``repr`` (cut; ``<T: repr
    failed>`` if it raises); bytes are the repr of their beginning."""

    def __init__(self, room: int, nodes: int = MAX_NODES):
        self.room, self.nodes, self.cut = room, nodes, False
        self._inside: set[int] = set()

    def __call__(self, value: Any, depth: int = 0) -> Any:
        self.nodes -= 1
        if self.nodes < 0 or self.room <= 0 or depth > MAX_DEPTH:
            self.cut = True
            return "…"
        kind = type(value)  # the common cases first: this runs for every value
        if kind is str and len(value) < self.room:
            self.room -= len(value) + 2
            return value
        if (
            value is None
            or kind is float
            or kind is bool
            or (kind is int and -_BIG_INT < value < _BIG_INT)
        ):
            self.room -= 8
            return value
        if kind is dict or kind is list or kind is tuple:
            return self._container(value, depth)
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, float):
            self.room -= 8
            return float(value)
        if isinstance(value, int):
            if value.bit_length() > 256:  # its digits cost (and past 4,300 raise)
                return self.text(f"<int of {value.bit_length()} bits>", cut=True)
            self.room -= 20
            return int(value)
        if isinstance(value, datetime):
            return self.text(value.isoformat())
        if isinstance(value, (bytes, bytearray)):
            return self.text(repr(bytes(value[: self.room])), cut=len(value) > self.room)
        value = _as_dict(value)
        if isinstance(value, (Mapping, Sequence, Set)):  # a deque or a range too, not its repr
            return self._container(value, depth)
        return self.text(_repr(value))

    def _container(self, value: Any, depth: int) -> Any:
        if id(value) in self._inside:
            return self.text("<cycle>", cut=True)
        self._inside.add(id(value))
        self.room -= 2
        try:
            if type(value) is dict or isinstance(value, Mapping):
                out: Any = {}
                for key, item in value.items():
                    self.room -= len(key) + 3 if type(key) is str else 1
                    if self.nodes <= 0 or self.room <= 0:
                        return self._rest(out, len(value) - len(out))
                    if type(key) is not str:
                        key = self(key, depth + 1)
                        key = key if isinstance(key, str) else to_json(key)
                    out[key] = self(item, depth + 1)
            else:
                out = []
                for item in value:
                    self.room -= 1
                    if self.nodes <= 0 or self.room <= 0:
                        return self._rest(out, len(value) - len(out))
                    out.append(self(item, depth + 1))
            return out
        except Exception as exc:  # noqa: BLE001 - a container that cannot be read
            return self.text(
                f"<{type(value).__name__}: not readable: {type(exc).__name__}>", cut=True
            )
        finally:
            self._inside.discard(id(value))

    def _rest(self, out: Any, left: int) -> Any:
        """``out``, saying how many items of its container were left out."""
        self.cut = True
        if isinstance(out, dict):
            out["…"] = f"{left:,} more"
        else:
            out.append(f"… {left:,} more")
        return out

    def text(self, text: str, cut: bool = False) -> str:
        if len(text) > self.room:
            cut, text = True, f"{text[: max(self.room, 0)]}…[{len(text):,} chars]"
        self.cut = self.cut or cut
        self.room -= len(text) + 2
        return text


_BIG_INT = 2**256


def _as_dict(value: Any) -> Any:
    """``value.as_dict()`` when its class has one (and it works), else ``value``."""
    if callable(getattr(type(value), "as_dict", None)):
        try:
            return value.as_dict()
        except Exception:  # noqa: BLE001 - its repr, then
            pass
    return value


def _repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception as exc:  # noqa: BLE001 - an object whose repr fails is recorded anyway
        return f"<{type(value).__name__}: repr failed: {type(exc).__name__}>"


def _key(key: Any) -> str:
    """A mapping's key as a (short) JSON object key."""
    if isinstance(key, str) and len(key) <= 200:
        return key
    plain = Bounded(200)(key)
    return plain if isinstance(plain, str) else to_json(plain)


def params_json(params: Mapping[str, Any]) -> str:
    """A run's params as JSON in at most :data:`PARAMS_CHARS` characters, made with bounded
    work: each param as it is, or, when it does not fit in its share of what is left, its cut
    summary (:func:`_cut`); with more than 1,000 params, or when they do not fit even so, one
    cut summary of them all, under the key ``…``."""
    out: dict[str, Any] = {}
    nodes, room = MAX_NODES, PARAMS_CHARS - 2
    if len(params) <= 1000:
        for i, (name, value) in enumerate(params.items()):
            left = len(params) - i
            walk = Bounded(room // left, nodes // left)
            plain = walk(value)
            text = to_json(plain)
            if walk.cut or len(text) > room // left:
                plain = _cut(value, value if isinstance(value, str) else text, 300)
                text = to_json(plain)
            key = _key(name)
            out[key] = plain
            nodes -= nodes // left - max(walk.nodes, 0)
            room -= len(text) + len(to_json(key)) + 2
        text = to_json(out)
        if len(text) <= PARAMS_CHARS:
            return text
    return to_json({"…": _cut(params, to_json(Bounded(PARAMS_CHARS)(params)), PARAMS_CHARS - 10)})


def clip(text: str | None, limit: int) -> str | None:
    """``text`` in at most ``limit`` characters: its beginning and end, saying what was cut."""
    if text is None or len(text) <= limit:
        return text
    half = max(limit // 2 - 30, 0)
    return f"{text[:half]}\n…[{len(text) - 2 * half:,} chars cut]…\n{text[len(text) - half :]}"


def clip_texts(texts: list[str], each: int, total: int) -> list[str]:
    """``texts``, each cut to ``each`` characters (:func:`clip`), as many as fit in ``total``
    (then how many more there are)."""
    out: list[str] = []
    for i, text in enumerate(texts):
        text = clip(text, each) or ""
        if len(text) > total:
            out.append(f"… {len(texts) - i:,} more")
            break
        out.append(text)
        total -= len(text)
    return out


@functools.lru_cache(maxsize=8)
def cut_secrets(secrets: tuple[str, ...]) -> re.Pattern[str]:
    """The beginnings (3 characters or more) of ``secrets`` where a summary was cut: at the end
    of a JSON string (``"``) or before a cut mark (``…``)."""
    starts = sorted({s[:k] for s in secrets for k in range(3, len(s))}, key=len, reverse=True)
    if not starts:
        return re.compile(r"(?!)")
    return re.compile(f'(?:{"|".join(map(re.escape, starts))})(?=["…])')


def mask_secrets(row: dict[str, Any], secrets: Sequence[str]) -> None:
    """Mask the values ``secrets`` (of a run's secret params) in the text columns of a step's
    row, in place: in JSON text too (where a value with quotes, backslashes or controls is
    escaped), and a secret's beginning where a summary's preview cut it in two."""
    from pipectl.log import redact

    spellings = tuple(
        dict.fromkeys([*secrets, *(json.dumps(v, ensure_ascii=False)[1:-1] for v in secrets)])
    )
    for key in ("input_data", "output_data", "error_message", "traceback", "metadata"):
        value = row.get(key)
        if isinstance(value, str):
            row[key] = redact(value, spellings)
    cut_off = cut_secrets(spellings)  # a secret a summary's preview cut in two
    for key in ("input_data", "output_data"):
        value = row.get(key)
        if isinstance(value, str):
            row[key] = cut_off.sub("***", value)
