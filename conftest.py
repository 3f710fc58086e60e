"""Settings for every test of the repository (the kernel's and the plugins')."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _pipectl_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``pipectl run`` records runs in $PIPECTL_HOME (default: .pipectl/ in the working
    directory): each test gets its own, so no test writes into the source tree or sees another
    test's runs. A test that wants the tracker file elsewhere sets the variable itself."""
    monkeypatch.setenv("PIPECTL_HOME", str(tmp_path_factory.mktemp("pipectl-home")))
