"""Every code block of README.md and docs/*.md runs, unless it is marked as a fragment.

The convention (also in docs/guide.md, "About the examples"): an HTML comment on the line right
before a block's opening fence says what the block is. It is invisible where the Markdown is
rendered (GitHub, an editor's preview).

- ``<!-- fragment: REASON -->``: the block cannot run alone (it continues another block, needs
  a server, installs packages, names files of your own...). It is not run; the reason is
  required, so that a fragment is one honestly.
- ``<!-- file: PATH -->``: the block is the content of a file (a step module, a pipeline file,
  sample data). It is not run itself (a Python file is compiled, a pipeline file validated); it
  is written to PATH in the working directory of every block below it on the same page, so a
  pipeline file can name the functions the page shows.
- ``<!-- exit: N -->``: a shell block that is expected to end with exit status N (a pipeline
  that fails on purpose).

Everything else is run by language:

- ``python``: ``python BLOCK.py`` in a fresh subprocess;
- ``bash``/``sh``/``shell``: ``bash -e -o pipefail`` (each command must succeed), with the
  virtualenv's ``pipectl`` and ``python`` first on PATH;
- ``yaml``/``json``: a complete pipeline file (a mapping with ``steps`` or ``pipelines``) is
  checked with ``pipectl validate`` (so the modules it names must exist: ``file:`` blocks);
  anything else must be marked as a fragment;
- ``toml``: parsed;
- ``text`` and blocks without a language are output, not code: not run.

Each block runs in a temporary directory holding a copy of the repository's ``examples/`` (so
``pipectl run examples/quickstart/pipeline.yaml`` works as from the repository root, and writes
into the copy) and the ``file:`` blocks above it, with ``PIPECTL_HOME`` a temporary directory of
its own, no other ``PIPECTL_*`` variable, and a timeout.

docs/hooks.md is generated from ``pipectl/hookspecs.py`` (``python -m pipectl.docgen``) and
checked against it by tests/test_hooks_contract.py; its examples are hook implementations that
belong in a plugin module, so they are compiled here, not run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
GENERATED = {"docs/hooks.md"}  # generated from code, checked by tests/test_hooks_contract.py
TIMEOUT = 180

PYTHON = {"python", "py", "python3"}
SHELL = {"bash", "sh", "shell"}
PIPELINE_FILE = {"yaml", "yml", "json"}
CONFIG = {"toml"}
NOT_CODE = {"", "text", "console-output", "output"}
KNOWN = PYTHON | SHELL | PIPELINE_FILE | CONFIG | NOT_CODE

FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
MARKER = re.compile(r"^\s*<!--\s*(?P<kind>fragment|file|exit)\b\s*:?\s*(?P<value>.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    page: str  # relative to the repository root
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    marker: str | None  # fragment, file, exit or None
    value: str  # the marker's reason, path or exit status

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}:{self.lang or 'text'}"


def pages() -> list[Path]:
    return [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


def parse(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, with the marker on the line before each."""
    page = path.relative_to(REPO_ROOT).as_posix()
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, info = opening["fence"], opening["info"].strip()
        end = i + 1
        while end < len(lines) and not re.match(
            rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$", lines[end]
        ):
            end += 1
        marker = MARKER.match(lines[i - 1]) if i else None
        blocks.append(
            Block(
                page=page,
                line=i + 1,
                lang=(info.split() or [""])[0].lower(),
                code="\n".join(lines[i + 1 : end]) + "\n",
                marker=marker["kind"] if marker else None,
                value=marker["value"] if marker else "",
            )
        )
        i = end + 1
    return blocks


ALL_BLOCKS = [block for path in pages() for block in parse(path)]
CHECKED = [b for b in ALL_BLOCKS if b.page not in GENERATED]
TO_RUN = [b for b in CHECKED if b.marker != "fragment" and b.lang not in NOT_CODE]
FILES = [b for b in CHECKED if b.marker == "file"]


