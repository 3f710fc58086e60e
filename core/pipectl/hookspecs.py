"""The pipectl plugin contract: every hook a plugin can implement.

This module is the single source of the contract; ``docs/hooks.md`` is generated from it
(``python -m pipectl.docgen > docs/hooks.md``) and a test fails when the two disagree
(``python -m pipectl.docgen --check``).

Naming grammar
--------------
Every hook starts with ``pipectl_``.

* Registration hooks are ``pipectl_register_<plural noun>(register)``. They are called once per
  plugin when the plugin is loaded. The plugin calls ``register(name, factory)`` for each component
  it provides; ``factory`` is called only when a pipeline uses the component, so heavy imports
  belong inside it. Registration hooks cannot be wrappers.
* Lifecycle hooks are ``pipectl_<subject>_<event>``: ``pipectl_run_start``,
  ``pipectl_run_planned``, ``pipectl_run_finish``, ``pipectl_step_start``,
  ``pipectl_step_retry``, ``pipectl_step_finish``, ``pipectl_output_finish``,
  ``pipectl_rollback_start``, ``pipectl_rollback_finish``. They fire once per run, step,
  attempt or output, never per record.
* ``pipectl_wrap_step`` returns an async middleware that the engine composes around every attempt
  of a step, where the step executes.
* Start-up hooks: ``pipectl_addoption(parser)`` adds options to ``pipectl run``;
  ``pipectl_configure(config)`` is called once before the first run of a plugin manager (where
  a plugin sets itself up) and ``pipectl_unconfigure(config)`` once when it is done.

Listeners are called one by one by the engine, never concurrently (possibly from a pipectl
worker thread); no hook can be implemented as a pluggy wrapper (``wrapper=True``), and a plugin
that tries is reported as failed.

Exceptions
----------
An exception raised by a registration hook marks that plugin as failed: it is reported by
``pipectl plugins`` and left out, and every other plugin keeps working. An exception raised by a
lifecycle listener is logged as ``plugin_hook_failed`` with the plugin and hook name and does not
change the run nor stop the other listeners of that event (listeners are best-effort: each
implementation is wrapped when it is registered, see :mod:`pipectl.hooks`). An exception raised
by ``pipectl_wrap_step`` or by a middleware is the step's exception: it fails that attempt.

Plugins and run listeners
-------------------------
A plugin (built in, installed, or registered on a plugin manager) sees the events of every run
made with that manager. A *run listener* is an object with the same ``@hookimpl`` methods
given to one run only, ``Pipeline.run(listeners=[...])``: it sees the events of that run and
of its sub-pipeline runs (``run.parent_run_id`` tells them apart), never those of another run
in the same process. The tracker's listener, ``Pipeline.on_step_complete`` callbacks and the
live display of ``pipectl run`` are run listeners.

Monitoring and tracing
----------------------
Every lifecycle call goes through pluggy's hook execution, so ``pm.add_hookcall_monitoring(
before, after)`` and ``pm.enable_tracing()`` (with ``pm.trace.root.setwriter(print)``) see
each event, with the plugins and run listeners it reaches. An event that nothing listens to is
not called at all, unless a monitor is installed: then it is called with no implementation,
so that the monitor sees the whole sequence. ``pipectl_wrap_step`` is called only when some
plugin implements it.

Deprecating a hook
------------------
A hook (or one of its arguments) is retired over two releases. In the first, its hookspec gets
pluggy's ``warn_on_impl`` (``warn_on_impl_args`` for an argument) with a ``DeprecationWarning``
naming the replacement, and its docstring says "Deprecated since 0.x"; the hook is still called,
and a plugin implementing it works but is warned when it is registered, the warning pointing
at its implementation (pytest shows it in the plugin's own test run). In a later minor release
the hookspec goes, and a plugin still implementing the hook is reported as failed ("not a
pipectl hook", with the nearest name). Adding an argument needs no deprecation: an
implementation that does not name it does not get it.

.. code-block:: python

    @hookspec(warn_on_impl=DeprecationWarning(
        "pipectl_step_end is deprecated since 0.3: implement pipectl_step_finish"))
    def pipectl_step_end(run, step):
        ...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    import click

    from pipectl.config import Config, OptionParser
    from pipectl.context import StepContext
    from pipectl.data import OutputReport
    from pipectl.model import CacheEvent, PipelineRun, RunPlan, StepResult, StepSpec

hookspec = pluggy.HookspecMarker("pipectl")
hookimpl = pluggy.HookimplMarker("pipectl")

Register = Callable[[str, Callable[..., Any]], None]

# ---------------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------------


@hookspec
def pipectl_register_extractors(register: Register) -> None:
    """Called once when the plugin is loaded, to register the extractors it provides.

    :param register: ``register(name, factory)``. ``name`` is what a pipeline uses to pick the
        extractor; ``factory(**options)`` builds it and is called only when a pipeline uses it,
        so import heavy dependencies inside it.
    :return: nothing; the return value is ignored.

    An extractor has ``batches(ctx)``, a sync or async generator of batches (lists of record
    dicts), and ``describe()``. A record it cannot parse goes to
    ``ctx.bad_record(raw, reason, position)`` (position like ``"orders.csv:17"``), which raises
    under ``on_bad_record: fail`` and sets the record aside otherwise. An extractor with
    incremental state exposes ``state`` after a run and takes ``set_state(state)`` before the
    next (see :mod:`pipectl.data`).

    A name another plugin already registered is an error that names both plugins; the later
    plugin is reported as failed and left out. Cannot be a wrapper. Since 0.1.

    **Example:**

    .. code-block:: python

        @hookimpl
        def pipectl_register_extractors(register):
            def make_api_extractor(**options):
                from my_plugin.api import ApiExtractor  # heavy import, only when used
                return ApiExtractor(**options)

            register("my-api", make_api_extractor)
    """


@hookspec
def pipectl_register_outputs(register: Register) -> None:
    """Called once when the plugin is loaded, to register the outputs it provides.

    :param register: ``register(name, factory)``; ``factory(**options)`` builds the output and is
        called only when a pipeline uses it.
    :return: nothing; the return value is ignored.

    An output declares ``guarantee``: ``"transactional"`` (nothing visible until ``commit``) or
    ``"idempotent"`` (writes are upserts by key), so that a retried step never writes a record
    twice. Its sync methods ``open(ctx)``, ``write(batch)``, ``commit()`` or ``abort()``, and
    ``close()`` (always, even after a failure) are called in that order for each attempt, on a
    worker thread, never two at once (see :mod:`pipectl.data`).

    Exactly once across crashes (see :mod:`pipectl.loads`): ``ctx.load`` names the load
    (pipeline, the run it belongs to, step, output). ``commit()`` makes the records and
    ``ctx.load.marker()`` (with the record count and the extractor's cursor, set just before)
    visible together, in one transaction or one atomic rename, and a second commit of the same
    load adds nothing. ``loaded(load)`` returns the marker of that load if the destination
    holds it (a resume then skips the output: "already committed by run X"), and
    ``last_load(load)`` the latest marker of the pipeline's step and output, whose ``state``
    the next run's extractor starts from. An output without ``loaded`` is loaded again when a
    resume re-runs its step. :func:`pipectl.testing.check_output_contract` checks an output
    against all of this.

    A duplicate name is an error naming both plugins; the later plugin is left out.
    Cannot be a wrapper. Since 0.1.

    **Example:**

    .. code-block:: python

        @hookimpl
        def pipectl_register_outputs(register):
            register("parquet", lambda **options: ParquetOutput(**options))
    """


@hookspec
def pipectl_register_trackers(register: Register) -> None:
    """Called once when the plugin is loaded, to register run trackers.

    :param register: ``register(name, factory)``. ``name`` is the URL scheme the tracker serves
        (``sqlite``, ``postgresql``); ``factory(url)`` builds the tracker when a run selects it
        by URL (``--tracker URL``, ``tracker:`` in a pipeline file, ``run(tracker=URL)``).
    :return: nothing; the return value is ignored.

    A tracker is anything with the methods of the protocol :class:`pipectl.tracking.Tracker`:
    ``migrate()`` (create or upgrade its store), ``record(event)`` (one typed event of a run:
    ``RunStarted``, ``StepStarted``, ``StepRetrying``, ``StepFinished``, ``StepRolledBack``,
    ``ExtractorStateSaved``, ``RunFinished``; it never blocks the run), ``flush()``,
    ``close()``, the reads ``list_runs``, ``get_run``, ``resolve``, ``pipeline_of``,
    ``extractor_states``, and ``results`` (a result store for resume, or None). A
    :class:`pipectl.tracking.ResumableTracker` also has ``latest_finished``,
    ``step_states``, ``load_run`` and the resume claims ``claim_resume`` and
    ``release_resume`` (``pipectl run --resume``); a :class:`pipectl.tracking.PrunableTracker`
    has ``prune`` (``pipectl runs prune``). A tracker on a SQL database is a
    :class:`pipectl.tracking.SQLTracker` given a :class:`pipectl.tracking.SQLDialect` (how to
    connect, the placeholder, how a write starts, which errors are worth retrying): the
    tables and the SQL are shared. ``pipectl.testing.check_tracker_contract`` checks a
    tracker. The built-in ``sqlite`` plugin registers ``sqlite``.

    A duplicate scheme is an error naming both plugins; the later plugin is left out.
    Cannot be a wrapper. Since 0.1.

    **Example:**

    .. code-block:: python

        @hookimpl
        def pipectl_register_trackers(register):
            register("postgresql", lambda url: PostgresTracker(url))
    """


@hookspec
def pipectl_register_executors(register: Register) -> None:
    """Called once when the plugin is loaded, to register executors (where step attempts run).

    :param register: ``register(name, factory)``; ``factory(**options)`` returns an object with
        ``async start(run, config, max_concurrent)``, ``async execute(invocation)`` and
        ``async shutdown()`` (see :class:`pipectl.executors.Executor`).
    :return: nothing; the return value is ignored.

    A duplicate name is an error naming both plugins; the later plugin is left out. The built-in
    ``local`` executor is registered through this hook too. Cannot be a wrapper. Since 0.1.

    Options reach the factory from ``Pipeline.run(executor_options=...)`` and from
    ``pipectl run --executor-option KEY=VALUE``. A plugin may add ``pipectl run`` options of
    its own for them with :func:`pipectl_addoption` (``executor=NAME``); giving one implies
    ``--executor NAME``. A factory that raises ``TypeError`` or ``ValueError``, or an executor
    whose ``start`` raises, is reported as a :class:`~pipectl.errors.ExecutorError` before the
    run begins (no hook is called, nothing is recorded).

    An executor that runs steps elsewhere (other processes, other machines) finds in each
    :class:`~pipectl.executors.Invocation` which outputs the driver needs (``driver_reads``:
    the engine reads it; ``final``: no step consumes it, the user reads it in ``run.steps``) and
    the step's ``resources``; ``config.result_store`` is the tracker's store, where it may write
    the outputs it keeps (marking them ``pipectl_stored = True``) so a resume finds them. A step
    function with ``runs_in_driver = True`` (a sub-pipeline step) must run in this process.

    **Example:**

    .. code-block:: python

        @hookimpl
        def pipectl_register_executors(register):
            def make_dask_executor(**options):
                from pipectl_dask.executor import DaskExecutor
                return DaskExecutor(**options)

            register("dask", make_dask_executor)
    """


@hookspec
def pipectl_register_step_types(register: Register) -> None:
    """Called once when the plugin is loaded, to register step types.

    :param register: ``register(name, factory)``; ``factory(step)`` receives the
        :class:`~pipectl.model.StepSpec` and returns the callable (sync or async) that runs it.
        The callable's parameters are bound like any step function's (upstream outputs by name,
        ``params``, ``ctx``). A factory that also takes a ``components`` argument gets the
        plugin manager's registries, to check the components the step names before anything
        runs. The factory is called when the pipeline is validated; an exception it raises is a
        validation problem of that step.
    :return: nothing; the return value is ignored.

    A duplicate name is an error naming both plugins; the later plugin is left out. The built-in
    ``python`` step type is registered through this hook too. Cannot be a wrapper. Since 0.1.

    **Example:**

    .. code-block:: python

        @hookimpl
        def pipectl_register_step_types(register):
            def shell_step(step):
                import subprocess

                def run(ctx):
                    return subprocess.run(step.options["cmd"], shell=True, check=True).returncode

                return run

            register("shell", shell_step)
    """


@hookspec
def pipectl_register_pipeline_formats(register: Register) -> None:
    """Called once when the plugin is loaded, to register pipeline-file formats: other
    systems' pipeline files that ``pipectl run``, ``validate``, ``graph`` and
    :meth:`pipectl.Pipeline.from_yaml` read as they are.

    :param register: ``register(name, reader)``. ``reader(path, data)`` gets the file's
        :class:`~pathlib.Path` and its content, read as YAML (JSON is YAML; every check of a
        pipeline file done already: size, encoding, duplicate keys, nesting) as mappings with
        the line of each key (``data.lines[key]``). It returns ``None`` when the file is not in
        its format, else the file as a pipectl pipeline file would be (a mapping with ``name``
        and ``steps``, or ``pipelines``), which pipectl then checks like any file. It raises
        :class:`~pipectl.files.PipelineFileError` (file, line, field, message) for a file in
        its format that it cannot convert.
    :return: nothing; the return value is ignored.

    Readers are asked in the order the plugins were loaded (built-ins last), the first answer
    that is not ``None`` wins, and a file no reader claims is a pipectl file. A reader is
    called for every file read, so it decides cheaply (a key or two) and imports what it
    needs only for a file it claims. Lines of the converted data that the reader does not
    give are taken from the original file's: the same key or index, or a list as long at the
    same level (``tasks`` made ``steps``), else the enclosing item's line. The built-in
    ``ia-modules`` format runs an ia_modules JSON pipeline (steps with ``module`` and
    ``step_class``, a ``flow``). A duplicate name is an error naming both plugins; the later
    plugin is left out. Cannot be a wrapper. Since 0.2.

    **Example:**

    .. code-block:: python

        @hookimpl
        def pipectl_register_pipeline_formats(register):
            def read_tasks(path, data):
                if "tasks" not in data or "steps" in data:
                    return None  # not this format
                return {
                    "name": data.get("title", path.stem),
                    "steps": [{"name": t["id"], "run": t["call"], "depends_on": t.get("after", [])}
                              for t in data["tasks"]],
                }

            register("tasks", read_tasks)
    """


@hookspec
def pipectl_register_connection_types(register: Register) -> None:
    """Called once when the plugin is loaded, to register connection types: what a pipeline
    file's ``connections:`` declare and its components name with ``connection: NAME``.

    :param register: ``register(name, factory, options="module:Class")``. ``Class`` is a
        :class:`pipectl.connections.Connection` subclass: its constructor's keyword signature
        declares the connection's fields (checked like a component's options, with file:line),
        and its ``serves``, ``replaces``, ``joins`` and ``secret_fields`` say which components
        it serves, which of their options it gives or joins, and which fields are secret
        (masked wherever pipectl writes or shows them). ``factory(**fields)`` builds the
        connection from the checked fields when a file that declares one is loaded.
    :return: nothing; the return value is ignored.

    The built-in types ``sqlite``, ``postgres``, ``directory`` and ``http`` are registered
    through this hook too (plugin ``connections``). A name another plugin registered is an
    error naming both plugins; the later plugin is left out. Cannot be a wrapper. Since 0.2.

    **Example:**

    .. code-block:: python

        @hookimpl
        def pipectl_register_connection_types(register):
            def make_bucket(**fields):
                from my_plugin.connections import BucketConnection  # imported when used
                return BucketConnection(**fields)

            register("bucket", make_bucket, options="my_plugin.connections:BucketConnection")
    """


@hookspec
def pipectl_register_commands(cli: click.Group) -> None:
    """Called once when the command line is built, after every plugin is loaded, to add commands.

    :param cli: the root ``click.Group`` of ``pipectl``; add commands with ``@cli.command()`` or
        ``cli.add_command(...)``.
    :return: nothing; the return value is ignored.

    An exception marks the plugin as failed (shown by ``pipectl plugins``); the other plugins'
    commands are still added. Built-in commands are registered through this hook too. Keep the
    command module cheap to import: ``pipectl --help`` imports it. Cannot be a wrapper. Since 0.1.

    **Example:**

    .. code-block:: python

        @hookimpl
        def pipectl_register_commands(cli):
            @cli.command()
            def hello():
                \"\"\"Say hello.\"\"\"
                click.echo("hello")
    """


# ---------------------------------------------------------------------------------------------
# Start-up and shut-down
# ---------------------------------------------------------------------------------------------


@hookspec
def pipectl_addoption(parser: OptionParser) -> None:
    """Called when ``pipectl run`` is built (on its first use, not by ``pipectl --help``), to add
    options to it, in the spirit of ``pytest_addoption``.

    :param parser: an :class:`~pipectl.config.OptionParser`; call
        ``parser.add_option(flag, help=, type=, metavar=, default=, dest=)`` for an option of
        the plugin, read in :func:`pipectl_configure` as ``config.getoption(dest)``, or
        ``parser.add_option(flag, executor=NAME, key=KEY, ...)`` for an option of the
        executor ``NAME``: given, its value becomes that executor's option ``KEY`` and the
        run uses that executor (as ``--executor NAME`` would).
    :return: nothing; the return value is ignored.

    An exception (a flag already taken, a bad type) marks the plugin as failed, with none of
    its options; the other plugins' options are still added. Cannot be a wrapper. Since 0.1.

    **Example:**

    .. code-block:: python

        @hookimpl
        def pipectl_addoption(parser):
            parser.add_option("--dask-scheduler", executor="dask", key="address",
                              metavar="ADDRESS", help="Run on the Dask scheduler at ADDRESS.")
    """


@hookspec
def pipectl_configure(config: Config) -> None:
    """Called once per plugin manager, before its first run starts: where a plugin sets
    itself up (an exporter opens its connection, a cache its store).

    :param config: a :class:`~pipectl.config.Config`: ``config.getoption(dest)`` reads the
        options the plugin added (``pipectl run``; from the Python API there are none),
        ``config.invocation`` is ``"cli"`` or ``"python"``, ``config.project_root`` the
        project's folder (``pipectl run``), ``config.add_cleanup(func)`` registers what to
        call when unconfigured, ``config.pluginmanager`` the manager.
    :return: nothing; the return value is ignored.

    ``pipectl run`` calls it after parsing its options and loading the pipeline file, before
    the first run; the Python API when the first run of the manager starts. An exception marks
    that plugin as failed and unregisters it, so that it sees no run; the other plugins are
    still configured. Cannot be a wrapper. Since 0.1.

    **Example:**

    .. code-block:: python

        @hookimpl
        def pipectl_configure(config):
            exporter = Exporter(config.getoption("otel_endpoint") or "http://127.0.0.1:4318")
            config.add_cleanup(exporter.flush)
    """


@hookspec
def pipectl_unconfigure(config: Config) -> None:
    """Called once when a configured plugin manager is done: at the end of the ``pipectl``
    command, or when the process exits (Python API), before the cleanups registered with
    ``config.add_cleanup``.

    :param config: the :class:`~pipectl.config.Config` given to :func:`pipectl_configure`.
    :return: nothing; the return value is ignored.

    An exception is logged as ``plugin_hook_failed`` and every other plugin is still called.
    Cannot be a wrapper. Since 0.1.

    **Example:**

    .. code-block:: python

        @hookimpl
        def pipectl_unconfigure(config):
            Exporter.current().close()
    """


# ---------------------------------------------------------------------------------------------
# Run lifecycle
# ---------------------------------------------------------------------------------------------


@hookspec
def pipectl_run_start(run: PipelineRun) -> None:
    """Called once when a run starts, before any step starts.

    :param run: the :class:`~pipectl.model.PipelineRun` being executed (status ``running``,
        ``run_id``, ``pipeline_id``, ``parameters``, ``start_time`` set). Read it; do not change it.
    :return: nothing; the return value is ignored.

    An exception is logged as ``plugin_hook_failed`` and does not stop the run. Cannot be a
    wrapper. Since 0.1.

    **Example:**

    .. code-block:: python

        @hookimpl
        def pipectl_run_start(run):
            print(f"run {run.run_id} of {run.pipeline_id} started")
    """


@hookspec
def pipectl_run_planned(run: PipelineRun, plan: RunPlan) -> None:
    """Called once per run, after ``pipectl_run_start`` and before any step starts, with the DAG
    the run executes.

    :param run: the :class:`~pipectl.model.PipelineRun` (status ``running``).
    :param plan: the :class:`~pipectl.model.RunPlan`: ``steps`` (the
        :class:`~pipectl.model.StepSpec` of every step of the run, in topological order, after
        ``only`` and ``skip``), ``edges`` (``(upstream, downstream)`` name pairs), ``left_out``
        (the steps ``skip`` left out) and ``resumed`` (the steps whose outputs come from the
        run being resumed: they end ``success`` without running).
    :return: nothing; the return value is ignored.

    Every step of ``plan.steps`` then gets exactly one ``pipectl_step_finish``. An exception is
    logged as ``plugin_hook_failed`` and does not change the run. Cannot be a wrapper.
    Since 0.2.

    **Example:**

    .. code-block:: python

        @hookimpl
        def pipectl_run_planned(run, plan):
            print(f"run {run.run_id}: {len(plan.steps)} steps, {len(plan.edges)} edges")
            for upstream, downstream in plan.edges:
                print(f"  {upstream} -> {downstream}")
    """


@hookspec
def pipectl_run_finish(run: PipelineRun) -> None:
    """Called once when a run has ended, whatever its outcome, after every step finished.

    :param run: the :class:`~pipectl.model.PipelineRun`, with its final ``status``, ``end_time``,
        ``errors`` and the :class:`~pipectl.model.StepResult` of every step in ``run.steps``.
    :return: nothing; the return value is ignored.

    Also called for a run cancelled with Ctrl-C or SIGTERM (status ``cancelled``). An
    exception is logged as ``plugin_hook_failed`` and does not change the run. Cannot be a
    wrapper. Since 0.1.

    **Example:**

    .. code-block:: python

        @hookimpl
        def pipectl_run_finish(run):
            print(run.run_id, run.status.value, run.duration_ms)
    """


# ---------------------------------------------------------------------------------------------
# Step lifecycle
# ---------------------------------------------------------------------------------------------


@hookspec
def pipectl_step_start(run: PipelineRun, step: StepSpec, attempt: int) -> None:
    """Called when an attempt of a step starts, once per attempt.

    :param run: the run the step belongs to.
    :param step: the :class:`~pipectl.model.StepSpec` of the step.
    :param attempt: the attempt number, 1 for the first attempt.
    :return: nothing; the return value is ignored.

    Not called for steps that never run (skipped or cancelled before they started). A mapped
    step (``map:``) does not start itself: each of its items does, as a step named
    ``NAME[i]`` whose spec has ``map_of`` (the mapped step's name), ``map_index`` (``i``) and
    ``map_count`` (how many items) set; those are None for every other step. An exception
    is logged as ``plugin_hook_failed`` and does not affect the step. Cannot be a wrapper.
    Since 0.1.

    **Example:**

    .. code-block:: python

        @hookimpl
        def pipectl_step_start(run, step, attempt):
            print(f"{step.name}: attempt {attempt}")
    """


@hookspec
def pipectl_step_retry(
    run: PipelineRun, step: StepSpec, attempt: int, error: BaseException, delay: float
) -> None:
    """Called when an attempt failed and the step will be tried again, before the backoff wait.

    :param run: the run the step belongs to.
    :param step: the :class:`~pipectl.model.StepSpec` of the step.
    :param attempt: the number of the attempt that failed (1 for the first).
    :param error: the exception that failed the attempt (a :class:`~pipectl.errors.StepTimeout`
        when the attempt timed out).
    :param delay: the seconds the engine waits before the next attempt.
    :return: nothing; the return value is ignored.

    An item of a mapped step is retried alone: ``step`` is the item's spec (``NAME[i]``, with
    ``map_of``, ``map_index`` and ``map_count`` set; see ``pipectl_step_start``). An exception
    is logged as ``plugin_hook_failed`` and does not affect the retry. Cannot be a wrapper.
    Since 0.1.

    **Example:**

    .. code-block:: python

        @hookimpl
        def pipectl_step_retry(run, step, attempt, error, delay):
            print(f"{step.name} failed ({error!r}); retrying in {delay:.1f}s")
    """


@hookspec
def pipectl_step_finish(run: PipelineRun, step: StepSpec, result: StepResult) -> None:
    """Called exactly once per step of a run, when the step reaches its terminal status.

    :param run: the run the step belongs to.
    :param step: the :class:`~pipectl.model.StepSpec` of the step.
    :param result: the :class:`~pipectl.model.StepResult`: status (``success``, ``failed``,
        ``skipped``, ``cancelled``), output, error, timing, attempts, ``reason`` for a skip.
    :return: nothing; the return value is ignored.

    Called for skipped and cancelled steps too, so that a listener sees every step end. For a
    mapped step (``map:``) it is called once per item (``step`` the item's spec, ``NAME[i]``,
    with ``map_of``, ``map_index`` and ``map_count`` set; an item taken from the run being
    resumed has ``resumed_from`` set), then once for the mapped step itself after its last
    item: its output is the list of the items' outputs in item order and ``result.items``
    their results. An exception is logged as ``plugin_hook_failed`` and does not change the
    result. Cannot be a wrapper. Since 0.1.

    **Example:**

    .. code-block:: python

        @hookimpl
        def pipectl_step_finish(run, step, result):
            print(step.name, result.status.value, f"{result.duration_ms:.1f} ms")
    """


@hookspec
def pipectl_step_cache(run: PipelineRun, step: StepSpec, event: CacheEvent) -> None:
    """Called for a step with a cache policy (``cache:``): when its cache lookup hit or missed,
    and when its output was stored in the cache for later runs.

    :param run: the run the step belongs to.
    :param step: the :class:`~pipectl.model.StepSpec` of the step.
    :param event: a :class:`~pipectl.model.CacheEvent`: ``kind`` is ``"hit"`` (the step is
        not called: its output comes from the cache, stored by run ``cached_from`` at
        ``stored_at``), ``"miss"`` (it runs; ``reason``: ``"not cached yet"``,
        ``"expired"``, ``"refresh"``, that the run has no cache, or why its inputs could not
        be hashed or its output not stored) or ``"stored"``; ``key`` is the cache key.
    :return: nothing; the return value is ignored.

    A lookup comes before the step's first ``pipectl_step_start`` (a hit has none: its
    ``pipectl_step_finish`` follows, with ``result.cached_from`` set); a store comes after the
    successful attempt, before ``pipectl_step_finish``. An exception is logged as
    ``plugin_hook_failed`` and changes nothing. Cannot be a wrapper. Since 0.1.

    **Example:**

    .. code-block:: python

        @hookimpl
        def pipectl_step_cache(run, step, event):
            if event.kind == "hit":
                print(f"{step.name}: from the cache (run {event.cached_from})")
    """


@hookspec
def pipectl_output_finish(
    run: PipelineRun, step: StepSpec, attempt: int, report: OutputReport
) -> None:
    """Called once per output of a data step after each attempt of the step that reached its
    outputs' commits, with what became of the output, before the step's ``pipectl_step_finish``.

    :param run: the run the step belongs to.
    :param step: the :class:`~pipectl.model.StepSpec` of the data step.
    :param attempt: the attempt of the step that ended (1 for the first).
    :param report: the output's :class:`~pipectl.data.OutputReport`: ``name``, ``target``
        (where it writes, e.g. ``"jsonl out/orders.jsonl"``), ``written`` (records written),
        ``status`` (``committed``; ``failed``, with ``error``, when the output itself failed:
        open, write or commit; ``skipped``: committed before, by an earlier attempt or by the
        run being resumed, ``note`` says which) and ``note``.
    :return: nothing; the return value is ignored.

    A retried step reports its outputs again after each attempt: an output that committed in
    an earlier attempt comes back ``skipped``, so each commit is reported ``committed`` once.
    An attempt that ends before its commits (the extraction failed, so nothing was committed;
    the step was cancelled or timed out) reports no output: its error is the step's. Called in
    the driver from the step's result: an executor that keeps a successful step's output where
    it ran (pipectl-dask, for an output the driver does not fetch) reports only its failed
    attempts. An exception is logged as ``plugin_hook_failed`` and does not change the step.
    Cannot be a wrapper. Since 0.2.

    **Example:**

    .. code-block:: python

        @hookimpl
        def pipectl_output_finish(run, step, attempt, report):
            if report.status == "committed":
                print(f"{step.name}: {report.written} records into {report.target}")
            elif report.status == "failed":
                print(f"{step.name}: output {report.name} failed: {report.error}")
    """


@hookspec
def pipectl_wrap_step(step: StepSpec, context: StepContext) -> Any:
    """Called once per step per run, before the step's first attempt, to wrap its execution.

    :param step: the :class:`~pipectl.model.StepSpec` about to run.
    :param context: the :class:`~pipectl.context.StepContext` of the step (run id, params,
        services, logger).
    :return: ``None`` to leave the step alone, or an ``async def middleware(call_next, attempt)``.
        The engine composes the middlewares of all plugins around every attempt, the first
        plugin in hook-call order outermost. ``await call_next()`` runs the rest of the chain and
        the step, and returns the step's output; the middleware returns the output the step
        should have. Returning without calling ``call_next`` short-circuits the step (a cache);
        raising fails the attempt, which the step's retry policy may retry. The middleware runs
        where the step executes (a worker, for a remote executor); the step's timeout covers it.

    pluggy's wrappers are synchronous and cannot wrap an async step: this hook can. Each item of
    a mapped step is wrapped on its own (``step.map_of`` set, see ``pipectl_step_start``); the
    mapped step itself runs nothing and is not wrapped. An exception raised by the hook itself
    (not the middleware) fails the step. Cannot be a wrapper. Since 0.1.

    **Example:**

    .. code-block:: python

        @hookimpl
        def pipectl_wrap_step(step, context):
            async def timed(call_next, attempt):
                started = time.perf_counter()
                try:
                    return await call_next()
                finally:
                    print(step.name, attempt, time.perf_counter() - started)

            return timed
    """


# ---------------------------------------------------------------------------------------------
# Rollback
# ---------------------------------------------------------------------------------------------


@hookspec
def pipectl_rollback_start(run: PipelineRun, step: StepSpec, result: StepResult) -> None:
    """Called when the rollback of a completed step starts, once per step rolled back, after
    the run failed (``rollback=True``, ``pipectl run --rollback``).

    :param run: the run being rolled back (status ``failed``; every step has its result).
    :param step: the :class:`~pipectl.model.StepSpec` whose ``rollback`` runs.
    :param result: the step's :class:`~pipectl.model.StepResult` (status ``success``, its
        output), as its rollback function gets it.
    :return: nothing; the return value is ignored.

    Rollbacks run one at a time, in reverse order of completion, after every step finished and
    before ``pipectl_run_finish``. Steps without a rollback function get no call. An exception
    is logged as ``plugin_hook_failed`` and does not stop the rollback. Cannot be a wrapper.
    Since 0.2.

    **Example:**

    .. code-block:: python

        @hookimpl
        def pipectl_rollback_start(run, step, result):
            print(f"undoing {step.name} of run {run.run_id}")
    """


@hookspec
def pipectl_rollback_finish(
    run: PipelineRun, step: StepSpec, result: StepResult, error: BaseException | None
) -> None:
    """Called when the rollback of a step has ended, once per ``pipectl_rollback_start``.

    :param run: the run being rolled back.
    :param step: the :class:`~pipectl.model.StepSpec` whose rollback ran.
    :param result: the step's new :class:`~pipectl.model.StepResult`: status ``rolled_back``
        if the rollback succeeded (else still ``success``), and ``rollback``, the outcome
        (``status``: ``success`` or ``failed``, ``error``, ``started_at``, ``finished_at``).
    :param error: the exception the rollback function raised, or ``None``.
    :return: nothing; the return value is ignored.

    A failed rollback does not stop the others; the run ends ``rolled_back`` when every
    rollback succeeded, ``rollback_failed`` otherwise (``pipectl_run_finish`` has it). An
    exception is logged as ``plugin_hook_failed``. Cannot be a wrapper. Since 0.2.

    **Example:**

    .. code-block:: python

        @hookimpl
        def pipectl_rollback_finish(run, step, result, error):
            if error is not None:
                print(f"could not undo {step.name}: {result.rollback['error']}")
    """


REGISTRATION_HOOKS = {
    "pipectl_register_extractors": "extractors",
    "pipectl_register_outputs": "outputs",
    "pipectl_register_trackers": "trackers",
    "pipectl_register_executors": "executors",
    "pipectl_register_step_types": "step_types",
    "pipectl_register_pipeline_formats": "pipeline_formats",
    "pipectl_register_connection_types": "connection_types",
}
"""The registration hooks that build component registries, and the registry each one fills."""


STARTUP_HOOKS = ("pipectl_addoption", "pipectl_configure", "pipectl_unconfigure")
"""The start-up and shut-down hooks, called once per command or plugin manager."""


LISTENER_HOOKS = (
    "pipectl_run_start",
    "pipectl_run_planned",
    "pipectl_run_finish",
    "pipectl_step_start",
    "pipectl_step_retry",
    "pipectl_step_finish",
    "pipectl_step_cache",
    "pipectl_output_finish",
    "pipectl_rollback_start",
    "pipectl_rollback_finish",
)
"""The notification hooks: each implementation is called on its own, an exception in it logged
as ``plugin_hook_failed`` (see :mod:`pipectl.hooks`). With ``pipectl_wrap_step`` they are the
lifecycle hooks."""
