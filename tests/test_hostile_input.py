"""Hostile pipeline files, expressions and options: every one is refused by ``validate`` and
``run`` with exit 2 and one message naming the file and line (or the option), no traceback,
nothing run or written, within 2 seconds."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import pytest

from pipectl import Pipeline, StepStatus
from pipectl.errors import PipectlError
from pipectl.files import PipelineFileError
from pipectl.pipeline import load_pipeline

PIPECTL = [sys.executable, "-m", "pipectl.cli"]
SECONDS = 2.0  # the limit per case, start-up included

STEPS_MODULE = """
from pathlib import Path


def touch(n=None):
    Path("touched").write_text("a step ran")
    return {"n": 1, "text": "3"}


class Flaky:
    def __bool__(self):
        raise ValueError("the truth value is ambiguous")

    def __eq__(self, other):
        raise RuntimeError("no comparing me")

    __hash__ = object.__hash__


def ambiguous():
    return Flaky()
"""

TOUCH = "  - name: touch\n    run: hostile_steps:touch\n"  # lines 3-4 after name: and steps:


def pipeline(top: str = "", steps: str = "") -> str:
    """A pipeline file: ``top`` from line 2, then ``steps:`` with the step ``touch`` first."""
    return "name: hostile\n" + top + "steps:\n" + TOUCH + steps


def step_b(field: str, value: str) -> str:
    """Step ``b`` with ``field: value`` on line 7."""
    return pipeline(steps=f"  - name: b\n    run: hostile_steps:touch\n    {field}: {value}\n")


def when(expression: str) -> str:
    return step_b("when", json.dumps(expression))


def input_n(expression: str) -> str:
    return step_b("inputs", "{n: " + json.dumps(expression) + "}")


def named(name: str) -> str:
    """A pipeline whose first step (line 3) is called ``name`` (a YAML scalar)."""
    return "name: hostile\nsteps:\n  - name: " + name + "\n    run: hostile_steps:touch\n"


def json_default(yaml_lines: str) -> str:
    """A json param whose default (from line 6) is ``yaml_lines``, indented 6."""
    return pipeline("params:\n  blob:\n    type: json\n    default:\n" + yaml_lines)


def laughs(indent: str, levels: int = 9) -> str:
    """A billion laughs: nine lols, then lists of nine aliases of the list before."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * 9)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "".join(f"{indent}{line}\n" for line in lines)


def block_laughs(indent: str, levels: int = 9) -> str:
    """The same in block style: list items, each a list of nine aliases on lines of their own."""
    out = f"{indent}- &x0 [{', '.join(['lol'] * 9)}]\n"
    for i in range(1, levels):
        out += f"{indent}- &x{i}\n" + f"{indent}  - *x{i - 1}\n" * 9
    return out


def mapping_laughs(indent: str, levels: int = 9) -> str:
    keys = "abcdefghi"
    out = f"{indent}m0: &m0 {{{', '.join(f'{k}: lol' for k in keys)}}}\n"
    for i in range(1, levels):
        out += f"{indent}m{i}: &m{i} {{{', '.join(f'{k}: *m{i - 1}' for k in keys)}}}\n"
    return out


def merge_chain(indent: str, links: int = 800) -> str:
    """Mappings each merging (``<<``) the one before: small, but quadratic once merged."""
    out = f"{indent}k0: &k0 {{v0: {'x' * 200}}}\n"
    for i in range(1, links):
        out += f"{indent}k{i}: &k{i} {{<<: *k{i - 1}, v{i}: x}}\n"
    return out


def nested(depth: int, inner: str = "") -> str:
    return "[" * depth + inner + "]" * depth


class Case(NamedTuple):
    content: str | bytes | int  # the file's text, its bytes, or a size for a sparse file
    line: int | str | None  # what follows "FILE:" in the message (None: nothing, the file)
    fragments: tuple[str, ...]
    env: dict[str, str] = {}
    args: tuple[str, ...] = ()
    line_text: str = ""  # when line is "?": the reported line of the file holds this


