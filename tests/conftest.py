"""Shared fixtures of the kernel's tests (the plugin-author kit, pipectl.testing, is loaded by
pytest through its pytest11 entry point)."""

from __future__ import annotations



import pytest


@pytest.fixture(autouse=True)
def _no_plugin_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests start without the user's plugin switches."""
    for name in ("PIPECTL_DISABLE_PLUGINS", "PIPECTL_DISABLE_PLUGIN_AUTOLOAD",
                 "PIPECTL_STRICT_PLUGINS"):
        monkeypatch.delenv(name, raising=False)
