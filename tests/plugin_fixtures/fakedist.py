"""Fake installed distributions: a plugin module and a ``*.dist-info`` directory on ``sys.path``.

``importlib.metadata.entry_points(group="pipectl")`` finds them exactly as it finds a
distribution ``pip install`` put in site-packages, so the discovery code under test is the real
one. Every module gets a unique name, so no import leaks from one test into another, and the
modules a test imported are dropped from ``sys.modules`` when it ends.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

_counter = itertools.count()

#: ``python -m pipectl.cli``: the ``pipectl`` console script, without relying on PATH.
PIPECTL = [sys.executable, "-m", "pipectl.cli"]


class FakeDist:
    """One fake distribution: entry point ``name`` in group ``pipectl`` naming ``module``."""

    def __init__(self, name: str, module: str, distribution: str, version: str, root: Path):
        self.name = name
        self.module = module
        self.distribution = distribution
        self.version = version
        self.root = root

    @property
    def marker(self) -> Path:
        """The file ``IMPORT_MARKER`` sources write when the plugin module is imported."""
        return self.root / f"{self.module}.imported"

    def loaded_module(self) -> Any:
        return sys.modules[self.module]

    def __repr__(self) -> str:
        return f"FakeDist({self.name!r}, module={self.module!r})"


#: Put at the top of a plugin source: proves (even across processes) that it was imported.
IMPORT_MARKER = (
    "import pathlib as _pathlib\n"
    "_pathlib.Path(__file__).with_suffix('.imported').write_text('imported')\n"
)


class FakeDists:
    """Creates fake distributions in one directory, put on ``sys.path`` on first use."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch):
        self.root = root
        self.token = f"t{os.getpid()}_{next(_counter)}"
        self._monkeypatch = monkeypatch
        self._on_path = False
        self.modules: list[str] = []

    def unique(self, stem: str) -> str:
        """A module name no other test uses."""
        name = f"{stem}_{self.token}_{len(self.modules)}"
        self.modules.append(name)
        return name

    def module(self, stem: str, source: str) -> str:
        """Write a plain module (not a plugin); return its unique import name."""
        name = self.unique(stem)
        (self.root / f"{name}.py").write_text(textwrap.dedent(source))
        self._put_on_path()
        return name

    def add(
        self,
        name: str,
        source: str,
        *,
        distribution: str | None = None,
        version: str = "1.2.0",
        module: str | None = None,
        value: str | None = None,
    ) -> FakeDist:
        """Install a fake distribution (``pipectl-<name>`` unless ``distribution`` is given)
        whose entry point ``name`` names a module with ``source`` (dedented)."""
        distribution = distribution or f"pipectl-{name}"
        module = module or self.unique(f"{name.replace('-', '_')}_plugin")
        (self.root / f"{module}.py").write_text(textwrap.dedent(source))
        info = self.root / f"{distribution.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n"
        )
        (info / "entry_points.txt").write_text(f"[pipectl]\n{name} = {value or module}\n")
        self._put_on_path()
        return FakeDist(name, module, distribution, version, self.root)

    def _put_on_path(self) -> None:
        if not self._on_path:
            self._monkeypatch.syspath_prepend(str(self.root))
            self._on_path = True

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a subprocess that sees these distributions."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(self.root), env.get("PYTHONPATH", "")) if p
        )
        env.update(extra)
        return env

    def run_cli(self, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        """``pipectl ARGS`` in a subprocess that sees these distributions."""
        return subprocess.run(
            [*PIPECTL, *args],
            env=self.env(**extra_env),
            capture_output=True,
            text=True,
            timeout=120,
        )

    def cleanup(self) -> None:
        for name in list(sys.modules):
            if any(name == m or name.startswith(m + ".") for m in self.modules):
                del sys.modules[name]


def _installed_plugins() -> list[str]:
    """Entry-point names of the pipectl plugins really installed (the repository's plugins
    under plugins/ are, in CI), which are not pipectl's own built-ins."""
    from importlib.metadata import entry_points

    return sorted(
        {ep.name for ep in entry_points(group="pipectl") if not ep.value.startswith("pipectl.")}
    )


@pytest.fixture
def fake_dists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A :class:`FakeDists` for this test; its modules are forgotten afterwards.

    The plugins really installed (pipectl-postgres, pipectl-http ...) are disabled, in this
    process and in the CLI processes it starts, so that a test sees only its own plugins."""
    installed = _installed_plugins()
    if installed:
        monkeypatch.setenv("PIPECTL_DISABLE_PLUGINS", ",".join(installed))
    root = tmp_path / "site"
    root.mkdir()
    dists = FakeDists(root, monkeypatch)
    yield dists
    dists.cleanup()