P_BLOB = pipeline("params:\n  n: 3\n  blob: {type: json, default: null}\n")
BOMB = ("aliases (*name) and merges (<<) repeat more than 1,000,000 characters", "alias bomb")
NESTED = ("nested more than 100 levels deep",)
DEEP = ("nested more than 32 levels deep",)
LONG = ("characters long; at most 2,000",)
TERMS = ("more than 200 references and literals",)
UNDERSCORE = ("a name in a reference cannot start with '_'",)
BAD_NAME = ("not a usable step name",)

CASES: dict[str, Case] = {
    # -- alias bombs: refused while the file is built, before anything walks the values
    "billion laughs in a json default": Case(json_default(laughs(" " * 6)), 11, BOMB),
    "billion laughs in step options": Case(
        pipeline(steps="  - name: b\n    type: sql\n    options:\n" + laughs(" " * 6)), 13, BOMB
    ),
    "billion laughs in block lists": Case(json_default(block_laughs(" " * 6)), 47, BOMB),
    "billion laughs of mappings in a data step": Case(
        pipeline(
            steps=(
                "  - name: b\n    extract:\n      type: csv\n      path: in.csv\n"
                + mapping_laughs(" " * 6)
                + "    load: [{type: jsonl, path: out.jsonl}]\n"
            )
        ),
        14,
        BOMB,
    ),
    "merge-key chain": Case(json_default(merge_chain(" " * 6)), "?", BOMB, line_text="<<: *k"),
    "one mapping merged 100,000 times": Case(
        json_default(
            f"      m: &m {{{', '.join(f'k{i}: v' for i in range(100))}}}\n"
            f"      x: {{<<: [{', '.join(['*m'] * 100_000)}]}}\n"
        ),
        7,
        BOMB,
    ),
    "a long string repeated by aliases": Case(
        json_default(f"      text: &t {'x' * 100_000}\n      copies: [{', '.join(['*t'] * 20)}]\n"),
        7,
        BOMB,
    ),
    "billion laughs in a sub-pipeline's params": Case(
        "params:\n  blob: {type: json, default: null}\npipelines:\n  - name: child\n    steps:\n"
        "      - {name: touch, run: 'hostile_steps:touch'}\n  - name: parent\n    steps:\n"
        "      - name: call\n        pipeline: child\n        params:\n          blob:\n"
        + laughs(" " * 12),
        18,
        BOMB,
    ),
    "an alias nesting past the limit": Case(
        json_default(f"      deep: &d {nested(60)}\n      again: {nested(50, '*d')}\n"), 7, NESTED
    ),
    "a recursive alias": Case(json_default("      &r [1, *r]\n"), 6, ("recursive",)),
    # -- deep nesting
    "300 nested lists in a json default": Case(json_default(f"      {nested(300)}\n"), 6, NESTED),
    "300 nested mappings in step options": Case(
        step_b("options", "{a: " * 300 + "1" + "}" * 300), 7, NESTED
    ),
    # -- expressions in when: and inputs:
    "200 nested parentheses": Case(when("(" * 200 + "params.x" + ")" * 200), 7, DEEP),
    "a 1,000-term and chain": Case(
        when(" and ".join(["steps.touch.output.n == 1"] * 1000)), 7, LONG
    ),
    "250 terms": Case(when(" or ".join(["1"] * 250)), 7, TERMS),
    "a list of 300 literals": Case(when(f"params.x in [{', '.join(['1'] * 300)}]"), 7, TERMS),
    "a 5,000-digit integer": Case(when("steps.touch.output.n == " + "9" * 5000), 7, LONG),
    "a 300-digit integer": Case(
        when("steps.touch.output.n == " + "9" * 300),
        7,
        ("a literal of 300 characters", "at most 256"),
    ),
    "a 1,500-character string": Case(
        when(f"params.x == '{'x' * 1500}'"), 7, ("a literal of 1,502 characters",)
    ),
    "a 1 MB string": Case(
        when(f"params.x == '{'x' * 1_000_000}'"),
        7,
        ("the expression is 1,000,014 characters long",),
    ),
    "40 nested nots": Case(when("not " * 40 + "true"), 7, DEEP),
    "40 nested brackets": Case(when(nested(40) + " == []"), 7, DEEP),
    "a 5,000-digit index": Case(when(f"steps.touch.output[{'9' * 5000}] == 1"), 7, LONG),
    "a 300-digit index": Case(
        when(f"steps.touch.output[{'9' * 300}] == 1"), 7, ("a literal of 300 characters",)
    ),
    "__class__ of an output": Case(when("steps.touch.output.__class__ == 1"), 7, UNDERSCORE),
    "steps.x.__dict__": Case(
        when("steps.touch.__dict__"), 7, ("expected 'steps.touch.output' or 'steps.touch.status'",)
    ),
    "params.__init__.__globals__": Case(when("params.__init__.__globals__"), 7, UNDERSCORE),
    "__import__": Case(
        when("__import__('os').system('touch touched')"),
        7,
        ("a reference starts with 'params.' or 'steps.'",),
    ),
    "a private attribute": Case(when("steps.touch.output._private"), 7, UNDERSCORE),
    "a call": Case(when("params.x()"), 7, ("unexpected '('",)),
    "an ANSI escape in a condition": Case(when("params.x == 1\x1b[2J"), 7, ("cannot read",)),
    "__mro__ in inputs": Case(input_n("steps.touch.output.__class__.__mro__"), 7, UNDERSCORE),
    "200 nested parentheses in inputs": Case(
        input_n("steps.touch.output | " + "(" * 200 + "steps.touch.output" + ")" * 200), 7, DEEP
    ),
    # -- encodings and bytes
    "latin-1 bytes": Case(
        pipeline("description: caf\xe9\n").encode("latin-1"),
        "2:17",
        ("is not UTF-8 text: byte 0xe9", "save the file as UTF-8"),
    ),
    "surrogate bytes (CESU-8)": Case(
        pipeline("description: a\xff\n").encode().replace(b"a\xc3\xbf", b"a\xed\xa0\x80"),
        "2:15",
        ("is not UTF-8 text: byte 0xed",),
    ),
    "UTF-16 with a byte-order mark": Case(
        pipeline().encode("utf-16"), 1, ("the file is UTF-16 text", "save it as UTF-8")
    ),
    "UTF-16 without a byte-order mark": Case(
        pipeline().encode("utf-16-le"), "1:2", ("is a binary file", "UTF-16")
    ),
    "UTF-32 with a byte-order mark": Case(
        pipeline().encode("utf-32"), 1, ("the file is UTF-32 text",)
    ),
    "a NUL byte": Case(pipeline("description: a\x00b\n").encode(), "2:15", ("a NUL byte",)),
    "a raw escape character": Case(
        pipeline("description: a\x1b[31mred\n"), "2:15", ("U+001B", "not allowed in YAML")
    ),
    "a lone surrogate escape in the name": Case(
        'name: "x\\ud800"\nsteps:\n' + TOUCH, 1, ("invalid Unicode character escape",)
    ),
    "a lone surrogate escape in a value": Case(
        pipeline('description: "\\udc80"\n'), 2, ("invalid Unicode character escape",)
    ),
    "a Python tag": Case(
        pipeline("description: !!python/object/apply:os.system [touch x]\n"),
        2,
        ("could not determine a constructor",),
    ),
    # -- size
    "an oversized file": Case(
        10_000_001,
        None,
        (
            "the file is 10,000,001 bytes, over the limit of 10,000,000 bytes",
            "PIPECTL_MAX_FILE_BYTES",
        ),
    ),
    "a file over a lowered limit": Case(
        pipeline(),
        None,
        ("over the limit of 50 bytes", "PIPECTL_MAX_FILE_BYTES"),
        env={"PIPECTL_MAX_FILE_BYTES": "50"},
    ),
    "PIPECTL_MAX_FILE_BYTES not a number": Case(
        pipeline(),
        None,
        ("PIPECTL_MAX_FILE_BYTES: expected a number of bytes", "'10MB'"),
        env={"PIPECTL_MAX_FILE_BYTES": "10MB"},
    ),
    # -- names
    "a newline in a step name": Case(named('"a\\nb"'), 3, BAD_NAME + ("'\\n'",)),
    "an ANSI escape in a step name": Case(named('"a\\e[31mred"'), 3, BAD_NAME + ("\\x1b",)),
    "a NUL in a step name": Case(named('"a\\0b"'), 3, BAD_NAME),
    "a bidi override in a step name": Case(named('"abc\\u202edef"'), 3, BAD_NAME + ("\\u202e",)),
    "path traversal in a step name": Case(named("../../x"), 3, BAD_NAME + ("'/'",)),
    "'..' as a step name": Case(named("'..'"), 3, BAD_NAME + ("it is a path",)),
    "a 5,000-character step name": Case(named("s" * 5000), 3, BAD_NAME + ("5,000 characters",)),
    "path traversal in the pipeline name": Case(
        "name: ../../stories/x\nsteps:\n" + TOUCH, 1, ("not a usable pipeline name",)
    ),
    "an ANSI escape in a key": Case(pipeline('"\\e[2Jx": 1\n'), 2, ("\\x1b[2Jx: unknown field",)),
    # -- options
    "-p with 5,000-deep JSON": Case(
        P_BLOB,
        None,
        ("-p blob: expected JSON (nested too deeply)",),
        args=("-p", "blob=" + nested(5000)),
    ),
    "-p with a 5,000-digit integer": Case(
        P_BLOB, None, ("-p n: expected an integer",), args=("-p", "n=" + "9" * 5000)
    ),
}

