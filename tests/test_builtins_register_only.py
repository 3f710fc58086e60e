"""The built-in plugins (``pipectl/builtins/``) only register their components; the
implementations (``pipectl/components/``) are imported when a pipeline uses one, never when the
plugins load (at every start of ``pipectl``, ``--help`` included)."""

from __future__ import annotations

import os
import subprocess
import sys

from pipectl.plugins import BUILTIN_PLUGINS


def test_loading_the_builtin_plugins_imports_no_component():
    code = (
        "import sys; from pipectl.plugins import get_plugin_manager; "
        "get_plugin_manager(autoload=False); "
        "print(sorted(m for m in sys.modules if m.startswith('pipectl.components')))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert done.stdout.strip() == "[]"


def test_every_builtin_plugin_is_a_module_of_builtins():
    assert all(module.startswith("pipectl.builtins.") for _, module in BUILTIN_PLUGINS)


def test_the_step_types_are_built_by_their_components(plugin_manager):
    from pipectl.components.data_step import data_step
    from pipectl.components.python_step import pipeline_step, python_step
    from pipectl.model import StepSpec

    def double(x: int) -> int:
        return 2 * x

    step_types = plugin_manager.registries.step_types
    assert step_types.create("python", StepSpec("s", func=double)) is double
    assert python_step(StepSpec("s", func=double)) is double
    assert {step_types.get(name).plugin for name in ("python", "pipeline", "data")} == {
        "python",
        "data",
    }
    for factory in (
        data_step,
        pipeline_step,
        step_types.get("data").factory,
        step_types.get("pipeline").factory,
    ):
        assert "components" in factory.__code__.co_varnames[: factory.__code__.co_argcount]
