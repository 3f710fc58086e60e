from pipectl import Pipeline, RunStatus, StepStatus


def test_two_steps_pass_output_by_name(plugin_manager):
    pipe = Pipeline("smoke", plugin_manager=plugin_manager)

    @pipe.step("extract")
    async def extract():
        return [1, 2, 3]

    @pipe.step("total", depends_on=["extract"])
    def total(extract):
        return sum(extract)

    run = pipe.run_sync()
    assert run.status is RunStatus.SUCCESS
    assert run.steps["total"].status is StepStatus.SUCCESS
    assert run.steps["total"].output == 6
