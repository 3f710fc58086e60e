"""The plugin author tutorial in docs/plugins.md works as written: its code, dropped into the
skeleton of ``pipectl new plugin``, passes its tests and runs the tutorial's pipeline file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"
PIPECTL = [sys.executable, "-m", "pipectl.cli"]


def tutorial_blocks() -> dict[str, list[str]]:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Tutorial: an extractor plugin", 1)[1].split("\n## ", 1)[0]
    blocks: dict[str, list[str]] = {}
    for lang, body in re.findall(r"```(\w+)\n(.*?)\n```", section, re.S):
        blocks.setdefault(lang, []).append(body)
    return blocks


@pytest.mark.slow
def test_the_tutorial_plugin_passes_its_tests_and_runs_its_pipeline(tmp_path):
    blocks = tutorial_blocks()
    plugin_py, extractor_py, test_py = blocks["python"]
    made = subprocess.run(
        [*PIPECTL, "new", "plugin", "fixedwidth", "--kind", "extractor"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    root = tmp_path / "pipectl-fixedwidth"
    # the generated plugin module is the one the tutorial shows
    package = root / "src" / "pipectl_fixedwidth"
    assert (package / "plugin.py").read_text().strip() == plugin_py.strip()
    (package / "extractor.py").write_text(extractor_py + "\n")
    (root / "tests" / "test_pipectl_fixedwidth.py").write_text(test_py + "\n")
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    tested = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=root,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert "3 passed" in tested.stdout, tested.stdout + tested.stderr

    # the pipeline file of step 6, with the plugin importable and registered by entry point:
    # a minimal dist-info on the path stands for `pip install -e`
    info = root / "src" / "pipectl_fixedwidth-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: pipectl-fixedwidth\nVersion: 0.1.0\n"
    )
    (info / "entry_points.txt").write_text("[pipectl]\nfixedwidth = pipectl_fixedwidth.plugin\n")
    (tmp_path / "statement.txt").write_text(
        "000001Ann       0012.50\n000002Bob       0007.25\nshort line\n000003Cleo      0100.00\n"
    )
    (tmp_path / "statements.yaml").write_text(blocks["yaml"][0] + "\n")
    ran = subprocess.run(
        [*PIPECTL, "run", "statements.yaml", "--no-progress"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    expected = [line for line in blocks["text"][-1].splitlines() if line.startswith("load")]
    for line in expected:
        assert line in ran.stdout