# run through real processes, by validate and by run
SUBPROCESS = [
    "billion laughs in a json default",
    "billion laughs in step options",
    "billion laughs in block lists",
    "merge-key chain",
    "one mapping merged 100,000 times",
    "an oversized file",
    "200 nested parentheses",
    "a 1,000-term and chain",
    "a 5,000-digit integer",
    "params.__init__.__globals__",
    "latin-1 bytes",
    "UTF-16 with a byte-order mark",
    "an ANSI escape in a step name",
    "-p with 5,000-deep JSON",
]


def test_the_corpus_is_large():
    assert len(CASES) >= 40
    assert set(SUBPROCESS) <= set(CASES)


def _write(tmp_path: Path, case: Case) -> Path:
    (tmp_path / "hostile_steps.py").write_text(STEPS_MODULE, encoding="utf-8")
    path = tmp_path / "hostile.yaml"
    if isinstance(case.content, int):
        with path.open("wb") as f:
            f.truncate(case.content)  # sparse: costs nothing to write
    elif isinstance(case.content, bytes):
        path.write_bytes(case.content)
    else:
        path.write_text(case.content, encoding="utf-8")
    return path


def _check(case: Case, path: Path, code: int, stderr: str, seconds: float) -> None:
    assert code == 2, stderr[-2000:]
    assert "Traceback" not in stderr
    assert seconds < SECONDS, f"{seconds:.2f}s"
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr[:2000]
    message = lines[0]
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", message), repr(message[:300])
    head = f"pipectl: error: {path}"
    if case.line is None:
        assert message.startswith(head + ": "), message[:300]
    elif case.line == "?":
        found = re.match(re.escape(head) + r":(\d+): ", message)
        assert found, message[:300]
        text = path.read_text(encoding="utf-8").splitlines()[int(found.group(1)) - 1]
        assert case.line_text in text, (found.group(1), text)
    else:
        assert message.startswith(f"{head}:{case.line}: "), message[:300]
    for fragment in case.fragments:
        assert fragment in message, (fragment, message[:500])
    assert not (path.parent / "touched").exists()  # nothing ran
    assert not (path.parent / ".pipectl").exists()  # nothing was recorded


