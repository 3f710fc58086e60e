"""scripts/screenshots.py (the screenshots of docs/images/) runs: it builds its demo project,
starts ``pipectl ui``, and writes both pictures. Skipped, with the reason, without chromium."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "screenshots.py"

pytestmark = pytest.mark.slow


def test_the_screenshot_script_writes_both_pictures(tmp_path: Path) -> None:
    if not shutil.which("chromium") and not os.access("/usr/bin/chromium", os.X_OK):
        pytest.skip("no chromium binary (install Debian's chromium: apt-get install -y chromium)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path / "images")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for name in ("ui-runs.png", "ui-run.png"):
        picture = tmp_path / "images" / name
        assert f"wrote {picture}" in done.stdout
        data = picture.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000, name
        width = int.from_bytes(data[16:20], "big")
        assert width == 1280, (name, width)
