"""Fuzzing the pipeline-file loader and the expression language: whatever comes in, what comes
out is a pipeline, a value, or one of pipectl's own errors (never Python's)."""

from __future__ import annotations

import json

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipectl.errors import PipectlError
from pipectl.expr import MAX_DEPTH, MAX_LENGTH, MAX_TERMS, ExpressionError, Scope, parse
from pipectl.files import PipelineFileError
from pipectl.pipeline import load_pipeline

SETTINGS = dict(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _load(tmp_path_factory, data: bytes) -> None:
    """Load (and validate) a file holding ``data``: fine, or a PipectlError."""
    path = tmp_path_factory.mktemp("fuzz") / "p.yaml"
    path.write_bytes(data)
    try:
        pipe = load_pipeline(path, env={"HOME": "/home/x"})
        pipe.validate()
    except PipectlError:
        pass


# -- the loader --------------------------------------------------------------------------------

KEYS = st.sampled_from(
    [
        "name",
        "steps",
        "params",
        "run",
        "depends_on",
        "when",
        "inputs",
        "type",
        "default",
        "options",
        "extract",
        "load",
        "path",
        "retries",
        "pipelines",
        "pipeline",
        "<<",
        "x",
        "a\nb",
        "\x1b[2J",
        "../x",
        "",
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.sampled_from(
        [
            "steps_for_tests:numbers",
            "os.path:join",
            "${params.n}",
            "${env.HOME}",
            "steps.a.output.x > 1",
            "(" * 50 + "1" + ")" * 50,
            "9" * 5000,
            "params.__class__",
            "json",
            "csv",
            "a",
            "b",
            "../../x",
        ]
    ),
)


HOSTILE_EXPRESSIONS = st.sampled_from(
    [
        "(" * 200 + "params.n" + ")" * 200,
        " and ".join(["params.n"] * 1000),
        "9" * 5000,
        "params.n == " + "9" * 400,
        "steps.a.output.__class__",
        "params.__init__.__globals__",
        "not " * 500 + "true",
        "params.n in [" + ", ".join(["1"] * 3000) + "]",
        "[" * 600,
        "'" + "x" * 100_000 + "'",
        "steps.a.output[" + "9" * 5000 + "]",
    ]
)


def _structures():
    """Nested values where one object can appear several times: yaml.safe_dump writes those
    as anchors and aliases (&id001 / *id001)."""

    def shared(inner):
        return st.lists(inner, min_size=1, max_size=3).flatmap(
            lambda items: st.lists(st.sampled_from(items), min_size=1, max_size=6)
        )

    return st.recursive(
        SCALARS,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=5), shared(inner)
        ),
        max_leaves=30,
    )


def _documents():
    step = st.fixed_dictionaries(
        {"name": st.sampled_from(["a", "b", "c\n", "../d"])},
        optional={
            "run": st.one_of(SCALARS, st.just("os.path:join")),
            "when": st.one_of(SCALARS, HOSTILE_EXPRESSIONS),
            "inputs": st.dictionaries(
                st.sampled_from(["a", "p"]), HOSTILE_EXPRESSIONS.map(lambda e: "steps." + e)
            ),
            "depends_on": _structures(),
            "options": _structures(),
        },
    )
    return st.fixed_dictionaries(
        {"name": st.sampled_from(["p", "", "q/r"])},
        optional={
            "steps": st.lists(step, max_size=4),
            "params": _structures(),
            "description": _structures(),
        },
    )


@pytest.mark.slow
@settings(**SETTINGS)
@given(data=st.one_of(_structures(), _documents()))
def test_random_structures_load_or_raise_our_error(tmp_path_factory, data):
    _load(tmp_path_factory, yaml.safe_dump(data, allow_unicode=True).encode("utf-8"))


@st.composite
def _alias_documents(draw):
    """Lists of ``width`` aliases of the list before, ``depth`` times: from harmless to a
    billion laughs and far beyond, in a json default, step options or a data step. Returns
    the document and how many characters of ``lol`` it expands to."""
    width, depth = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    return _alias_document(draw, width, depth), 3 * width ** (depth + 1)


