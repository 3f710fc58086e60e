"""Every code block of the five seed documents, and the test that runs it (or why none does).

Issue 17: each code example of the seed documents (../shared/seeds, see its README.md) that is
runnable Python runs as a test with only its import lines changed, the document's own domain
functions and objects (``fetch_from_api``, ``stage_all_command``, ``db_manager``...) stubbed
with small real ones, and does what the document says. The blocks are kept, as the documents
write them, in string constants of the test modules named below (``code in``); the tests run
them through the adapters ``pipectl.compat.pipeline_core`` (000), ``pipectl.compat.executor``
(001), ``pipectl.compat.odibi`` (002), ``pipectl.compat.ia_modules`` (003) and
``pipectl.compat.builder`` (004). YAML and JSON a document says its system loads are run
through the loader. A Python block kept in no test says why: it is not Python, a data shape
(``{...}`` standing for any value), the seed system's own internals, or the old code the
document says was wrong; where a part of it runs, the row names that part (``its part
module.CONSTANT``) and its test. The table is read by the tests of this module: each fenced
block of the documents must have its row (doc, line of the opening fence, language, start of
its first line), each ``code in`` constant must hold the block exactly, each part named must be
in its block, and each test named must be in the document's test module.

| doc | line | lang | first line | code in | run by, or why it is not run |
|---|---|---|---|---|---|
| 000 | 12 | python | def __init__( | test_compat_pipeline_core.CONSTRUCTOR | parsed, not run (a signature without a body): test_the_constructor_takes_the_documents_parameters_in_its_order |
| 000 | 62 | python | # Create pipeline instance | test_compat_pipeline_core.EXAMPLE | test_the_documents_example_runs |
| 001 | 18 | python | from library.components.orchestration | test_compat_executor.BASIC | test_basic_pipeline_runs_in_dependency_order_and_prints_its_results |
| 001 | 48 | python | @executor.step("fetch_users") | test_compat_executor.PARALLEL | test_parallel_fetches_run_at_once_and_merge_runs_after_both |
| 001 | 65 | python | @executor.step( | test_compat_executor.RETRY | test_retry_configuration_is_pipectls_retries_delay_and_timeout, test_retry_configuration_waits_its_two_seconds_and_counts_the_retry |
| 001 | 78 | python | @executor.step( | test_compat_executor.ERROR_HANDLING | test_error_handling_optional_step_runs_after_its_dependency, test_error_handling_optional_step_is_skipped_when_its_dependency_fails |
| 001 | 90 | python | async def my_step(previous_data): | test_compat_executor.PROGRAMMATIC | test_programmatic_step_gets_its_single_upstream_whatever_its_parameter_is_called |
| 001 | 104 | python | print(executor.visualize()) | test_compat_executor.VISUALIZE | test_visualize_draws_the_documents_levels |
| 001 | 120 | python | from library.components.orchestration | test_compat_executor.CONFIGURATION | test_configuration_is_the_pipelines_name_max_concurrent_and_fail_fast |
| 001 | 137 | python | @dataclass | test_compat_executor.STEP_RESULT | read, not run (the seed's own class): test_step_result_has_the_documents_fields_and_types |
| 002 | 71 | - | Pipeline brings together: | - | not code: what a pipeline brings together, outlined |
| 002 | 94 | python | pipeline = Pipeline(pipeline_config | test_compat_odibi.PIPELINE_BLOCK | test_the_pipeline_block_runs_one_pipeline_of_the_project |
| 002 | 100 | python | manager = PipelineManager.from_yaml | test_compat_odibi.MANAGER_BLOCK | test_the_manager_block_runs_bronze_to_silver_to_gold |
| 002 | 108 | - | Layer 0: [raw_customers, raw_orders] | - | not code: the layers of an example pipeline; they are test_the_documents_layers's |
| 003 | 9 | - | ┌── | - | not code: ServiceRegistry and Pipeline, drawn |
| 003 | 52 | python | { | - | not run: a data shape ({...} for any mapping): the Pipeline's result, {"input", "output", "steps"}; it is test_the_documents_step_runs_in_a_pipeline_with_services's |
| 003 | 80 | python | class ExecutionTracker: | test_compat_ia_modules.TRACKER_CONSTRUCTOR | test_the_trackers_constructor_is_the_documents |
| 003 | 99 | python | { | - | not run: a data shape ({...} for any mapping, JSON's null): a step record, in full at line 238 (test_a_step_record_has_the_designs_shape) |
| 003 | 127 | - | 1. Application creates ServiceRegistry | - | not code: the execution flow, outlined; its step 2 (the job's execution_id) is test_the_service_records_a_run_and_get_execution_reads_it's |
| 003 | 163 | python | # 1. Setup services (dependency injection) | test_compat_ia_modules.PIPELINE_SERVICE | test_the_service_records_a_run_and_get_execution_reads_it (self: the service) |
| 003 | 182 | python | # Pipeline OPTIONALLY uses tracker via services | - | not run: the seed's own Pipeline internals (core.py; its calls' arguments elided, ...); pipectl.compat.ia_modules.Pipeline.run does it: test_production_with_tracking_and_a_failed_step (a tracker), test_testing_without_a_tracker_the_pipeline_still_works (none) |
| 003 | 225 | python | { | test_compat_ia_modules.IN_MEMORY_FORMAT | test_the_documents_step_runs_in_a_pipeline_with_services |
| 003 | 238 | python | { | test_compat_ia_modules.DATABASE_FORMAT | test_a_step_record_has_the_designs_shape (evaluated with null as None) |
| 003 | 270 | python | def load_step_class(module_path: str, class_name: str): | - | not run: the seed's own loader (runner.py), whose create_step_from_json passes config, undefined there; pipectl.compat.ia_modules.create_step_from_json passes the step's: test_the_documents_step_json_loads_the_documents_step_file, test_create_step_from_json_and_the_graph_runner |
| 003 | 290 | json | { | test_compat_ia_modules.STEP_JSON | test_the_documents_step_json_loads_the_documents_step_file, test_a_step_record_has_the_designs_shape |
| 003 | 301 | python | # tests/pipelines/simple_pipeline/steps/step1.py | test_compat_ia_modules.STEP1_PY | test_the_documents_step_json_loads_the_documents_step_file, test_the_documents_step_runs_in_a_pipeline_with_services |
| 003 | 318 | python | def _build_execution_path(self) -> List[str]: | - | not run: the seed's own Pipeline internals (core.py); pipectl orders the steps by the flow's paths: test_the_documents_flow_gives_its_execution_order |
| 003 | 343 | json | { | test_compat_ia_modules.FLOW_JSON | test_the_documents_flow_gives_its_execution_order |
| 003 | 373 | python | # Production: With tracking | test_compat_ia_modules.TESTING_WITHOUT_DATABASE | test_production_with_tracking_and_a_failed_step (its first half), test_testing_without_a_tracker_the_pipeline_still_works (its second; the halves are alternatives) |
| 003 | 388 | python | # PostgreSQL (production) | - | not run: not Python (ConnectionConfig(..., port=5432, ...): a positional ... after keyword arguments); its part test_compat_ia_modules.SWAPPING_DATABASES_SQLITE, the SQLite half and the last line, is run by test_swapping_databases_and_recording_by_hand |
| 003 | 415 | python | # OLD: pipeline_service.py | - | not run: the old code, which the document says was wrong (it returned the in-memory format); the NEW one, line 425, is test_the_service_records_a_run_and_get_execution_reads_it's |
| 003 | 425 | python | # NEW: pipeline_service.py | test_compat_ia_modules.NEW_GET_EXECUTION | test_the_service_records_a_run_and_get_execution_reads_it (a method of the service; it ends at its comment, so the records it loads are read back from the tracker) |
| 003 | 450 | - | Application | - | not code: the dependency flow, outlined |
| 004 | 21 | python | from src.core.pipeline import Pipeline | test_compat_builder.QUICK_START | test_quick_start, test_quick_start_rolls_back_when_a_later_step_fails |
| 004 | 53 | bash | # Run full pipeline with rollback | - | not run: the seed's own CLI script (process_and_analyze.py) |
| 004 | 69 | bash | # Execute pipeline from YAML | - | not run: the seed's own CLI script |
| 004 | 81 | - | src/core/pipeline.py | - | not code: the seed module's contents (Pipeline, PipelineStep, PipelineResult, StepStatus are in pipectl.compat.builder) |
| 004 | 92 | - | 1. Define Pipeline | - | not code: the lifecycle, outlined |
| 004 | 118 | python | pipeline.add_step( | test_compat_builder.RETRY | test_retry_block_waits_two_seconds |
| 004 | 137 | python | def rollback_staging(stage_dir): | test_compat_builder.ROLLBACK | test_rollback_block |
| 004 | 156 | - | Step 1: Stage data | - | not code: a scenario; its rollback order is test_rollback_undoes_completed_steps_in_reverse_order |
| 004 | 169 | bash | # First run (fails at step 3) | - | not run: a session of the seed's CLI; what it shows is test_resume_from_the_documents_checkpoint |
| 004 | 187 | json | { | test_compat_builder.CHECKPOINT_JSON | test_checkpoint_format_is_the_documents, test_resume_from_the_documents_checkpoint |
| 004 | 216 | python | pipeline.add_step( | test_compat_builder.SKIP_ON_ERROR | test_skip_on_error_block |
| 004 | 235 | yaml | name: my-custom-pipeline | test_compat_builder.MY_PIPELINE_YML | test_my_pipeline_yml |
| 004 | 268 | bash | python process_and_analyze.py run-pipeline-yaml | - | not run: the seed's own CLI script |
| 004 | 284 | bash | python process_and_analyze.py full-pipeline-v2 | - | not run: the seed's own CLI script |
| 004 | 306 | bash | python process_and_analyze.py quick-staging | - | not run: the seed's own CLI script |
| 004 | 321 | bash | python process_and_analyze.py metrics-only | - | not run: the seed's own CLI script |
| 004 | 338 | python | # src/cli/commands/my_pipeline.py | test_compat_builder.METHOD_1 | test_method_1 |
| 004 | 393 | yaml | name: analyze-chip | test_compat_builder.ANALYZE_CHIP_YML | test_analyze_chip_yml_with_chip_number |
| 004 | 419 | bash | CHIP_NUMBER=67 python process_and_analyze.py | - | not run: the seed's own CLI script; its ${CHIP_NUMBER} is test_analyze_chip_yml_with_chip_number |
| 004 | 429 | python | def idempotent_staging(output_dir: Path | test_compat_builder.IDEMPOTENT | test_best_practices |
| 004 | 443 | python | pipeline.add_step( | test_compat_builder.MEANINGFUL_ROLLBACK | test_best_practices |
| 004 | 456 | python | pipeline.add_step("process-everything" | test_compat_builder.BAD_MONOLITHIC | test_bad_monolithic_step_runs_but_localizes_nothing |
| 004 | 461 | python | pipeline.add_step("validate-input" | test_compat_builder.GRANULAR | test_best_practices, test_bad_monolithic_step_runs_but_localizes_nothing |
| 004 | 490 | python | pipeline = Pipeline( | test_compat_builder.PURPOSE | test_best_practices |
| 004 | 507 | python | # Manual error handling | test_compat_builder.OLD_APPROACH | test_old_approach_handles_errors_by_hand |
| 004 | 524 | python | # Declarative with automatic error handling | test_compat_builder.NEW_APPROACH | test_new_approach |
| 004 | 555 | python | pipeline.add_parallel_group( | test_compat_builder.PLANNED_PARALLEL | test_planned_parallel_group |
| 004 | 560 | python | pipeline.add_step("optional" | test_compat_builder.PLANNED_CONDITION | test_planned_enhancements |
| 004 | 565 | python | pipeline.add_step("step3" | test_compat_builder.PLANNED_DEPENDS_ON | test_planned_enhancements |
| 004 | 570 | python | pipeline.on_step_complete( | test_compat_builder.PLANNED_CALLBACKS | test_planned_enhancements |
| 004 | 575 | python | main_pipeline.add_subpipeline( | test_compat_builder.PLANNED_SUBPIPELINE | test_planned_subpipeline |
| 004 | 583 | bash | # All pipeline tests | - | not run: the seed's own test suite (tests/test_pipeline.py) |
| 004 | 601 | python | pipeline.add_step("my-step" | test_compat_builder.TROUBLESHOOT_CHECKPOINT | test_troubleshooting |
| 004 | 610 | python | result = pipeline.execute(enable_rollback=True) | test_compat_builder.TROUBLESHOOT_ROLLBACK | test_troubleshooting |
| 004 | 619 | bash | ls data/.pipeline_checkpoints/ | - | not run: shell; the folder is test_checkpoint_file's |
| 004 | 628 | python | command_registry = { | test_compat_builder.TROUBLESHOOT_REGISTRY | test_troubleshooting |
| 004 | 640 | bash | python process_and_analyze.py full-pipeline | - | not run: the seed's own CLI script |
| 004 | 645 | bash | python process_and_analyze.py full-pipeline-v2 | - | not run: the seed's own CLI script |
| 004 | 659 | python | pipeline = Pipeline("dev-pipeline" | test_compat_builder.EXAMPLE_1 | test_example_1 |
| 004 | 684 | python | pipeline = Pipeline( | test_compat_builder.EXAMPLE_2 | test_example_2_first_run, test_example_2_resumes_after_a_failure (its checkpoint_dir, /var/lib/optothermal/checkpoints, is pointed into the test's folder) |
| 004 | 701 | python | pipeline = create_full_pipeline(...) | test_compat_builder.EXAMPLE_3 | test_example_3 |

Documents: 000 is ``000_9aaa12ca1e361658.txt`` (Pipeline Core), 001 ``001_44b3c8240831c076.txt``
(PipelineExecutor), 002 ``002_d247807ce2adc86f.txt`` (Odibi), 003 ``003_8187db5abdde5db2.txt``
(ia_modules), 004 ``004_c9b82526b0095311.txt`` (Pipeline Builder). Line numbers count from 1;
a block in a list item (004's planned enhancements) is read without its indentation.
"""

