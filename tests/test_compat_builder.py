"""pipectl.compat.builder: the seed design "Pipeline Builder" runs its own code on pipectl.

The document's Python blocks are copied below as they are written there, with only their
import lines changed (``src.core.pipeline`` is ``pipectl.compat.builder``; the imports of the
document's own commands are dropped: the namespace holds them). They run in a namespace
holding small real versions of the document's domain functions (``stage_all_command`` writes
files, ``derive_all_metrics_command`` can be made to fail...), in a temporary working folder.
The tests after them check what the document says: retries with backoff, rollback in reverse
order, checkpoints and resume, skip_on_error, conditions, order, YAML and ``${VAR}``, and the
enhancements it plans (parallel groups, conditions, dependencies, callbacks, sub-pipelines).
tests/test_seed_docs_index.py lists every block of the document with the test running it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import attrs
import pytest

from pipectl import StepStatus
from pipectl.compat.builder import Pipeline, PipelineResult, PipelineStep
from pipectl.hookspecs import hookimpl

SEED_IMPORTS = {
    "from src.core.pipeline import Pipeline": "from pipectl.compat.builder import Pipeline",
    "from src.cli.commands.stage import stage_all_command": "",
}

# -- the document's blocks, as written ----------------------------------------------------------

QUICK_START = """
from src.core.pipeline import Pipeline
from src.cli.commands.stage import stage_all_command

# Create pipeline
pipeline = Pipeline(
    name="my-pipeline",
    description="Custom data processing workflow"
)

# Add steps with error handling
pipeline.add_step(
    name="stage-data",
    command=stage_all_command,
    raw_root=Path("data/01_raw"),
    workers=8,
    retry_count=2,  # Retry twice on failure
    rollback_fn=lambda: shutil.rmtree("data/02_stage"),
)

# Execute with rollback enabled
result = pipeline.execute(
    stop_on_error=True,
    enable_rollback=True,
)

if result.success:
    print(f"✓ Pipeline completed in {result.total_time:.1f}s")
"""

RETRY = """
pipeline.add_step(
    "flaky-network-call",
    fetch_remote_data,
    retry_count=3,        # Retry up to 3 times
    retry_delay=2.0,      # Wait 2 seconds between retries
)
"""

ROLLBACK = """
def rollback_staging(stage_dir):
    \"\"\"Remove staged files on failure.\"\"\"
    if stage_dir.exists():
        shutil.rmtree(stage_dir)

pipeline.add_step(
    "stage-data",
    stage_all_command,
    rollback_fn=rollback_staging,  # Called if later step fails
)

# Execute with rollback enabled
result = pipeline.execute(enable_rollback=True)
"""

SKIP_ON_ERROR = """
pipeline.add_step(
    "optional-step",
    optional_command,
    skip_on_error=True,  # Don't stop pipeline if this fails
)
"""

CHECKPOINT_JSON = """\
{
  "pipeline_name": "full-pipeline",
  "execution_id": "20251107_143022",
  "timestamp": "2025-11-07T14:30:22",
  "steps": [
    {
      "name": "stage-raw-data",
      "status": "success",
      "elapsed_time": 45.2
    },
    {
      "name": "build-histories",
      "status": "success",
      "elapsed_time": 12.3
    },
    {
      "name": "derive-metrics",
      "status": "failed",
      "error": "ValueError: Missing CNP data"
    }
  ]
}
"""

MY_PIPELINE_YML = """\
name: my-custom-pipeline
description: Custom workflow for Alisson chips

steps:
  - name: stage-data
    command: stage_all_command
    kwargs:
      raw_root: data/01_raw
      stage_root: data/02_stage/raw_measurements
      workers: 16
      force: true
    retry_count: 1

  - name: build-histories
    command: build_all_histories_command
    kwargs:
      manifest_path: data/02_stage/raw_measurements/_manifest/manifest.parquet
      output_dir: data/02_stage/chip_histories
      chip_group: Alisson
      min_experiments: 5
    skip_on_error: false

  - name: extract-metrics
    command: derive_all_metrics_command
    kwargs:
      chip_group: Alisson
      workers: 8
    skip_on_error: true
    retry_count: 2
"""

METHOD_1 = """
# src/cli/commands/my_pipeline.py
from src.core.pipeline import Pipeline

def create_analysis_pipeline(chip_number: int, output_dir: Path) -> Pipeline:
    \"\"\"Create custom analysis pipeline for single chip.\"\"\"
    pipeline = Pipeline(
        name=f"analyze-chip-{chip_number}",
        description=f"Complete analysis for chip {chip_number}",
    )

    # Step 1: Load data
    pipeline.add_step(
        "load-history",
        load_chip_history,
        chip_number=chip_number,
        retry_count=2,
    )

    # Step 2: Generate plots
    pipeline.add_step(
        "generate-plots",
        generate_all_plots,
        chip_number=chip_number,
        output_dir=output_dir,
    )

    # Step 3: Export data
    pipeline.add_step(
        "export-csv",
        export_to_csv,
        chip_number=chip_number,
        output_dir=output_dir,
        skip_on_error=True,  # Optional
    )

    return pipeline

@cli_command(name="analyze-chip", group="analysis")
def analyze_chip_command(
    chip_number: int = typer.Argument(...),
    output_dir: Path = typer.Option(Path("output")),
):
    \"\"\"Run complete analysis for a chip.\"\"\"
    pipeline = create_analysis_pipeline(chip_number, output_dir)
    result = pipeline.execute(stop_on_error=True, enable_rollback=False)

    if not result.success:
        raise typer.Exit(1)
"""

ANALYZE_CHIP_YML = """\
name: analyze-chip
description: Complete chip analysis workflow

steps:
  - name: load-history
    command: load_chip_history
    kwargs:
      chip_number: ${CHIP_NUMBER}  # Parameter placeholder
    retry_count: 2

  - name: generate-plots
    command: generate_all_plots
    kwargs:
      chip_number: ${CHIP_NUMBER}
      output_dir: output

  - name: export-csv
    command: export_to_csv
    kwargs:
      chip_number: ${CHIP_NUMBER}
      output_dir: output
    skip_on_error: true
"""

IDEMPOTENT = """
def idempotent_staging(output_dir: Path, force: bool):
    \"\"\"Stage data with idempotency.\"\"\"
    if output_dir.exists() and not force:
        print("Already staged, skipping")
        return

    # Perform staging...