def _alias_document(draw, width: int, depth: int) -> str:
    indent = " " * 6
    lines = [f"{indent}a0: &a0 [{', '.join(['lol'] * width)}]"]
    lines += [
        f"{indent}a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, depth + 1)
    ]
    body = "\n".join(lines) + "\n"
    where = draw(st.sampled_from(["params", "options", "extract"]))
    if where == "params":
        return (
            "name: p\nparams:\n  blob:\n    type: json\n    default:\n"
            + body
            + "steps:\n  - {name: a, run: 'os.path:join'}\n"
        )
    if where == "options":
        return "name: p\nsteps:\n  - name: a\n    type: nothing\n    options:\n" + body
    return (
        "name: p\nsteps:\n  - name: a\n    extract:\n      type: csv\n"
        "      path: x.csv\n" + body + "    load: [{type: jsonl, path: o.jsonl}]\n"
    )


@pytest.mark.slow
@settings(**{**SETTINGS, "max_examples": 200})
@given(document=_alias_documents())
def test_alias_heavy_files_load_or_are_refused_at_once(tmp_path_factory, document):
    """Bounded work, not a time limit: a document whose aliases expand beyond the loader's
    bound (a million characters) is refused while it is read, so nothing walks it."""
    text, expanded = document
    path = tmp_path_factory.mktemp("fuzz") / "p.yaml"
    path.write_text(text)
    try:
        load_pipeline(path, env={"HOME": "/home/x"}).validate()
    except PipelineFileError as exc:
        refused = "aliases (*name) and merges (<<) repeat more than" in str(exc)
    except PipectlError:
        refused = False
    else:
        refused = False
    if expanded > 2_000_000:
        assert refused, (expanded, text)


@pytest.mark.slow
@settings(**SETTINGS)
@given(
    field=st.sampled_from(["when", "inputs"]),
    text=st.one_of(
        HOSTILE_EXPRESSIONS,
        st.text(max_size=40),
        st.lists(
            st.sampled_from(
                [
                    "steps",
                    "params",
                    ".",
                    "a",
                    "output",
                    "(",
                    ")",
                    "[",
                    "]",
                    "0",
                    "==",
                    "and",
                    "not",
                    "'x'",
                    "__class__",
                    "9" * 300,
                ]
            ),
            max_size=30,
        ).map(" ".join),
    ),
)
def test_expressions_in_files_load_or_raise_our_error(tmp_path_factory, field, text):
    value = json.dumps(text if field == "when" else {"x": "steps." + text})
    _load(
        tmp_path_factory,
        (
            "name: p\nsteps:\n  - {name: a, run: 'os.path:join'}\n"
            f"  - {{name: b, run: 'os.path:join', {field}: {value}}}\n"
        ).encode(),
    )


YAML_ALPHABET = list("ab: -\n\t[]{}\"'#&*!|>%@`,?~0.\\<$") + [
    "&x ",
    "*x",
    "<<: *x",
    "!!set ",
    "!!omap ",
    "\\u",
    "\\ud800",
    "\x00",
    "\x1b",
    "\ufeff",
    "é",
]


@pytest.mark.slow
@settings(**SETTINGS)
@given(text=st.lists(st.sampled_from(YAML_ALPHABET), max_size=80).map("".join))
def test_random_yaml_text_loads_or_raises_our_error(tmp_path_factory, text):
    _load(
        tmp_path_factory,
        ("name: p\nsteps:\n  - name: a\n    run: steps_for_tests:numbers\n" + text).encode(),
    )
    _load(tmp_path_factory, text.encode())


@settings(**SETTINGS)
@given(data=st.binary(max_size=200))
def test_random_bytes_load_or_raise_our_error(tmp_path_factory, data):
    _load(tmp_path_factory, data)
    _load(tmp_path_factory, b"name: p\nsteps:\n  - name: a\n" + data)


def test_a_file_error_is_a_pipectl_error():
    assert issubclass(PipelineFileError, PipectlError)
    assert issubclass(ExpressionError, PipectlError)


# -- the expression language -------------------------------------------------------------------


class Thing:
    """An output that is an object: its fields are attributes."""

    def __init__(self):
        self.x, self.items = 3, [1, "a", None]


