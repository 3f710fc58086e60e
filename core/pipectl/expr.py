"""The tiny expression language of ``when:`` conditions and ``inputs:`` references.

Nothing is evaluated as Python: an expression is parsed by the small grammar below into a tree
of references, literals and operators, and that tree is all that ever runs.

::

    expr     := or
    or       := and ("or" and)*
    and      := not ("and" not)*
    not      := "not" not | compare
    compare  := choice (("==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not in") choice)?
    choice   := atom ("|" atom)*                 first alternative that is available
    atom     := reference | literal | "(" expr ")" | "[" (expr ("," expr)*)? "]"
    reference:= "params" "." NAME (field)*       a param of the run
              | "steps" "." STEP "." "output" (field)*   an upstream step's output
              | "steps" "." STEP "." "status"    success, failed or skipped
    field    := "." NAME | "[" (INTEGER | STRING) "]"
    literal  := number | 'text' | "text" | true | false | null   (True, False, None too)

Limits, each an :class:`ExpressionError` saying which: at most :data:`MAX_LENGTH` characters,
:data:`MAX_DEPTH` levels of nesting (``(``, ``[`` and ``not``), :data:`MAX_TERMS` references and
literals, :data:`MAX_LITERAL` characters in one literal; a name in a reference cannot start with
``_`` (``__class__``: quote a key that does, ``output['_id']``), so nothing reads Python's
internals.

A reference to a step's output is *available* when that step succeeded. ``a | b`` takes the
first available alternative (the join of branches where only one ran); a single reference that
is not available, a missing field and a comparison of values that do not compare are errors,
which fail the step with a message naming the expression.

Examples::

    params.mode == 'full'
    steps.check.output.score >= params.threshold
    steps.split.output.count > 0 and not params.dry_run
    params.region in ['eu', 'us']
    steps.high.output.data | steps.low.output.data
"""

from __future__ import annotations

import itertools
import operator
import re
import reprlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pipectl.errors import PipectlError

if TYPE_CHECKING:  # pragma: no cover
    from typing import TypeAlias

    _Node: TypeAlias = tuple[Any, ...]  # a parsed expression's node: (kind, *operands)

__all__ = ["Expression", "ExpressionError", "parse", "parse_input"]

MAX_LENGTH = 2000  # characters of an expression
MAX_DEPTH = 32  # nesting: parentheses, brackets and 'not'
MAX_TERMS = 200  # references and literals
MAX_LITERAL = 256  # characters of one number or quoted text


class ExpressionError(PipectlError, ValueError):
    """An expression that does not parse, or fails when evaluated."""


_TOKEN = re.compile(
    r"""
    \s*(?:
      (?P<num>-?\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)
     |(?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
     |(?P<op>==|!=|<=|>=|<|>|\||\(|\)|\[|\]|,|\.)
     |(?P<name>[A-Za-z_][A-Za-z0-9_\-]*)
    )""",
    re.VERBOSE,
)

_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "in": lambda a, b: a in b,
    "not in": lambda a, b: a not in b,
}
_LITERALS = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}
_UNSET = object()