"""

MEANINGFUL_ROLLBACK = """
pipeline.add_step(
    "create-indexes",
    build_database_indexes,
    rollback_fn=lambda: drop_database_indexes(),  # Undo index creation
)
"""

BAD_MONOLITHIC = """
pipeline.add_step("process-everything", process_all_data)
"""

GRANULAR = """
pipeline.add_step("validate-input", validate_data)
pipeline.add_step("transform-data", transform_data)
pipeline.add_step("save-output", save_results)
"""

PURPOSE = """
pipeline = Pipeline(
    name="production-etl",
    description=(
        "Production ETL pipeline:\\n"
        "1. Extract from raw CSVs\\n"
        "2. Transform with validation\\n"
        "3. Load into data warehouse\\n"
        "Owner: data-team@example.com"
    ),
)
"""

OLD_APPROACH = """
# Manual error handling
try:
    stage_all_command(...)
except SystemExit as e:
    if e.code != 0:
        console.print("[red]Failed[/red]")
        raise typer.Exit(1)

# No rollback
# No retry
# No checkpointing
# Manual progress tracking
"""

NEW_APPROACH = """
# Declarative with automatic error handling
pipeline = Pipeline("full-pipeline")

pipeline.add_step(
    "stage-data",
    stage_all_command,
    retry_count=2,           # Automatic retry
    rollback_fn=cleanup,     # Automatic rollback
    checkpoint=True,         # Automatic checkpointing
)

result = pipeline.execute(
    stop_on_error=True,
    enable_rollback=True,
    resume_from="latest",    # Resume support
)
"""

PLANNED_PARALLEL = """
pipeline.add_parallel_group([step1, step2, step3])
"""

PLANNED_CONDITION = """
pipeline.add_step("optional", command, condition=lambda: check_flag())
"""

PLANNED_DEPENDS_ON = """
pipeline.add_step("step3", command, depends_on=["step1", "step2"])
"""

PLANNED_CALLBACKS = """
pipeline.on_step_complete(lambda step: send_notification(step))
"""

PLANNED_SUBPIPELINE = """
main_pipeline.add_subpipeline(preprocessing_pipeline)
"""

TROUBLESHOOT_CHECKPOINT = """
pipeline.add_step("my-step", command, checkpoint=True)
"""

TROUBLESHOOT_ROLLBACK = """
result = pipeline.execute(enable_rollback=True)
"""

TROUBLESHOOT_REGISTRY = """
command_registry = {
    "my_command": my_command_function,
}
pipeline = Pipeline.from_yaml(path, command_registry)
"""

EXAMPLE_1 = """
pipeline = Pipeline("dev-pipeline", description="Fast development iteration")

# Stage with rollback
pipeline.add_step(
    "stage",
    stage_all_command,
    workers=16,
    force=True,
    rollback_fn=lambda: shutil.rmtree("data/02_stage/raw_measurements"),
)

# Build histories
pipeline.add_step(
    "histories",
    build_all_histories_command,
    rollback_fn=lambda: shutil.rmtree("data/02_stage/chip_histories"),
)

# Execute with rollback
result = pipeline.execute(enable_rollback=True)
"""

EXAMPLE_2 = """
pipeline = Pipeline(
    "production-etl",
    checkpoint_dir=Path("/var/lib/optothermal/checkpoints"),
)

# All steps with checkpoints
pipeline.add_step("extract", extract_data, checkpoint=True, retry_count=3)
pipeline.add_step("transform", transform_data, checkpoint=True, retry_count=2)
pipeline.add_step("load", load_data, checkpoint=True, retry_count=5)

# Execute with resume
result = pipeline.execute(resume_from="latest")
"""

EXAMPLE_3 = """
pipeline = create_full_pipeline(...)

# Save to YAML for reuse
pipeline.to_yaml(Path("config/pipelines/production.yml"))

# Later, load and execute
pipeline = Pipeline.from_yaml(
    Path("config/pipelines/production.yml"),
    command_registry,
)
result = pipeline.execute()
"""

# -- the document's domain, small and real -------------------------------------------------------


class Domain:
    """The document's commands: each appends its name to ``log`` and writes files under
    ``data/``; ``fail`` names commands that raise, ``flaky`` how often a command fails first."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.fail: set[str] = set()
        self.flaky: dict[str, int] = {}
        self.flag = False
        self.notified: list[Any] = []

    def _enter(self, name: str) -> None:
        self.log.append(name)
        if name in self.fail:
            raise ValueError("Missing CNP data" if name == "derive" else f"{name} broke")
        if self.flaky.get(name, 0) > 0:
            self.flaky[name] -= 1
            raise ConnectionError(f"{name}: connection reset")

    def namespace(self) -> dict[str, Any]:
        d = self

        def stage_all_command(
            raw_root: Path = Path("data/01_raw"),
            stage_root: Path | None = None,
            workers: int = 4,
            force: bool = False,
            stage_dir: Path = Path("data/02_stage"),
        ) -> None:
            d._enter("stage")
            root = Path(stage_root) if stage_root else Path(stage_dir) / "raw_measurements"
            root.mkdir(parents=True, exist_ok=True)
            (root / "chip67.parquet").write_text(f"workers={workers}")

        def build_all_histories_command(
            output_dir: Path = Path("data/02_stage/chip_histories"), **options: Any
        ) -> None:
            d._enter("histories")
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            (Path(output_dir) / "history.parquet").write_text("history")

        def derive_all_metrics_command(chip_group: str = "", workers: int = 1) -> None:
            d._enter("derive")
            Path("data/03_derived").mkdir(parents=True, exist_ok=True)

        def step(name: str) -> Any:
            def command(**kwargs: Any) -> str:
                d._enter(name)
                return name

            command.__name__ = name
            return command

        def chip_step(name: str, filename: str) -> Any:
            def command(chip_number: int, output_dir: Path | str = "output") -> None:
                d._enter(name)
                Path(output_dir).mkdir(parents=True, exist_ok=True)
                (Path(output_dir) / filename.format(chip_number)).write_text(str(chip_number))

            command.__name__ = name
            return command

        def load_chip_history(chip_number: int) -> None:
            d._enter("load_chip_history")

        class Exit(Exception):
            def __init__(self, code: int = 0):
                super().__init__(code)
                self.exit_code = code

        typer = SimpleNamespace(
            Argument=lambda default, **kw: default,
            Option=lambda default, **kw: default,
            Exit=Exit,
        )

        def create_full_pipeline(*args: Any) -> Pipeline:
            pipeline = Pipeline("full-pipeline")
            pipeline.add_step(
                "stage-data",
                stage_all_command,
                raw_root=Path("data/01_raw"),
                workers=8,
                retry_count=2,
                rollback_fn=lambda: shutil.rmtree("data/02_stage"),
            )
            pipeline.add_step(
                "build-histories",
                build_all_histories_command,
                output_dir=Path("data/02_stage/chip_histories"),
            )
            pipeline.add_step(
                "derive-metrics",
                derive_all_metrics_command,
                chip_group="Alisson",
                skip_on_error=True,
            )
            return pipeline

        return {
            "Pipeline": Pipeline,  # blocks without imports: the document imported it above
            "Path": Path,
            "shutil": shutil,
            "stage_all_command": stage_all_command,
            "build_all_histories_command": build_all_histories_command,
            "derive_all_metrics_command": derive_all_metrics_command,
            "fetch_remote_data": step("fetch_remote_data"),
            "optional_command": step("optional_command"),
            "load_chip_history": load_chip_history,
            "generate_all_plots": chip_step("generate_all_plots", "chip{}.png"),
            "export_to_csv": chip_step("export_to_csv", "chip{}.csv"),
            "build_database_indexes": step("build_database_indexes"),
            "drop_database_indexes": step("drop_database_indexes"),
            "process_all_data": step("process_all_data"),
            "validate_data": step("validate_data"),
            "transform_data": step("transform_data"),
            "save_results": step("save_results"),
            "extract_data": step("extract_data"),
            "load_data": step("load_data"),
            "cleanup": lambda: d.log.append("cleanup"),
            "command": step("command"),
            "check_flag": lambda: d.flag,
            "send_notification": d.notified.append,
            "my_command_function": step("my_command"),
            "cli_command": lambda **kw: lambda func: func,
            "typer": typer,
            "create_full_pipeline": create_full_pipeline,
            "command_registry": {
                "stage_all_command": stage_all_command,
                "build_all_histories_command": build_all_histories_command,
                "derive_all_metrics_command": derive_all_metrics_command,
                "load_chip_history": load_chip_history,
                "generate_all_plots": chip_step("generate_all_plots", "chip{}.png"),
                "export_to_csv": chip_step("export_to_csv", "chip{}.csv"),
            },
        }


