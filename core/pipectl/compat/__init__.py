"""The seed systems' APIs as thin adapters onto pipectl's core (one module per system).

Nothing here is imported by ``import pipectl``: import a module of this package by name.

- ``pipectl.compat.pipeline_core``: Pipeline Core (one extractor, many outputs):
  ``Pipeline(pipeline_id, extractor, outputs)``, ``await pipeline.execute(PipelineRunConfig(...))``.
- ``pipectl.compat.ia_modules``: ia_modules (step classes and a flow): ``Step``,
  ``Pipeline(name, steps, flow, services)``, ``ServiceRegistry``, ``run_pipeline_from_json``.
- ``pipectl.compat.builder``: Pipeline Builder (steps of commands run in order):
  ``Pipeline(name, checkpoint_dir=)``, ``add_step(name, command, retry_count=, rollback_fn=,
  **kwargs)``, ``add_parallel_group``, ``add_subpipeline``, ``execute(stop_on_error=,
  enable_rollback=, resume_from=)``, ``from_yaml``.
- ``pipectl.compat.executor``: PipelineExecutor (an async DAG of decorated steps):
  ``PipelineExecutor(config=PipelineConfig(...))``, ``@executor.step(...)``, ``await run()``.
- ``pipectl.compat.odibi``: Odibi (YAML projects of pipelines of nodes, pandas DataFrames):
  ``PipelineManager.from_yaml(path).run([names])``, ``Pipeline(config, engine="pandas")``,
  ``PipelineResults``.
"""