class Unavailable(ExpressionError):
    """A step output that cannot be read: the step did not succeed."""


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise ExpressionError(f"cannot read {text[pos:].strip()[:20]!r} at position {pos + 1}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks = _tokens(text)
        self.i = 0
        self.depth = self.terms = 0

    def nest(self, step: int) -> None:
        self.depth += step
        if self.depth > MAX_DEPTH:
            raise ExpressionError(
                f"nested more than {MAX_DEPTH} levels deep (parentheses, "
                "brackets and 'not'); write a simpler condition"
            )

    def term(self) -> None:
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise ExpressionError(
                f"more than {MAX_TERMS} references and literals; write a "
                "simpler condition, or compute it in a step"
            )

    def peek(self, value: str | None = None) -> bool:
        if self.i >= len(self.toks):
            return False
        return value is None or self.toks[self.i][1] == value

    def take(self, value: str) -> None:
        if not self.peek(value):
            got = self.toks[self.i][1] if self.i < len(self.toks) else "the end"
            raise ExpressionError(f"expected {value!r}, found {got!r}")
        self.i += 1

    def parse(self) -> _Node:
        if not self.toks:
            raise ExpressionError("the expression is empty")
        node = self.or_()
        if self.i < len(self.toks):
            raise ExpressionError(f"unexpected {self.toks[self.i][1]!r}")
        return node

    def or_(self) -> _Node:
        terms = [self.and_()]
        while self.peek("or"):
            self.i += 1
            terms.append(self.and_())
        return terms[0] if len(terms) == 1 else ("or", tuple(terms))  # flat: no deep tree

    def and_(self) -> _Node:
        terms = [self.not_()]
        while self.peek("and"):
            self.i += 1
            terms.append(self.not_())
        return terms[0] if len(terms) == 1 else ("and", tuple(terms))

    def not_(self) -> _Node:
        if self.peek("not"):
            self.i += 1
            self.nest(1)
            node = ("not", self.not_())
            self.nest(-1)
            return node
        return self.compare()

    def compare(self) -> _Node:
        left = self.choice()
        if self.i < len(self.toks):
            op = self.toks[self.i][1]
            if op == "not" and self.i + 1 < len(self.toks) and self.toks[self.i + 1][1] == "in":
                self.i += 2
                return ("cmp", "not in", left, self.choice())
            if op in _COMPARE:
                self.i += 1
                return ("cmp", op, left, self.choice())
        return left

    def choice(self) -> _Node:
        options = [self.atom()]
        while self.peek("|"):
            self.i += 1
            options.append(self.atom())
        return options[0] if len(options) == 1 else ("choice", tuple(options))

    def atom(self) -> _Node:
        if self.i >= len(self.toks):
            raise ExpressionError("the expression ends too early")
        kind, value = self.toks[self.i]
        self.i += 1
        if kind in ("num", "str") or value in _LITERALS or value in ("params", "steps"):
            self.term()
        if kind == "num":
            return ("lit", _number(value))
        if kind == "str":
            return ("lit", _unquote(value))
        if value in ("(", "["):
            self.nest(1)
            if value == "(":
                node = self.or_()
                self.take(")")
            else:
                items = []
                if not self.peek("]"):
                    items.append(self.or_())
                    while self.peek(","):
                        self.i += 1
                        items.append(self.or_())
                self.take("]")
                node = ("list", tuple(items))
            self.nest(-1)
            return node
        if kind == "name" and value in _LITERALS:
            return ("lit", _LITERALS[value])
        if kind == "name" and value in ("params", "steps"):
            return self.reference(value)
        raise ExpressionError(
            f"unexpected {value!r}: a reference starts with 'params.' or "
            "'steps.'; text goes in quotes"
        )

    def reference(self, root: str) -> _Node:
        self.take(".")
        if self.i >= len(self.toks) or self.toks[self.i][0] != "name":
            raise ExpressionError(f"expected a name after '{root}.'")
        first = _name(self.toks[self.i][1])
        self.i += 1
        path: list[Any] = []
        if root == "steps":
            self.take(".")
            what = self.toks[self.i][1] if self.i < len(self.toks) else ""
            if what not in ("output", "status"):
                raise ExpressionError(
                    f"expected 'steps.{first}.output' or "
                    f"'steps.{first}.status', found 'steps.{first}.{what}'"
                )
            self.i += 1
            if what == "status":
                return ("status", first)
        while self.peek(".") or self.peek("["):
            if self.toks[self.i][1] == ".":
                self.i += 1
                if self.i >= len(self.toks) or self.toks[self.i][0] not in ("name", "num"):
                    raise ExpressionError("expected a field name after '.'")
                tok_kind, tok = self.toks[self.i]
                path.append(_number(tok) if tok_kind == "num" and tok.isdigit() else _name(tok))
                self.i += 1
            else:
                self.i += 1
                kind, value = self.toks[self.i] if self.i < len(self.toks) else ("", "")
                if kind == "num" and re.fullmatch(r"-?\d+", value):
                    path.append(_number(value))
                elif kind == "str":
                    path.append(_unquote(value))
                else:
                    raise ExpressionError("an index is an integer or a quoted key")
                self.i += 1
                self.take("]")
        return ("param" if root == "params" else "output", first, tuple(path))


def _literal(token: str) -> str:
    if len(token) > MAX_LITERAL:
        raise ExpressionError(
            f"a literal of {len(token):,} characters ({token[:20]!r}...); at "
            f"most {MAX_LITERAL} characters: pass a long value as a param"
        )
    return token


def _number(token: str) -> int | float:
    token = _literal(token)
    return float(token) if any(c in token for c in ".eE") else int(token)


def _unquote(token: str) -> str:
    body = _literal(token)[1:-1]
    return re.sub(r"\\(.)", r"\1", body)


def _name(name: str) -> str:
    if name.startswith("_"):
        raise ExpressionError(
            f"{name!r}: a name in a reference cannot start with '_' "
            "(quote a key that does: output['_id'])"
        )
    return name


def _spell(node: _Node) -> str:
    kind = node[0]
    if kind == "lit":
        return repr(node[1])
    if kind == "status":
        return f"steps.{node[1]}.status"
    if kind in ("param", "output"):
        head = f"params.{node[1]}" if kind == "param" else f"steps.{node[1]}.output"
        return head + "".join(
            f".{p}" if isinstance(p, str) and p.isidentifier() else f"[{p!r}]" for p in node[2]
        )
    if kind == "choice":
        return " | ".join(_spell(n) for n in node[1])
    if kind == "list":
        return "[" + ", ".join(_spell(n) for n in node[1]) + "]"
    if kind == "not":
        return f"not {_spell(node[1])}"
    if kind == "cmp":
        return f"{_spell(node[2])} {node[1]} {_spell(node[3])}"
    return "(" + f" {kind} ".join(_spell(n) for n in node[1]) + ")"


class Scope:
    """What an expression reads: ``params``, and ``output(step)`` / ``status(step)``."""

    __slots__ = ("output", "params", "status")

    def __init__(
        self,
        params: Mapping[str, Any],
        output: Callable[[str], Any],
        status: Callable[[str], str | None],
    ):
        self.params, self.output, self.status = params, output, status


class Expression:
    """A parsed expression: the steps and params it refers to, and :meth:`evaluate`."""

    __slots__ = ("params", "steps", "text", "tree")

    def __init__(self, text: str, tree: _Node):
        self.text = text
        self.tree = tree
        steps: dict[str, None] = {}
        params: dict[str, None] = {}
        self._collect(tree, steps, params)
        self.steps = tuple(steps)
        self.params = tuple(params)

    def _collect(self, node: _Node, steps: dict[str, None], params: dict[str, None]) -> None:
        kind = node[0]
        if kind in ("output", "status"):
            steps[node[1]] = None
        elif kind == "param":
            params[node[1]] = None
        elif kind in ("choice", "list", "and", "or"):
            for n in node[1]:
                self._collect(n, steps, params)
        elif kind == "not":
            self._collect(node[1], steps, params)
        elif kind == "cmp":
            self._collect(node[2], steps, params)
            self._collect(node[3], steps, params)

    @property
    def output_steps(self) -> tuple[str, ...]:
        """The steps whose outputs (not only statuses) the expression reads."""
        return tuple(dict.fromkeys(n[1] for n in _references(self.tree) if n[0] == "output"))

    @property
    def is_reference(self) -> bool:
        """Whether the expression is one reference or a choice of references (an input)."""
        kind = self.tree[0]
        if kind == "choice":
            return all(n[0] in ("param", "output", "status") for n in self.tree[1])
        return kind in ("param", "output", "status")

    def evaluate(self, scope: Scope) -> Any:
        """The value of the expression; raises :class:`ExpressionError` naming what failed."""
        return self._safe(self.tree, scope)

    def holds(self, scope: Scope) -> bool:
        """Whether the expression (a condition) is true; raises :class:`ExpressionError`."""
        value = self.evaluate(scope)
        try:
            return bool(value)
        except Exception as exc:  # noqa: BLE001 - a value with no truth (an array, ...)
            raise ExpressionError(
                f"its value {_short(value)} is neither true nor false ({type(exc).__name__}: {exc})"
            ) from None

    def explain(self, scope: Scope) -> str:
        """The value of every reference in the expression, for a message: ``a = 1, b = 2``."""
        parts = []
        for node in _references(self.tree):
            try:
                value: Any = self._safe(node, scope)
            except ExpressionError as exc:
                value = f"<{exc}>"
            else:
                value = _short(value, 60)
            parts.append(f"{_spell(node)} = {value}")
        return ", ".join(dict.fromkeys(parts))

    def _safe(self, node: _Node, scope: Scope) -> Any:
        try:
            return self._eval(node, scope)
        except ExpressionError:
            raise
        except Exception as exc:  # noqa: BLE001 - a value that misbehaves when read or compared
            raise ExpressionError(
                f"{_spell(node)}: reading it raised {type(exc).__name__}: {exc}"
            ) from None

    def _eval(self, node: _Node, scope: Scope) -> Any:
        kind = node[0]
        if kind == "lit":
            return node[1]
        if kind == "param":
            if node[1] not in scope.params:
                known = ", ".join(sorted(scope.params)) or "none"
                raise ExpressionError(
                    f"params.{node[1]}: the run has no param {node[1]!r} (its params: {known})"
                )
            return _walk(scope.params[node[1]], node[2], f"params.{node[1]}")
        if kind == "output":
            status = scope.status(node[1])
            if status != "success":
                raise Unavailable(
                    f"steps.{node[1]}.output: step {node[1]!r} did not succeed "
                    f"({status or 'not run'})"
                )
            return _walk(scope.output(node[1]), node[2], f"steps.{node[1]}.output")
        if kind == "status":
            return scope.status(node[1])
        if kind == "choice":
            for option in node[1]:
                try:
                    return self._eval(option, scope)
                except Unavailable:
                    continue
            raise ExpressionError(
                f"{_spell(node)}: none of the alternatives is available "
                "(no step among them succeeded)"
            )
        if kind == "list":
            return [self._eval(n, scope) for n in node[1]]
        if kind == "not":
            return not self._eval(node[1], scope)
        if kind == "and":
            return all(self._eval(n, scope) for n in node[1])
        if kind == "or":
            return any(self._eval(n, scope) for n in node[1])
        if kind == "cmp":
            left, right = self._eval(node[2], scope), self._eval(node[3], scope)
            try:
                return bool(_COMPARE[node[1]](left, right))
            except TypeError:
                raise ExpressionError(
                    f"{_spell(node)}: cannot compare {type(left).__name__} "
                    f"{_short(left)} with {type(right).__name__} "
                    f"{_short(right)}"
                ) from None
        raise AssertionError(kind)  # pragma: no cover - the parser builds no other node

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Expression) and other.tree == self.tree

    def __hash__(self) -> int:
        return hash(self.tree)


