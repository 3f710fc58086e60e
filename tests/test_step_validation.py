"""What plan validation catches before anything runs: bad input mappings, bad step types."""

from __future__ import annotations

import pytest

from pipectl import Pipeline, PipelineValidationError, hookimpl


def test_inputs_naming_a_missing_parameter_is_reported(plugin_manager):
    pipe = Pipeline("typo", plugin_manager=plugin_manager)
    pipe.add_step("a", lambda: 1)
    pipe.add_step("b", lambda y=5: y, inputs={"x": "a"})

    with pytest.raises(PipelineValidationError) as info:
        pipe.run_sync()
    assert "step 'b': inputs maps 'x' to step 'a'" in str(info.value)
    assert "has no parameter 'x'" in str(info.value)


def test_inputs_reach_kwargs_under_the_mapped_name(plugin_manager):
    pipe = Pipeline("kw", plugin_manager=plugin_manager)
    pipe.add_step("a", lambda: 1)
    pipe.add_step("c", lambda: 2)
    pipe.add_step("b", lambda **kw: kw, inputs={"x": "a"}, depends_on=["c"])

    run = pipe.run_sync()
    assert run.steps["b"].output == {"x": 1, "c": 2}


def test_step_type_building_a_non_callable_is_reported(plugin_manager, register_plugin):
    class BrokenStepType:
        @hookimpl
        def pipectl_register_step_types(self, register):
            register("broken", lambda step: None)

    register_plugin(BrokenStepType(), "broken-types")
    pipe = Pipeline("bad", plugin_manager=plugin_manager)
    pipe.add_step("x", step_type="broken")

    with pytest.raises(PipelineValidationError) as info:
        pipe.validate()
    assert "step 'x': step type 'broken' (plugin 'broken-types') built NoneType" in str(info.value)


def test_unknown_step_type_names_the_known_ones(plugin_manager):
    pipe = Pipeline("unknown", plugin_manager=plugin_manager)
    pipe.add_step("x", step_type="pyhton")

    with pytest.raises(PipelineValidationError) as info:
        pipe.validate()
    assert "did you mean 'python'" in str(info.value)


def test_sys_exit_in_a_step_fails_the_step_not_the_program(plugin_manager):
    import sys

    pipe = Pipeline("exit", plugin_manager=plugin_manager)

    @pipe.step("async_exit")
    async def async_exit():
        sys.exit(3)

    @pipe.step("sync_exit")
    def sync_exit():
        sys.exit(4)

    run = pipe.run_sync()
    assert run.steps["async_exit"].status == "failed"
    assert run.steps["sync_exit"].status == "failed"
    assert run.steps["async_exit"].error == "SystemExit: 3"
    assert run.status == "failed"