from __future__ import annotations

import ast
import functools
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
SEEDS = TESTS.parents[1] / "shared" / "seeds"
DOCS = {
    "000": "000_9aaa12ca1e361658.txt",
    "001": "001_44b3c8240831c076.txt",
    "002": "002_d247807ce2adc86f.txt",
    "003": "003_8187db5abdde5db2.txt",
    "004": "004_c9b82526b0095311.txt",
}
TEST_MODULES = {  # the tests of each document's adapter
    "000": "test_compat_pipeline_core",
    "001": "test_compat_executor",
    "002": "test_compat_odibi",
    "003": "test_compat_ia_modules",
    "004": "test_compat_builder",
}
NOT_RUN = {  # why a Python block is kept in no test, and what the block must then be
    "not run: not Python": lambda text: not compiles(text),
    "not run: a data shape": lambda text: "{...}" in text,
    "not run: the seed's own": lambda text: compiles(text),
    "not run: the old code": lambda text: "OLD" in text.splitlines()[0],
}
TEST_NAME = re.compile(r"\btest_\w+\b(?!\.)")  # not a module's name (test_compat_x.CONSTANT)
PART = re.compile(r"\bits part (?P<code_in>\w+\.\w+)")
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[ \t]*$")


@dataclass(frozen=True)
class Block:
    doc: str
    line: int  # the opening fence's
    lang: str  # "-": none
    text: str