def _references(node: _Node) -> list[_Node]:
    kind = node[0]
    if kind in ("param", "output", "status"):
        return [node]
    if kind in ("choice", "list", "and", "or"):
        return [r for n in node[1] for r in _references(n)]
    if kind == "not":
        return _references(node[1])
    if kind == "cmp":
        return _references(node[2]) + _references(node[3])
    return []


def _walk(value: Any, path: Sequence[Any], where: str) -> Any:
    for part in path:
        shown = f"{where}.{part}" if isinstance(part, str) else f"{where}[{part}]"
        if isinstance(value, Mapping):
            if part not in value:
                keys = ", ".join(str(k)[:40] for k in itertools.islice(value, 10)) or "none"
                raise ExpressionError(f"{shown}: no key {part!r} (keys: {keys})")
            value = value[part]
        elif isinstance(part, int) and isinstance(value, Sequence) and not isinstance(value, str):
            if not -len(value) <= part < len(value):
                raise ExpressionError(f"{shown}: index out of range (length {len(value)})")
            value = value[part]
        elif isinstance(part, str) and not part.startswith("_") and hasattr(value, part):
            value = getattr(value, part)
        else:
            raise ExpressionError(
                f"{shown}: {type(value).__name__} {_short(value)} has no field {part!r}"
            )
        where = shown
    return value


