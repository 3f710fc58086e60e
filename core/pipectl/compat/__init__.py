"""The seed systems' APIs as thin adapters onto pipectl's core (one module per system).

Nothing here is imported by ``import pipectl``: import a module of this package by name.

- ``pipectl.compat.pipeline_core``: Pipeline Core (one extractor, many outputs):
  ``Pipeline(pipeline_id, extractor, outputs)``, ``await pipeline.execute(PipelineRunConfig(...))``.
"""