@pytest.fixture(autouse=True)
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def domain() -> Domain:
    return Domain()


def run_block(source: str, namespace: dict[str, Any]) -> dict[str, Any]:
    """Run a block of the document (its imports pointed at pipectl.compat.builder)."""
    for seed, ours in SEED_IMPORTS.items():
        source = source.replace(seed, ours)
    exec(compile(source, "<seed 004>", "exec"), namespace)  # noqa: S102 - the document's code
    return namespace


def checkpoints(directory: str | Path = "data/.pipeline_checkpoints") -> list[dict[str, Any]]:
    """The checkpoint files in ``directory``, oldest first."""
    return [json.loads(p.read_text()) for p in sorted(Path(directory).glob("*.json"))]


class Retries:
    """A run listener keeping each retry's (step, attempt, delay)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, float]] = []

    @hookimpl
    def pipectl_step_retry(self, run: Any, step: Any, attempt: int, error: Any, delay: float):
        self.seen.append((step.name, attempt, delay))


# -- the document's blocks run -----------------------------------------------------------------


def test_quick_start(domain: Domain, capsys: pytest.CaptureFixture[str]) -> None:
    ns = run_block(QUICK_START, domain.namespace())
    result = ns["result"]
    assert isinstance(result, PipelineResult)
    assert result.success and result.total_time >= result.step_times["stage-data"] >= 0
    assert re.fullmatch(r"✓ Pipeline completed in \d+\.\ds\n", capsys.readouterr().out)
    assert Path("data/02_stage/raw_measurements/chip67.parquet").read_text() == "workers=8"
    assert domain.log == ["stage"]


def test_quick_start_rolls_back_when_a_later_step_fails(domain: Domain) -> None:
    ns = run_block(QUICK_START, domain.namespace())
    domain.fail.add("derive")
    ns["pipeline"].add_step("derive", ns["derive_all_metrics_command"])
    result = ns["pipeline"].execute(stop_on_error=True, enable_rollback=True)
    assert not result.success and str(result.status) == "rolled_back"
    assert not Path("data/02_stage").exists()
    assert result.steps["stage-data"].status is StepStatus.ROLLED_BACK
    assert result.errors == ["step 'derive' failed: ValueError: Missing CNP data"]


def test_quick_start_retries_twice(domain: Domain) -> None:
    domain.flaky["stage"] = 2
    ns = domain.namespace()
    ns["pipeline"] = Pipeline("p")
    # the document's retry_count=2, with no wait between attempts
    ns["pipeline"].add_step("stage-data", ns["stage_all_command"], retry_count=2, retry_delay=0)
    result = ns["pipeline"].execute()
    assert result.success and result.steps["stage-data"].attempts == 3
    assert domain.log == ["stage"] * 3


@pytest.mark.slow
def test_retry_block_waits_two_seconds(domain: Domain) -> None:
    domain.flaky["fetch_remote_data"] = 1
    ns = domain.namespace()
    ns["pipeline"] = Pipeline("flaky")
    run_block(RETRY, ns)
    retries = Retries()
    result = ns["pipeline"].execute(listeners=[retries])
    assert result.success and result.steps["flaky-network-call"].attempts == 2
    [(_, _, delay)] = retries.seen
    assert 1.8 <= delay <= 2.0 and result.total_time >= 1.8


def test_retries_back_off_exponentially_and_are_counted(domain: Domain) -> None:
    domain.flaky["fetch_remote_data"] = 10
    ns = domain.namespace()
    ns["pipeline"] = Pipeline("flaky")
    ns["pipeline"].add_step(
        "flaky-network-call", ns["fetch_remote_data"], retry_count=3, retry_delay=0.01
    )
    retries = Retries()
    result = ns["pipeline"].execute(listeners=[retries])
    assert not result.success
    assert result.steps["flaky-network-call"].attempts == 4  # the first and 3 retries
    assert [attempt for _, attempt, _ in retries.seen] == [1, 2, 3]
    for (_, _attempt, delay), nominal in zip(retries.seen, (0.01, 0.02, 0.04), strict=True):
        assert nominal * 0.9 - 1e-9 <= delay <= nominal  # doubled each time, jitter <= 10%


def test_rollback_block(domain: Domain) -> None:
    ns = domain.namespace()
    ns["pipeline"] = Pipeline("staging")
    run_block(ROLLBACK, ns)
    assert ns["result"].success and Path("data/02_stage/raw_measurements").is_dir()
    # "Called if later step fails": rollback_staging gets the command's stage_dir
    domain.fail.add("derive")
    ns["pipeline"].add_step("derive", ns["derive_all_metrics_command"])
    result = ns["pipeline"].execute(enable_rollback=True)
    assert not result.success and not Path("data/02_stage").exists()


def test_rollback_undoes_completed_steps_in_reverse_order(domain: Domain) -> None:
    ns = domain.namespace()
    undone: list[str] = []
    pipeline = Pipeline("full-pipeline")
    pipeline.add_step(
        "stage-raw-data", ns["stage_all_command"], rollback_fn=lambda: undone.append("stage")
    )
    pipeline.add_step(
        "build-histories",
        ns["build_all_histories_command"],
        output_dir="data/h",
        rollback_fn=lambda output_dir: undone.append(f"histories {output_dir}"),
    )
    pipeline.add_step("derive-metrics", ns["derive_all_metrics_command"])
    pipeline.add_step("report", ns["command"], rollback_fn=lambda: undone.append("report"))
    domain.fail.add("derive")
    result = pipeline.execute(enable_rollback=True)
    assert undone == ["histories data/h", "stage"]  # Step 2, then Step 1; Step 4 never ran
    assert result.steps["report"].status is StepStatus.SKIPPED
    # without enable_rollback nothing is undone
    undone.clear()
    assert not pipeline.execute().success and undone == []


def test_rollback_fn_must_be_given_what_it_asks_for(domain: Domain) -> None:
    pipeline = Pipeline("p")
    with pytest.raises(TypeError, match="rollback_fn needs stage_path"):
        pipeline.add_step(
            "stage",
            domain.namespace()["stage_all_command"],
            rollback_fn=lambda stage_path: None,
        )


def test_skip_on_error_block(domain: Domain) -> None:
    ns = domain.namespace()
    ns["pipeline"] = Pipeline("optional")
    run_block(SKIP_ON_ERROR, ns)
    ns["pipeline"].add_step("after", ns["command"])
    domain.fail.add("optional_command")
    result = ns["pipeline"].execute()
    assert result.success and domain.log == ["optional_command", "command"]
    optional = result.steps["optional-step"]
    assert optional.status is StepStatus.SKIPPED and "optional_command broke" in optional.error


def test_stop_on_error(domain: Domain) -> None:
    ns = domain.namespace()
    pipeline = Pipeline("p")
    for name in ("validate_data", "transform_data", "save_results"):
        pipeline.add_step(name, ns[name])
    domain.fail.add("transform_data")
    stopped = pipeline.execute(stop_on_error=True)
    assert not stopped.success and domain.log == ["validate_data", "transform_data"]
    assert stopped.steps["save_results"].status is StepStatus.SKIPPED
    domain.log.clear()
    going_on = pipeline.execute(stop_on_error=False)
    assert not going_on.success and domain.log == [
        "validate_data",
        "transform_data",
        "save_results",
    ]
    assert going_on.steps["save_results"].status is StepStatus.SUCCESS


def test_my_pipeline_yml(domain: Domain, workdir: Path) -> None:
    Path("my-pipeline.yml").write_text(MY_PIPELINE_YML)
    ns = domain.namespace()
    pipeline = Pipeline.from_yaml(Path("my-pipeline.yml"), ns["command_registry"])
    assert pipeline.description == "Custom workflow for Alisson chips"
    steps = pipeline.steps
    assert list(steps) == ["stage-data", "build-histories", "extract-metrics"]
    assert steps["stage-data"].kwargs == {
        "raw_root": "data/01_raw",
        "stage_root": "data/02_stage/raw_measurements",
        "workers": 16,
        "force": True,
    }
    assert steps["stage-data"].retry_count == 1 and steps["extract-metrics"].retry_count == 2
    assert steps["extract-metrics"].skip_on_error and not steps["build-histories"].skip_on_error
    domain.fail.add("derive")
    fast = Pipeline("my-custom-pipeline")  # the same steps, without the waits between retries
    for step in steps.values():
        fast.add(attrs.evolve(step, retry_delay=0))
    run = fast.execute()
    assert run.success  # extract-metrics may fail: skip_on_error
    assert domain.log == ["stage", "histories", "derive", "derive", "derive"]
    assert run.steps["extract-metrics"].status is StepStatus.SKIPPED
    assert Path("data/02_stage/raw_measurements/chip67.parquet").read_text() == "workers=16"


def test_method_1(domain: Domain, workdir: Path) -> None:
    ns = run_block(METHOD_1, domain.namespace())
    ns["analyze_chip_command"](67, workdir / "output")
    assert sorted(p.name for p in (workdir / "output").iterdir()) == ["chip67.csv", "chip67.png"]
    assert domain.log == ["load_chip_history", "generate_all_plots", "export_to_csv"]
    pipeline = ns["create_analysis_pipeline"](67, Path("out"))
    assert pipeline.name == "analyze-chip-67"
    assert pipeline.description == "Complete analysis for chip 67"
    domain.fail.add("export_to_csv")  # optional: the command still succeeds
    ns["analyze_chip_command"](67)
    assert Path("output/chip67.png").exists()
    domain.fail.add("generate_all_plots")
    with pytest.raises(ns["typer"].Exit):
        ns["analyze_chip_command"](67)


def test_analyze_chip_yml_with_chip_number(domain: Domain, monkeypatch: pytest.MonkeyPatch) -> None:
    Path("analyze-chip.yml").write_text(ANALYZE_CHIP_YML)
    registry = domain.namespace()["command_registry"]
    monkeypatch.setenv("CHIP_NUMBER", "67")
    pipeline = Pipeline.from_yaml("analyze-chip.yml", registry)
    assert [s.kwargs["chip_number"] for s in pipeline.steps.values()] == [67, 67, 67]
    assert pipeline.steps["generate-plots"].kwargs["output_dir"] == "output"
    assert pipeline.execute().success
    assert Path("output/chip67.png").read_text() == "67"
    monkeypatch.delenv("CHIP_NUMBER")
    with pytest.raises(ValueError, match=r"\$\{CHIP_NUMBER\} is not set in the environment"):
        Pipeline.from_yaml("analyze-chip.yml", registry)


def test_variables_inside_strings_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    Path("p.yml").write_text(
        "name: p-${ENV:-dev}\nsteps:\n  - name: a\n    command: f\n"
        "    kwargs: {path: 'data/${CHIP}/x', chip: '${CHIP}', items: ['${CHIP}']}\n"
    )
    monkeypatch.setenv("CHIP", "007")
    pipeline = Pipeline.from_yaml("p.yml", {"f": print})
    assert pipeline.name == "p-dev"
    assert dict(pipeline.steps["a"].kwargs) == {"path": "data/007/x", "chip": 7, "items": [7]}


def test_best_practices(domain: Domain, capsys: pytest.CaptureFixture[str]) -> None:
    ns = run_block(IDEMPOTENT, domain.namespace())
    ns["pipeline"] = Pipeline("practices")
    ns["pipeline"].add_step("staging", ns["idempotent_staging"], output_dir=Path("x"), force=False)
    run_block(MEANINGFUL_ROLLBACK, ns)
    run_block(GRANULAR, ns)
    assert ns["pipeline"].execute().success
    assert domain.log == [
        "build_database_indexes",
        "validate_data",
        "transform_data",
        "save_results",
    ]
    Path("x").mkdir()
    assert ns["pipeline"].execute().success
    assert capsys.readouterr().out == "Already staged, skipping\n"
    domain.fail.add("save_results")
    domain.log.clear()
    assert not ns["pipeline"].execute(enable_rollback=True).success
    assert domain.log[-1] == "drop_database_indexes"
    run_block(PURPOSE, ns)
    assert ns["pipeline"].description.endswith("Owner: data-team@example.com")


def test_new_approach(domain: Domain) -> None:
    ns = run_block(NEW_APPROACH, domain.namespace())
    assert ns["result"].success
    [state] = checkpoints()
    assert state["pipeline_name"] == "full-pipeline" and state["status"] == "success"
    assert [s["name"] for s in state["steps"]] == ["stage-data"]


def test_planned_enhancements(domain: Domain) -> None:
    ns = domain.namespace()
    ns["pipeline"] = pipeline = Pipeline("planned")
    pipeline.add_step("step1", ns["validate_data"])
    pipeline.add_step("step2", ns["transform_data"], depends_on=[])  # at the same time
    run_block(PLANNED_CONDITION, ns)
    run_block(PLANNED_DEPENDS_ON, ns)
    run_block(PLANNED_CALLBACKS, ns)
    result = pipeline.execute()
    assert result.success
    assert result.steps["optional"].status is StepStatus.SKIPPED
    assert result.steps["optional"].reason == "condition is false"
    assert domain.log[-1] == "command" and set(domain.log) == {
        "validate_data",
        "transform_data",
        "command",
    }
    assert sorted(r.step_name for r in domain.notified) == ["optional", "step1", "step2", "step3"]
    domain.flag = True
    domain.log.clear()
    assert pipeline.execute().success and domain.log.count("command") == 2


def test_troubleshooting(domain: Domain) -> None:
    ns = domain.namespace()
    ns["pipeline"] = Pipeline("trouble")
    run_block(TROUBLESHOOT_CHECKPOINT, ns)
    run_block(TROUBLESHOOT_ROLLBACK, ns)
    assert ns["result"].success
    assert [s["name"] for s in checkpoints()[0]["steps"]] == ["my-step"]
    Path("p.yml").write_text("name: p\nsteps:\n  - name: a\n    command: my_command\n")
    ns["path"] = Path("p.yml")
    with pytest.raises(ValueError, match="^Unknown command: my_command"):
        Pipeline.from_yaml(ns["path"], {})
    run_block(TROUBLESHOOT_REGISTRY, ns)
    assert ns["pipeline"].execute().success and domain.log == ["command", "my_command"]


def test_example_1(domain: Domain) -> None:
    ns = run_block(EXAMPLE_1, domain.namespace())
    assert ns["result"].success
    assert Path("data/02_stage/raw_measurements").is_dir()
    assert Path("data/02_stage/chip_histories").is_dir()
    domain.fail.add("derive")
    ns["pipeline"].add_step("metrics", ns["derive_all_metrics_command"])
    result = ns["pipeline"].execute(enable_rollback=True)
    assert not result.success and not Path("data/02_stage/raw_measurements").exists()
    assert not Path("data/02_stage/chip_histories").exists()


def example_2(workdir: Path) -> str:
    # the one change beyond imports: /var/lib/optothermal is not the test's to write
    return EXAMPLE_2.replace("/var/lib/optothermal/checkpoints", str(workdir / "checkpoints"))


def test_example_2_first_run(domain: Domain, workdir: Path) -> None:
    ns = run_block(example_2(workdir), domain.namespace())
    assert ns["result"].success and domain.log == ["extract_data", "transform_data", "load_data"]
    [state] = checkpoints(workdir / "checkpoints")
    assert [(s["name"], s["status"]) for s in state["steps"]] == [
        ("extract", "success"),
        ("transform", "success"),
        ("load", "success"),
    ]


@pytest.mark.slow
def test_example_2_resumes_after_a_failure(domain: Domain, workdir: Path) -> None:
    domain.fail.add("transform_data")  # fails its 3 attempts (1 s then 2 s between them)
    ns = run_block(example_2(workdir), domain.namespace())
    assert not ns["result"].success
    domain.fail.clear()
    domain.log.clear()
    ns = run_block(example_2(workdir), ns)
    assert ns["result"].success and domain.log == ["transform_data", "load_data"]


def test_example_3(domain: Domain) -> None:
    ns = run_block(EXAMPLE_3, domain.namespace())
    assert ns["result"].success
    assert domain.log == ["stage", "histories", "derive"]
    text = Path("config/pipelines/production.yml").read_text()
    assert text == (
        "name: full-pipeline\n"
        "steps:\n"
        "- name: stage-data\n"
        "  command: stage_all_command\n"
        "  kwargs:\n"
        "    raw_root: data/01_raw\n"
        "    workers: 8\n"
        "  retry_count: 2\n"
        "- name: build-histories\n"
        "  command: build_all_histories_command\n"
        "  kwargs:\n"
        "    output_dir: data/02_stage/chip_histories\n"
        "- name: derive-metrics\n"
        "  command: derive_all_metrics_command\n"
        "  kwargs:\n"
        "    chip_group: Alisson\n"
        "  skip_on_error: true\n"
    )


# -- checkpoints and resume --------------------------------------------------------------------


def three_steps(domain: Domain, **options: Any) -> Pipeline:
    ns = domain.namespace()
    pipeline = Pipeline("full-pipeline", **options)
    pipeline.add_step("stage-raw-data", ns["stage_all_command"])
    pipeline.add_step("build-histories", ns["build_all_histories_command"])
    pipeline.add_step("derive-metrics", ns["derive_all_metrics_command"])
    return pipeline


def test_checkpoint_file(domain: Domain) -> None:
    domain.fail.add("derive")
    result = three_steps(domain).execute()
    path = result.checkpoint_path
    assert path is not None and path.parent == Path("data/.pipeline_checkpoints")
    assert path.name == f"full-pipeline_{result.execution_id}.json"
    assert re.fullmatch(r"\d{8}_\d{6}_\d{6}", result.execution_id or "")
    state = json.loads(path.read_text())
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", state.pop("timestamp"))
    for step in state["steps"][:2]:
        assert isinstance(step.pop("elapsed_time"), float)
    assert state == {
        "pipeline_name": "full-pipeline",
        "execution_id": result.execution_id,
        "status": "failed",
        "steps": [
            {"name": "stage-raw-data", "status": "success"},
            {"name": "build-histories", "status": "success"},
            {"name": "derive-metrics", "status": "failed", "error": "ValueError: Missing CNP data"},
        ],
    }


def test_checkpoint_is_saved_after_each_step(domain: Domain) -> None:
    seen: list[list[tuple[str, str]]] = []

    def look() -> None:
        [state] = checkpoints()
        seen.append([(s["name"], s["status"]) for s in state["steps"]])

    pipeline = three_steps(domain)
    pipeline.add_step("look", look)
    assert pipeline.execute().success
    assert seen == [
        [
            ("stage-raw-data", "success"),
            ("build-histories", "success"),
            ("derive-metrics", "success"),
        ]
    ]


def test_resume_from_latest_skips_the_checkpointed_steps(domain: Domain) -> None:
    pipeline = three_steps(domain)
    domain.fail.add("derive")
    first = pipeline.execute()
    domain.fail.clear()
    domain.log.clear()
    second = pipeline.execute(resume_from="latest")
    assert second.success and domain.log == ["derive"]
    assert second.steps["stage-raw-data"].status is StepStatus.SKIPPED
    assert second.steps["stage-raw-data"].reason == (
        f"resumed: completed in execution {first.execution_id}"
    )
    state = json.loads(second.checkpoint_path.read_text())  # type: ignore[union-attr]
    assert [(s["name"], s["status"], s.get("resumed_from")) for s in state["steps"]] == [
        ("stage-raw-data", "success", first.execution_id),
        ("build-histories", "success", first.execution_id),
        ("derive-metrics", "success", None),
    ]
    domain.log.clear()  # the latest execution succeeded: nothing to resume, all steps run
    assert pipeline.execute(resume_from="latest").success
    assert domain.log == ["stage", "histories", "derive"]


def test_resume_from_an_execution_id_a_file_or_a_step(domain: Domain) -> None:
    pipeline = three_steps(domain)
    domain.fail.add("histories")
    failed = pipeline.execute()
    domain.fail.clear()
    for resume_from in (failed.execution_id, str(failed.checkpoint_path)):
        domain.log.clear()
        assert pipeline.execute(resume_from=resume_from).success
        assert domain.log == ["histories", "derive"]
    domain.log.clear()
    result = pipeline.execute(resume_from="derive-metrics")
    assert result.success and domain.log == ["derive"]
    assert result.steps["build-histories"].reason == "resume_from='derive-metrics': not run"
    with pytest.raises(ValueError, match="is not a step of 'full-pipeline'"):
        pipeline.execute(resume_from="nowhere")


def test_resume_latest_without_checkpoints_runs_everything(domain: Domain) -> None:
    assert three_steps(domain, checkpoint_dir="elsewhere").execute(resume_from="latest").success
    assert domain.log == ["stage", "histories", "derive"]


def test_a_step_without_checkpoint_runs_again_on_resume(domain: Domain) -> None:
    ns = domain.namespace()
    pipeline = Pipeline("p")
    pipeline.add_step("a", ns["validate_data"])
    pipeline.add_step("b", ns["transform_data"], checkpoint=False)
    pipeline.add_step("c", ns["save_results"])
    domain.fail.add("save_results")
    pipeline.execute()
    assert [s["name"] for s in checkpoints()[0]["steps"]] == ["a", "c"]
    domain.fail.clear()
    domain.log.clear()
    assert pipeline.execute(resume_from="latest").success
    assert domain.log == ["transform_data", "save_results"]


def test_rolled_back_steps_are_not_resumed(domain: Domain) -> None:
    pipeline = three_steps(domain)
    domain.fail.add("derive")
    result = pipeline.execute(enable_rollback=True)
    state = json.loads(result.checkpoint_path.read_text())  # type: ignore[union-attr]
    assert state["status"] == "failed"  # no step had a rollback_fn: nothing was undone
    ns = domain.namespace()
    undo = Pipeline("undo")
    undo.add_step("a", ns["validate_data"], rollback_fn=lambda: None)
    undo.add_step("b", ns["save_results"])
    domain.fail.add("save_results")
    rolled = undo.execute(enable_rollback=True)
    state = json.loads(rolled.checkpoint_path.read_text())  # type: ignore[union-attr]
    assert state["status"] == "rolled_back" and state["steps"][0]["status"] == "rolled_back"
    domain.fail.clear()
    domain.log.clear()
    assert undo.execute(resume_from="latest").success
    assert domain.log == ["validate_data", "save_results"]


def test_no_checkpoint_dir(domain: Domain) -> None:
    result = three_steps(domain, checkpoint_dir=None).execute()
    assert result.success and result.checkpoint_path is None
    assert not Path("data/.pipeline_checkpoints").exists()


# -- order, exits, YAML -------------------------------------------------------------------------


def test_steps_run_in_the_order_added(domain: Domain) -> None:
    import time

    order: list[str] = []

    def slow() -> None:
        time.sleep(0.05)
        order.append("slow")

    pipeline = Pipeline("order", checkpoint_dir=None)
    pipeline.add_step("first", slow)
    pipeline.add_step("second", lambda: order.append("second"))
    pipeline.add_step("third", lambda: order.append("third"))
    assert pipeline.execute().success and order == ["slow", "second", "third"]
    assert "first" in pipeline.visualize() and "third" in pipeline.visualize()


def test_kwargs_are_passed_to_the_command() -> None:
    got: dict[str, Any] = {}
    pipeline = Pipeline("kw", checkpoint_dir=None)
    pipeline.add_step("a", lambda **kw: got.update(kw), name_of="x", retry="r", workers=3)
    assert pipeline.execute().success and got == {"name_of": "x", "retry": "r", "workers": 3}


def test_system_exit_of_a_command() -> None:
    def ok() -> None:
        raise SystemExit(0)

    def ok_too() -> None:
        raise SystemExit()  # sys.exit(): code None, a success

    def bad() -> None:
        raise SystemExit(2)

    pipeline = Pipeline("exits", checkpoint_dir=None)
    pipeline.add_step("ok", ok)
    pipeline.add_step("ok-too", ok_too)
    pipeline.add_step("bad", bad)
    result = pipeline.execute()
    assert result.steps["ok"].status is StepStatus.SUCCESS
    assert result.steps["ok-too"].status is StepStatus.SUCCESS
    assert result.steps["bad"].error == "RuntimeError: the command exited with code 2"


def test_yaml_round_trip(domain: Domain) -> None:
    ns = domain.namespace()
    pipeline = Pipeline("round", description="there and back")
    pipeline.add_step(
        "stage", ns["stage_all_command"], raw_root=Path("data/01_raw"), workers=2, retry_count=1
    )
    pipeline.add_step("histories", ns["build_all_histories_command"], retry_delay=0.5)
    pipeline.add_step(
        "metrics",
        ns["derive_all_metrics_command"],
        skip_on_error=True,
        checkpoint=False,
        depends_on=["stage"],
    )
    text = pipeline.to_yaml("out/round.yml")
    assert Path("out/round.yml").read_text() == text
    again = Pipeline.from_yaml("out/round.yml", ns["command_registry"])
    assert again.name == "round" and again.description == "there and back"
    assert again.to_yaml() == text
    for name, step in pipeline.steps.items():
        back = again.steps[name]
        assert back.command is step.command
        assert (back.retry_count, back.retry_delay, back.skip_on_error, back.checkpoint) == (
            step.retry_count,
            step.retry_delay,
            step.skip_on_error,
            step.checkpoint,
        )
        assert back.depends_on == step.depends_on
    assert again.steps["stage"].kwargs == {"raw_root": "data/01_raw", "workers": 2}
    assert again.execute().success


def test_yaml_errors(domain: Domain) -> None:
    pipeline = Pipeline("p")
    pipeline.add_step("a", lambda: None)
    with pytest.raises(TypeError, match="no name for YAML"):
        pipeline.to_yaml()
    Path("bad.yml").write_text("name: p\nsteps:\n  - name: a\n    command: f\n    retries: 2\n")
    with pytest.raises(ValueError, match="unknown field retries"):
        Pipeline.from_yaml("bad.yml", {"f": print})


def test_import_pipectl_does_not_import_compat() -> None:
    code = "import sys, pipectl; pipectl.Pipeline; print('pipectl.compat' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- blocks added with the seed-docs index (tests/test_seed_docs_index.py) ---------------------


def test_checkpoint_format_is_the_documents(domain: Domain) -> None:
    """Section "Checkpoint format" (004, line 187): the file a failed run leaves has the
    document's fields, step entries and error text (and ``status``, the run's, besides)."""
    doc = json.loads(CHECKPOINT_JSON)
    domain.fail.add("derive")  # "ValueError: Missing CNP data", as in the document
    result = three_steps(domain).execute()
    state = json.loads(result.checkpoint_path.read_text())  # type: ignore[union-attr]
    assert set(doc) <= set(state) and set(state) - set(doc) == {"status"}
    assert state["pipeline_name"] == doc["pipeline_name"]
    assert re.fullmatch(r"\d{8}_\d{6}(_\d{6})?", state["execution_id"])
    assert [sorted(entry) for entry in state["steps"]] == [sorted(entry) for entry in doc["steps"]]
    assert [(e["name"], e["status"], e.get("error")) for e in state["steps"]] == [
        (e["name"], e["status"], e.get("error")) for e in doc["steps"]
    ]


def test_resume_from_the_documents_checkpoint(domain: Domain) -> None:
    """Section "Checkpointing & Resume" (004, lines 169 and 187): given the document's
    checkpoint file as it is, a resume skips stage-raw-data and build-histories and runs
    derive-metrics."""
    directory = Path("data/.pipeline_checkpoints")
    directory.mkdir(parents=True)
    (directory / "full-pipeline_20251107_143022.json").write_text(CHECKPOINT_JSON)
    for resume_from in ("latest", "20251107_143022"):
        domain.log.clear()
        result = three_steps(domain).execute(resume_from=resume_from)
        assert result.success and domain.log == ["derive"]  # "Step 3: derive-metrics ✓"
        skipped = [n for n, r in result.steps.items() if r.status is StepStatus.SKIPPED]
        assert skipped == ["stage-raw-data", "build-histories"]  # "Skipping completed steps"
        assert result.steps["build-histories"].reason == (
            "resumed: completed in execution 20251107_143022"  # "Resuming from checkpoint"
        )
        (directory / f"full-pipeline_{result.execution_id}.json").unlink()


def test_bad_monolithic_step_runs_but_localizes_nothing(domain: Domain) -> None:
    """Section "Granular Steps" (004, lines 456 and 461): both run; only the granular steps
    say where a failure was and let a resume start there."""
    ns = domain.namespace()
    ns["pipeline"] = Pipeline("monolith")
    run_block(BAD_MONOLITHIC, ns)
    assert ns["pipeline"].execute().success and domain.log == ["process_all_data"]
    domain.fail.add("process_all_data")
    assert not ns["pipeline"].execute().success
    assert [(s["name"], s["status"]) for s in checkpoints()[-1]["steps"]] == [
        ("process-everything", "failed")  # which part failed: not said
    ]
    ns["pipeline"] = Pipeline("granular")
    run_block(GRANULAR, ns)
    domain.fail = {"transform_data"}
    assert not ns["pipeline"].execute().success
    [state] = [c for c in checkpoints() if c["pipeline_name"] == "granular"]
    assert [(s["name"], s["status"]) for s in state["steps"]] == [
        ("validate-input", "success"),
        ("transform-data", "failed"),
        ("save-output", "skipped"),
    ]
    domain.fail.clear()
    domain.log.clear()
    assert ns["pipeline"].execute(resume_from="latest").success  # "Checkpoint between steps"
    assert domain.log == ["transform_data", "save_results"]


def test_old_approach_handles_errors_by_hand(domain: Domain) -> None:
    """Section "Old Approach" (004, line 507): the manual code runs as written; a command
    exiting with a non-zero code prints "Failed" and exits 1, code 0 passes.
    (``stage_all_command(...)`` passes the Ellipsis itself: a placeholder, taken as it is.)

    The document's code is wrong for any system in one case: ``sys.exit()`` (code None) is a
    success, and ``e.code != 0`` reports it as a failure. The new approach (the builder) takes
    None and 0 as success (test_system_exit_of_a_command)."""
    ns = domain.namespace()
    printed: list[str] = []
    called: list[tuple[Any, ...]] = []
    ns["console"] = SimpleNamespace(print=printed.append)
    for code in (0, 2, None):

        def stage_all_command(*args: Any, code: int | None = code) -> None:
            called.append(args)
            raise SystemExit(code)

        ns["stage_all_command"] = stage_all_command
        if code != 0:
            with pytest.raises(ns["typer"].Exit) as exited:
                run_block(OLD_APPROACH, ns)
            assert exited.value.exit_code == 1
        else:
            run_block(OLD_APPROACH, ns)
    assert called == [(...,)] * 3
    assert printed == ["[red]Failed[/red]"] * 2  # code 2, and code None (see above)


class Gauge:
    """How many commands are inside ``async with gauge`` at once, and the most there were."""

    def __init__(self) -> None:
        self.now = self.peak = 0

    async def __aenter__(self) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)

    async def __aexit__(self, *exc: object) -> None:
        self.now -= 1


def test_planned_parallel_group(domain: Domain) -> None:
    """Section "Planned Enhancements", 1 (004, line 555): the three steps of a parallel group
    run at the same time, after the step before them and before the step after them."""
    import asyncio

    gauge = Gauge()

    def fetch(name: str) -> Any:
        async def command() -> str:
            async with gauge:
                await asyncio.sleep(0.05)
            domain.log.append(name)
            return name

        command.__name__ = name
        return command

    ns = domain.namespace()
    ns["pipeline"] = pipeline = Pipeline("parallel")
    pipeline.add_step("stage", ns["stage_all_command"])
    ns.update(
        step1=PipelineStep("fetch-users", fetch("fetch_users")),
        step2=PipelineStep("fetch-orders", fetch("fetch_orders")),
        step3=PipelineStep("fetch-prices", fetch("fetch_prices")),
    )
    run_block(PLANNED_PARALLEL, ns)
    pipeline.add_step("merge", ns["command"])
    result = pipeline.execute()
    assert result.success and gauge.peak == 3
    assert domain.log[0] == "stage" and domain.log[-1] == "command"
    assert sorted(domain.log[1:4]) == ["fetch_orders", "fetch_prices", "fetch_users"]
    group = ("fetch-users", "fetch-orders", "fetch-prices")
    assert pipeline.dependencies() == {
        "stage": (),
        **dict.fromkeys(group, ("stage",)),
        "merge": group,
    }
    # in YAML the group is its steps' depends_on, and reads back as the same pipeline
    registry = {**ns["command_registry"], "command": ns["command"]}
    registry.update(
        {s.command.__name__: s.command for s in (ns["step1"], ns["step2"], ns["step3"])}
    )
    pipeline.to_yaml("parallel.yml")
    again = Pipeline.from_yaml("parallel.yml", registry)
    assert again.dependencies() == pipeline.dependencies()
    with pytest.raises(ValueError, match="already has a step 'merge'"):
        pipeline.add_parallel_group(
            [PipelineStep("x", ns["command"]), PipelineStep("merge", print)]
        )
    assert "x" not in pipeline.steps  # nothing of a refused group is added


def test_planned_subpipeline(domain: Domain) -> None:
    """Section "Planned Enhancements", 5 (004, line 575): a nested pipeline runs as a step of
    the main one (a pipectl sub-pipeline run); a failure after it undoes its completed steps
    too, in reverse order; a failure inside it fails its step and stops the main pipeline
    (and with rollback, undoes its own completed steps first)."""
    ns = domain.namespace()
    undone: list[str] = []
    preprocessing = Pipeline("preprocessing")
    preprocessing.add_step(
        "validate", ns["validate_data"], rollback_fn=lambda: undone.append("validate")
    )
    preprocessing.add_step(
        "transform", ns["transform_data"], rollback_fn=lambda: undone.append("transform")
    )
    main = Pipeline("main")
    main.add_step("stage", ns["stage_all_command"], rollback_fn=lambda: undone.append("stage"))
    ns.update(main_pipeline=main, preprocessing_pipeline=preprocessing)
    run_block(PLANNED_SUBPIPELINE, ns)
    main.add_step("save", ns["save_results"])
    result = main.execute()
    assert result.success
    assert domain.log == ["stage", "validate_data", "transform_data", "save_results"]
    nested = result.steps["preprocessing"].output.run
    assert nested.parent_run_id == result.run.run_id and list(nested.steps) == [
        "validate",
        "transform",
    ]
    assert [s["name"] for s in checkpoints()[0]["steps"]] == ["stage", "preprocessing", "save"]

    domain.fail.add("save_results")
    failed = main.execute(enable_rollback=True)
    assert str(failed.status) == "rolled_back"
    assert undone == ["transform", "validate", "stage"]  # reverse order, through the nesting

    domain.fail = {"transform_data"}
    domain.log.clear()
    undone.clear()
    stopped = main.execute()
    assert stopped.steps["preprocessing"].status is StepStatus.FAILED
    assert stopped.steps["save"].status is StepStatus.SKIPPED
    assert domain.log == ["stage", "validate_data", "transform_data"] and undone == []
    # with rollback, the failing sub-pipeline undoes its completed step, then the main one's
    assert str(main.execute(enable_rollback=True).status) == "rolled_back"
    assert undone == ["validate", "stage"]
    with pytest.raises(TypeError, match="a sub-pipeline has no place in the YAML"):
        main.to_yaml()
    with pytest.raises(ValueError, match="cannot run itself"):
        main.add_subpipeline(main)