def _short(value: Any, width: int = 40) -> str:
    try:
        text = reprlib.repr(value)  # bounded: a huge output is not written out to be cut
    except Exception:  # noqa: BLE001 - a value whose repr raises
        text = f"<{type(value).__name__}>"
    return text if len(text) <= width else text[: width - 3] + "..."


def parse(text: str) -> Expression:
    """Parse ``text``; raises :class:`ExpressionError` saying what is wrong where."""
    if isinstance(text, Expression):
        return text
    if not isinstance(text, str):
        raise ExpressionError(f"an expression is text, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(
            f"the expression is {len(text):,} characters long; at most "
            f"{MAX_LENGTH:,}: write a simpler condition, or compute it in a step"
        )
    return Expression(text, _Parser(text).parse())


def parse_input(source: str) -> str | Expression:
    """An ``inputs:`` value: a reference expression when it starts with ``steps.`` or
    ``params.`` (``steps.NAME.output.FIELD``, ``params.NAME``, alternatives joined by ``|``),
    else a step's name (its whole output)."""
    if isinstance(source, Expression):
        return source
    if not isinstance(source, str) or not source:
        raise ExpressionError(f"an input is a step name or a reference, got {source!r}")
    if not source.lstrip().startswith(("steps.", "params.")):
        return source  # a step's name, whatever characters it has
    expression = parse(source)
    if not expression.is_reference:
        raise ExpressionError(
            f"{source!r}: an input is a reference (steps.NAME.output..., "
            "params.NAME) or alternatives joined by '|'"
        )
    return expression