@dataclass(frozen=True)
class Row:
    doc: str
    line: int
    lang: str
    first_line: str
    code_in: str  # "module.CONSTANT" or "-"
    covered_by: str


def fenced_blocks(doc: str, text: str) -> list[Block]:
    """The fenced blocks of ``text``, dedented (a fence may be indented, in a list item)."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        body: list[str] = []
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            body.append(lines[j])
            j += 1
        if j == len(lines):
            raise ValueError(f"{doc}: the block at line {i + 1} is not closed")
        blocks.append(Block(doc, i + 1, opening["lang"] or "-", textwrap.dedent("\n".join(body))))
        i = j + 1
    return blocks


def table() -> list[Row]:
    rows = []
    for line in (__doc__ or "").splitlines():
        if not re.match(r"\| 00\d \|", line):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        doc, number, lang, first_line, code_in, covered_by = cells
        rows.append(Row(doc, int(number), lang, first_line, code_in, covered_by))
    return rows


def seed_blocks() -> list[Block]:
    if not SEEDS.is_dir():
        pytest.skip(f"the seed documents are not here: {SEEDS}")
    blocks = []
    for doc, name in DOCS.items():
        blocks.extend(fenced_blocks(doc, (SEEDS / name).read_text(encoding="utf-8")))
    return blocks


def compiles(text: str) -> bool:
    try:
        compile(text, "<block>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    except SyntaxError:
        return False
    return True


@functools.cache
def top_level(module: str) -> dict[str, ast.expr | None]:
    """The names a test module defines at its top level (functions, classes, assignments),
    with the value assigned (None for a function or a class): read from its source, the
    module not imported (no optional dependency, such as pandas for test_compat_odibi)."""
    tree = ast.parse((TESTS / f"{module}.py").read_text(encoding="utf-8"))
    names: dict[str, ast.expr | None] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names[node.name] = None
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        names[name.id] = node.value if isinstance(target, ast.Name) else None
    return names


def constant(code_in: str) -> str:
    """The string constant ``module.NAME``, as its test module writes it."""
    module, name = code_in.split(".")
    value = ast.literal_eval(top_level(module)[name] or "None")
    assert isinstance(value, str), code_in
    return value


def test_the_table_is_read() -> None:
    rows = table()
    if not rows:
        pytest.skip("no module docstring (python -OO)")
    assert len(rows) == len({(r.doc, r.line) for r in rows}) == 74
    for row in rows:
        assert row.covered_by, row
        if row.code_in == "-":
            assert row.covered_by.startswith(("not run: ", "not code: ")), row


def test_every_block_of_the_documents_has_its_row() -> None:
    rows = {(r.doc, r.line): r for r in table()}
    if not rows:
        pytest.skip("no module docstring (python -OO)")
    blocks = seed_blocks()
    missing = [
        f"{b.doc} line {b.line} ({b.lang}): {b.text.splitlines()[0] if b.text else ''}"
        for b in blocks
        if (b.doc, b.line) not in rows
    ]
    assert not missing, "blocks of the seed documents the table does not list:\n" + "\n".join(
        missing
    )
    assert sorted(rows) == sorted((b.doc, b.line) for b in blocks), "rows of no block"
    for block in blocks:
        row = rows[block.doc, block.line]
        assert row.lang == block.lang, row
        first = block.text.splitlines()[0] if block.text else ""
        assert first.startswith(row.first_line), (row, first)


def test_python_blocks_are_run_unless_the_table_says_why() -> None:
    """A Python block (or YAML/JSON the system loads) is kept in a test module of its document;
    a Python block that is not says why (NOT_RUN), and is what that says: not Python, a data
    shape with ``{...}``, the seed's own code (Python, then), or the document's OLD code."""
    rows = {(r.doc, r.line): r for r in table()}
    if not rows:
        pytest.skip("no module docstring (python -OO)")
    for block in seed_blocks():
        row = rows[block.doc, block.line]
        if row.code_in != "-":
            assert row.code_in.split(".")[0] == TEST_MODULES[row.doc], row
        elif block.lang == "python":
            why = [w for w in NOT_RUN if row.covered_by.startswith(w)]
            assert why, f"{row}: a python block with no test, and none of the reasons"
            assert NOT_RUN[why[0]](block.text), f"{row}: the block is not {why[0]!r}"
        else:
            assert block.lang not in ("yaml", "json"), f"{row}: a {block.lang} block with no test"


def test_the_tests_hold_the_documents_code_as_written() -> None:
    """Each ``code in`` constant is its block exactly (the tests change the import lines as
    they run it, not the text kept here)."""
    rows = {(r.doc, r.line): r for r in table() if r.code_in != "-"}
    if not rows:
        pytest.skip("no module docstring (python -OO)")
    for block in seed_blocks():
        row = rows.get((block.doc, block.line))
        if row is not None:
            assert constant(row.code_in).strip("\n") == block.text.strip("\n"), row


def test_the_tests_named_exist() -> None:
    rows = table()
    if not rows:
        pytest.skip("no module docstring (python -OO)")
    for row in rows:
        defined = top_level(TEST_MODULES[row.doc])
        named = TEST_NAME.findall(row.covered_by)
        if row.code_in != "-":
            assert named, row
        for name in named:
            assert name in defined and defined[name] is None, f"{row}: no test {name}"


def test_the_parts_named_are_in_their_blocks() -> None:
    """A block not run as a whole may have a part that runs: ``its part module.CONSTANT``, the
    block's own lines."""
    rows = {(r.doc, r.line): r for r in table()}
    if not rows:
        pytest.skip("no module docstring (python -OO)")
    parts = 0
    for block in seed_blocks():
        for part in PART.findall(rows[block.doc, block.line].covered_by):
            assert constant(part).strip("\n") in block.text, (block.doc, block.line, part)
            parts += 1
    assert parts >= 1


def test_the_blocks_are_found_as_fenced() -> None:
    """The block reader, on a page of its own: indented fences, languages, no language."""
    page = textwrap.dedent(
        """\
        # Title
        ```python
        x = 1
        ```
        1. A list item
           ```python
           y = 2
           ```
        ```
        output
        ```
        """
    )
    assert fenced_blocks("t", page) == [
        Block("t", 2, "python", "x = 1"),
        Block("t", 6, "python", "y = 2"),
        Block("t", 9, "-", "output"),
    ]
    with pytest.raises(ValueError, match="line 1 is not closed"):
        fenced_blocks("t", "```python\nx = 1\n")