def test_the_pages_have_code_blocks_and_the_markers_are_well_formed():
    assert len(TO_RUN) > 40  # the parser found the blocks
    problems = []
    for block in CHECKED:
        where = block.id
        if block.lang not in KNOWN and block.marker != "file":
            problems.append(
                f"{where}: language {block.lang!r}: teach this test how to run it, or use text"
            )
        if block.marker == "fragment" and not block.value:
            problems.append(f"{where}: a fragment says why: <!-- fragment: REASON -->")
        if block.marker == "fragment" and block.lang in NOT_CODE:
            problems.append(f"{where}: a text block is never run: it needs no fragment marker")
        if block.marker == "file" and (
            not block.value or Path(block.value).is_absolute() or ".." in Path(block.value).parts
        ):
            problems.append(f"{where}: <!-- file: PATH --> needs a relative PATH")
        if block.marker == "exit" and (block.lang not in SHELL or not block.value.isdigit()):
            problems.append(f"{where}: <!-- exit: N --> is for shell blocks, N a number")
    # a marker that is not right before a fence is a mistake (it would silently do nothing)
    for path in pages():
        lines = path.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines):
            if MARKER.match(line) and (n + 1 >= len(lines) or not FENCE.match(lines[n + 1])):
                problems.append(
                    f"{path.relative_to(REPO_ROOT)}:{n + 1}: marker not on the "
                    f"line right before a code fence"
                )
    assert not problems, "\n".join(problems)


def workdir(tmp_path: Path, block: Block) -> tuple[Path, dict[str, str]]:
    """A copy of examples/, the file blocks above ``block`` on its page, and the environment."""
    work = tmp_path / "work"
    shutil.copytree(
        REPO_ROOT / "examples",
        work / "examples",
        ignore=shutil.ignore_patterns("output", "__pycache__", ".pipectl"),
    )
    for file in FILES:
        if file.page == block.page and file.line <= block.line:
            target = work / file.value
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(file.code, encoding="utf-8")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PIPECTL_") and k not in ("PYTHONPATH", "NO_COLOR", "COLUMNS")
    }
    env.update(
        PIPECTL_HOME=str(tmp_path / "home"),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(work),  # the page's modules, as for a script run where they are
        PYTHONDONTWRITEBYTECODE="1",
        TERM="dumb",
    )
    return work, env


def report(block: Block, proc: subprocess.CompletedProcess) -> str:
    return (
        f"{block.id} (exit {proc.returncode}):\n--- code\n{block.code}--- stdout\n"
        f"{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-6000:]}\n"
        f"Fix the block, or mark it <!-- fragment: REASON --> if it cannot run alone."
    )


@pytest.mark.slow
@pytest.mark.parametrize("block", TO_RUN, ids=lambda b: b.id)
def test_the_code_block_runs(block: Block, tmp_path: Path):
    work, env = workdir(tmp_path, block)
    if block.marker == "file" and block.lang not in PIPELINE_FILE:
        if block.lang in PYTHON:  # a module: it compiles (running it would only define things)
            compile(block.code, block.value, "exec")
        elif block.lang in CONFIG:
            tomllib.loads(block.code)
    elif block.lang in PYTHON:
        script = tmp_path / f"block_{block.line}.py"
        script.write_text(block.code, encoding="utf-8")
        proc = subprocess.run(
            [sys.executable, str(script)],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert proc.returncode == 0, report(block, proc)
    elif block.lang in SHELL:
        proc = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", block.code],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        expected = int(block.value) if block.marker == "exit" else 0
        assert proc.returncode == expected, report(block, proc)
    elif block.lang in PIPELINE_FILE:
        document = yaml.safe_load(block.code)
        assert isinstance(document, dict) and ("steps" in document or "pipelines" in document), (
            f"{block.id}: not a whole pipeline file (no steps or pipelines): mark it "
            f"<!-- fragment: REASON -->, e.g. 'part of a pipeline file'"
        )
        target = work / (
            block.value if block.marker == "file" else f"block_{block.line}.{block.lang}"
        )
        target.write_text(block.code, encoding="utf-8")
        proc = subprocess.run(
            [sys.executable, "-m", "pipectl", "validate", str(target)],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert proc.returncode == 0, report(block, proc)
    elif block.lang in CONFIG:
        tomllib.loads(block.code)
    else:  # pragma: no cover - test_the_pages_... reports the language
        pytest.fail(f"{block.id}: no way to run {block.lang!r}")


@pytest.mark.parametrize(
    "block", [b for b in ALL_BLOCKS if b.page in GENERATED and b.lang in PYTHON], ids=lambda b: b.id
)
def test_the_generated_pages_examples_compile(block: Block):
    compile(block.code, block.id, "exec")