@pytest.mark.parametrize("name", sorted(CASES))
def test_validate_refuses_hostile_input(name, tmp_path, run_cli, monkeypatch):
    case = CASES[name]
    path = _write(tmp_path, case)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PIPECTL_HOME", str(tmp_path / ".pipectl"))
    start = time.monotonic()
    result = run_cli("validate", str(path), *case.args, env=case.env)
    seconds = time.monotonic() - start
    _check(case, path, result.exit_code, result.stderr, seconds)


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("name", SUBPROCESS)
def test_the_cli_refuses_hostile_input_in_a_real_process(name, command, tmp_path):
    case = CASES[name]
    path = _write(tmp_path, case)
    env = {**os.environ, "PIPECTL_HOME": str(tmp_path / ".pipectl"), **case.env}
    start = time.monotonic()
    proc = subprocess.run(
        [*PIPECTL, command, str(path), *case.args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    seconds = time.monotonic() - start
    _check(case, path, proc.returncode, proc.stderr, seconds)


# -- the decisions around the corpus --------------------------------------------------------


def test_the_limits_leave_room_for_real_files(tmp_path, run_cli, monkeypatch):
    """Aliases, nesting, names and conditions of a realistic size load; a UTF-8 byte-order
    mark is fine; a dead_letter path is the author's to choose, like a load path."""
    (tmp_path / "hostile_steps.py").write_text(STEPS_MODULE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    condition = " and ".join(["steps.touch.output.n == 1"] * 60)  # 1,795 characters
    text = pipeline(
        "params:\n  blob:\n    type: json\n    default:\n"
        f"      shared: &s {{retries: 3, hosts: [a, b, c]}}\n"
        f"      copies: [{', '.join(['*s'] * 200)}]\n"
        f"      deep: {nested(90)}\n",
        "  - name: 'load orders (v2.1)'\n    run: hostile_steps:touch\n"
        f"    when: {json.dumps(condition)}\n"
        "  - name: data\n    extract: {type: csv, path: in.csv}\n"
        "    load: [{type: jsonl, path: out.jsonl}]\n"
        "    on_bad_record: dead_letter\n    dead_letter: ../elsewhere/bad.jsonl\n",
    )
    path = tmp_path / "fine.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    result = run_cli("validate", str(path))
    assert result.exit_code == 0, result.output
    assert "is valid (3 steps)" in result.output


def test_the_file_size_limit_can_be_raised(tmp_path, run_cli, monkeypatch):
    (tmp_path / "hostile_steps.py").write_text(STEPS_MODULE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "p.yaml"
    path.write_text(pipeline("description: " + "x" * 200 + "\n"), encoding="utf-8")
    refused = run_cli("validate", str(path), env={"PIPECTL_MAX_FILE_BYTES": "200"})
    assert refused.exit_code == 2 and "over the limit of 200 bytes" in refused.stderr
    raised = run_cli("validate", str(path), env={"PIPECTL_MAX_FILE_BYTES": "1000"})
    assert raised.exit_code == 0, raised.output


@pytest.mark.slow
def test_without_libyaml_the_limits_hold_too(tmp_path, monkeypatch):
    """PyYAML's pure-Python loader (where libyaml is missing): it accepts lone surrogate
    escapes and composes nesting recursively; both are still refused with the file."""
    import yaml

    monkeypatch.delattr(yaml, "CSafeLoader", raising=False)
    cases = {
        "bomb": (json_default(laughs(" " * 6)), "alias bomb"),
        "surrogate": (pipeline('description: "\\udc80"\n'), "lone surrogate"),
        "nesting": (json_default(f"      {nested(150)}\n"), "nested more than 100"),
        "deeper": (json_default(f"      {nested(2000)}\n"), "nested more than 100"),
    }
    for name, (text, fragment) in cases.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(PipelineFileError, match=re.escape(fragment)) as info:
            load_pipeline(path)
        assert str(info.value).startswith(str(path)), name


def test_a_bad_condition_in_python_names_the_step():
    pipe = Pipeline("p")
    with pytest.raises(PipectlError, match=r"step 'b': when: the expression is 5,012 char"):
        pipe.add_step("b", lambda: 1, when="params.x == " + "9" * 5000)
    with pytest.raises(PipectlError, match=r"step 'c': inputs.x: '__class__': a name"):
        pipe.add_step("c", lambda x: x, inputs={"x": "steps.b.output.__class__"})


@pytest.mark.slow
def test_a_comparison_that_fails_at_run_time_fails_that_step_only(tmp_path):
    """'3' (text from a step) < 5: the step fails saying why, the engine goes on."""
    (tmp_path / "hostile_steps.py").write_text(STEPS_MODULE, encoding="utf-8")
    path = tmp_path / "p.yaml"
    path.write_text(
        pipeline(
            steps=(
                "  - name: b\n    run: hostile_steps:touch\n    when: steps.touch.output.text < 5\n"
                "  - name: c\n    run: hostile_steps:touch\n    depends_on: [b]\n"
                "  - name: other\n    run: hostile_steps:touch\n    depends_on: [touch]\n"
            )
        )
    )
    env = {**os.environ, "PIPECTL_HOME": str(tmp_path / ".pipectl")}
    proc = subprocess.run(
        [*PIPECTL, "run", str(path), "-q"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "cannot compare str '3' with int 5" in proc.stdout


@pytest.mark.parametrize(
    "condition, message",
    [
        ("steps.a.output", "is neither true nor false (ValueError: the truth value is ambiguous)"),
        ("steps.a.output == 1", "reading it raised RuntimeError: no comparing me"),
        ("not steps.a.output", "reading it raised ValueError"),
    ],
)
def test_values_that_misbehave_fail_the_step_not_the_engine(
    condition, message, tmp_path, monkeypatch, plugin_manager
):
    (tmp_path / "hostile_steps.py").write_text(STEPS_MODULE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    from hostile_steps import ambiguous

    pipe = Pipeline("p", plugin_manager=plugin_manager)
    pipe.add_step("a", ambiguous)
    pipe.add_step("b", lambda: 1, when=condition)
    pipe.add_step("c", lambda: 2)
    run = pipe.run_sync()
    assert run.steps["b"].status is StepStatus.FAILED
    assert message in run.steps["b"].error
    assert run.steps["c"].status is StepStatus.SUCCESS


def test_sql_looking_table_names_are_quoted(tmp_path, plugin_manager):
    database = tmp_path / "out.sqlite"
    with sqlite3.connect(database) as conn:
        conn.execute("CREATE TABLE keep (id INTEGER)")
    (tmp_path / "in.csv").write_text("id\n1\n2\n", encoding="utf-8")
    table = 'x"; DROP TABLE keep; --'
    path = tmp_path / "p.yaml"
    path.write_text(
        "name: sql\nsteps:\n  - name: load\n"
        f"    extract: {{type: csv, path: {json.dumps(str(tmp_path / 'in.csv'))}}}\n"
        f"    load: [{{type: sqlite, path: {json.dumps(str(database))}, "
        f"table: {json.dumps(table)}}}]\n",
        encoding="utf-8",
    )
    run = Pipeline.from_yaml(path, plugin_manager=plugin_manager).run_sync()
    assert run.ok, run.errors
    with sqlite3.connect(database) as conn:
        tables = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        assert {"keep", table} <= tables
        assert conn.execute(
            f'SELECT count(*) FROM "{table.replace(chr(34), 2 * chr(34))}"'
        ).fetchone() == (2,)
