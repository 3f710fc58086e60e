"""``pipectl import ia-modules``: pipelines of the ia_modules JSON design, imported and run.

The step classes in tests/ia_modules/steps are written in that design's style (built with
(name, config), ``async run(data) -> dict``) and run unchanged.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipectl import Pipeline
from pipectl.model import StepStatus

HERE = Path(__file__).parent / "ia_modules"
PIPECTL = [sys.executable, "-m", "pipectl.cli"]


@pytest.fixture
def ia(tmp_path, monkeypatch):
    """The step classes as the importable package ``ia_steps``; their call log cleared."""
    shutil.copytree(HERE / "steps", tmp_path / "ia_steps")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    sys.modules.pop("ia_steps", None)
    import ia_steps

    yield ia_steps
    sys.modules.pop("ia_steps", None)


def imported(tmp_path: Path, name: str) -> Path:
    out = tmp_path / f"{name}.yaml"
    proc = subprocess.run(
        [*PIPECTL, "import", "ia-modules", str(HERE / f"{name}.json"), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stderr
    return out


def calls(ia):
    return {name: data for name, data in ia.CALLS}


def test_a_chain_runs_with_each_step_given_its_inputs(tmp_path, ia, plugin_manager):
    path = imported(tmp_path, "chain")
    pipe = Pipeline.from_yaml(path, {"topic": "ml"}, plugin_manager=plugin_manager)
    run = pipe.run_sync()
    assert run.ok, run.errors
    assert [name for name, _ in ia.CALLS] == ["step1", "step2", "step3"]
    assert calls(ia) == {
        "step1": {"topic": "ml"},
        "step2": {"topic": "PROCESSED_ML"},
        "step3": {"topic": "PROCESSED_ML_RICH"},
    }
    assert run.steps["step3"].output == {"topic": "PROCESSED_ML_RICH_FINAL"}


def test_parallel_branches_run_and_join(tmp_path, ia, plugin_manager):
    path = imported(tmp_path, "parallel")
    pipe = Pipeline.from_yaml(
        path, {"loaded_data": list(range(1, 10))}, plugin_manager=plugin_manager
    )
    assert pipe.graph.levels() == [["split"], ["stream1", "stream2", "stream3"], ["merge"]]
    run = pipe.run_sync()
    assert run.ok, run.errors
    chunks = [[1, 4, 7], [2, 5, 8], [3, 6, 9]]
    for i in (1, 2, 3):
        assert calls(ia)[f"stream{i}"] == {"data_chunks": chunks}
    assert calls(ia)["merge"] == {
        f"processed_data_{i}": {"stream": i, "sum": sum(chunks[i - 1])} for i in (1, 2, 3)
    }
    assert run.steps["merge"].output == {"merged_results": {"total": 45, "streams": [1, 2, 3]}}


@pytest.mark.parametrize(
    "threshold, ran, skipped, level",
    [
        (0.7, "step3", "step4", "full"),  # quality 0.75: the high-quality branch
        (0.9, "step4", "step3", "basic"),  # below the threshold: the other branch
    ],
)
def test_only_the_branch_whose_condition_holds_runs_and_the_join_gets_its_data(
    tmp_path, ia, plugin_manager, threshold, ran, skipped, level
):
    path = imported(tmp_path, "conditional")
    rows = [{"a": 1, "b": None}, {"a": 2, "b": 3}]  # quality: (0.5 + 1) / 2 = 0.75
    pipe = Pipeline.from_yaml(
        path, {"threshold": threshold, "test_data": rows}, plugin_manager=plugin_manager
    )
    run = pipe.run_sync()
    assert run.ok, run.errors
    assert run.steps[ran].status is StepStatus.SUCCESS
    assert run.steps[skipped].status is StepStatus.SKIPPED
    assert run.steps[skipped].reason.startswith("condition is false")
    assert skipped not in calls(ia)
    assert calls(ia)[ran] == {"ingested_data": rows, "quality_score": 0.75}
    processed = [dict(r, level=level) for r in rows]
    assert calls(ia)["step5"] == {"processed_data": processed}
    assert run.steps["step5"].output == {"aggregated_results": {"total": 2, "levels": [level]}}


@pytest.mark.slow
def test_the_imported_file_runs_from_the_command_line(tmp_path, ia):
    path = imported(tmp_path, "conditional")
    proc = subprocess.run(
        [
            *PIPECTL,
            "run",
            str(path),
            "-p",
            "threshold=0.5",
            "-p",
            'test_data=[{"a": 1, "b": 2}]',
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "step4" in proc.stdout and "condition is false" in proc.stdout


def test_import_prints_yaml_without_o(tmp_path):
    proc = subprocess.run(
        [*PIPECTL, "import", "ia-modules", str(HERE / "chain.json")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "run: ia_steps:Prepare" in proc.stdout
    assert "topic: steps.step1.output.topic" in proc.stdout


def bad(tmp_path, data):
    path = tmp_path / "bad.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return subprocess.run(
        [*PIPECTL, "import", "ia-modules", str(path), "-o", str(tmp_path / "out.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )


STEP = {"id": "a", "module": "m", "step_class": "A"}


@pytest.mark.parametrize(
    "data, message",
    [
        ("{not json", "bad.json: line 1: not JSON"),
        ({"flow": {}}, "steps: expected a non-empty list of steps"),
        ({"steps": [{"id": "a", "module": "m"}]}, "steps[0].step_class: every step needs"),
        ({"steps": [STEP, STEP]}, "steps[1].id: duplicate step id 'a'"),
        (
            {"steps": [dict(STEP, inputs=[{"name": "x", "source": "user_request"}])]},
            "steps[0].inputs[0].source: 'user_request' is not a reference",
        ),
        (
            {"steps": [dict(STEP, inputs=[{"name": "x", "source": "{steps.zz.output.y}"}])]},
            "refers to unknown step 'zz'",
        ),
        (
            {"steps": [STEP], "flow": {"paths": [{"from_step": "a", "to_step": "b"}]}},
            "flow.paths[0].to_step: unknown step 'b'",
        ),
        (
            {
                "steps": [STEP, dict(STEP, id="b")],
                "flow": {
                    "paths": [
                        {"from_step": "a", "to_step": "b"},
                        {"from_step": "b", "to_step": "a"},
                    ]
                },
            },
            "flow: cycle: a -> b -> a: pipectl pipelines are DAGs",
        ),
        (
            {
                "steps": [STEP, dict(STEP, id="b")],
                "flow": {
                    "paths": [
                        {"from_step": "a", "to_step": "b", "condition": {"type": "llm_judge"}}
                    ]
                },
            },
            "flow.paths[0].condition.type: condition type 'llm_judge' cannot be converted",
        ),
        (
            {
                "steps": [STEP, dict(STEP, id="b")],
                "flow": {
                    "paths": [
                        {
                            "from_step": "a",
                            "to_step": "b",
                            "condition": {
                                "type": "threshold_condition",
                                "config": {"field": "x", "operator": "~="},
                            },
                        }
                    ]
                },
            },
            "flow.paths[0].condition.config.operator: unknown operator '~='",
        ),
    ],
)
def test_bad_ia_modules_files_exit_2_with_the_field(tmp_path, data, message):
    proc = bad(tmp_path, data)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out.yaml").exists()