SCOPE = Scope(
    {
        "n": 4,
        "s": "text",
        "l": [1, 2, {"k": "v"}],
        "d": {"a": {"b": [0.5]}},
        "none": None,
        "t": True,
    },
    {"a": {"x": 1, "y": [1, 2], "_id": 7}, "b": "out", "c": Thing()}.__getitem__,
    {"a": "success", "b": "success", "c": "success", "d": "failed"}.get,
)


def _evaluate(text: str) -> None:
    try:
        expression = parse(text)
    except ExpressionError:
        return
    try:
        expression.holds(SCOPE)
        expression.explain(SCOPE)
    except ExpressionError:
        pass


TOKENS = [
    "params",
    "steps",
    ".",
    "output",
    "status",
    "n",
    "s",
    "l",
    "d",
    "a",
    "b",
    "c",
    "x",
    "items",
    "__class__",
    "_id",
    "[",
    "]",
    "(",
    ")",
    ",",
    "|",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "in",
    "not",
    "and",
    "or",
    "true",
    "null",
    "None",
    "0",
    "-1",
    "1.5e3",
    "9" * 400,
    "'t'",
    '"q\\"x"',
    "'",
    '"',
    "\\",
    " ",
    "=",
    "!",
    "@",
    "\x00",
    "\x1b",
    "\u202e",
    "é",
    "١٢",
    "\n",
]


@pytest.mark.slow
@settings(**{**SETTINGS, "max_examples": 500})
@given(
    text=st.one_of(
        st.lists(st.sampled_from(TOKENS), max_size=40).map(" ".join),
        st.tuples(
            st.lists(st.sampled_from(TOKENS), min_size=1, max_size=4).map(" ".join),
            st.integers(1, 3000),
        ).map(lambda t: (t[0] + " ") * t[1]),
    )
)  # deep, long
def test_random_token_strings_parse_or_raise_our_error(text):
    _evaluate(text)


@settings(**SETTINGS)
@given(text=st.text(max_size=60))
def test_random_text_parses_or_raises_our_error(text):
    _evaluate(text)


def _trees():
    references = st.sampled_from(
        [
            "params.n",
            "params.s",
            "params.l[2].k",
            "params.l[9]",
            "params.d.a.b[0]",
            "params.none",
            "params.missing",
            "steps.a.output.x",
            "steps.a.output['_id']",
            "steps.a.output.y[1]",
            "steps.b.output",
            "steps.c.output.items[1]",
            "steps.c.output.x",
            "steps.d.output",
            "steps.a.status",
            "steps.d.output | steps.a.output.x",
        ]
    )
    literals = st.one_of(
        st.integers(-(10**6), 10**6).map(str),
        st.floats(-1e6, 1e6).map(repr),
        st.sampled_from(["'a'", '"b"', "true", "false", "null", "[]", "[1, 'a']"]),
    )
    comparisons = ["==", "!=", "<", "<=", ">", ">=", "in", "not in"]

    def extend(inner):
        return st.one_of(
            st.tuples(inner, st.sampled_from(comparisons), inner).map(
                lambda t: f"({t[0]}) {t[1]} ({t[2]})"
            ),
            st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(" ".join),
            inner.map(lambda t: f"not {t}"),
            inner.map(lambda t: f"({t})"),
            st.lists(inner, max_size=3).map(lambda ts: "[" + ", ".join(ts) + "]"),
        )

    return st.recursive(st.one_of(references, literals), extend, max_leaves=60)


@pytest.mark.slow
@settings(**SETTINGS)
@given(text=_trees())
def test_well_formed_expressions_parse_within_the_limits(text):
    """A grammatical expression parses unless it is past a limit, which is then named; its
    value is a value or an ExpressionError."""
    try:
        expression = parse(text)
    except ExpressionError as exc:
        message = str(exc)
        assert (
            (
                "levels deep" in message
                and text.count("(") + text.count("[") + text.count("not ") > MAX_DEPTH
            )
            or ("references and literals" in message and len(text.split()) > MAX_TERMS // 2)
            or ("characters long" in message and len(text) > MAX_LENGTH)
        ), (text, message)
        return
    assert parse(text) == expression
    try:
        expression.holds(SCOPE)
    except ExpressionError:
        pass
