"""Pipeline Core (seed 000) on pipectl: one extractor, many outputs.

The document's code runs with only its imports changed::

    from pipectl.compat.pipeline_core import Pipeline, PipelineRunConfig

    pipeline = Pipeline(
        pipeline_id="weather_api",
        extractor=weather_extractor,
        outputs=[bigquery_output, gcs_output],
    )
    run = await pipeline.execute(
        PipelineRunConfig(pipeline_id="weather_api", parameters={"location_ids": ["NYC", "SF"]})
    )

A :class:`Pipeline` is a pipectl :class:`pipectl.Pipeline` with one data step,
``extract_load``: the extractor streamed into every output, on pipectl's engine. What the
document promises is what that step does:

- ``run.run_id``, ``status`` (a :class:`~pipectl.model.RunStatus`: ``success``, ``failed``),
  ``start_time``, ``end_time``, ``parameters`` and ``errors`` are the run's
  (:class:`~pipectl.model.PipelineRun`, re-exported here with ``PipelineRunConfig``);
- ``records_processed`` counts the records the outputs committed (the most any output wrote,
  so one output's failure does not hide what the others wrote);
- an extraction error fails the run and commits no output; one output's failure does not stop
  the others (they commit), fails the run and is in ``run.errors`` with the output's name;
- every output is closed after the run, failed or not;
- ``PipelineRunConfig.output_config`` overrides options of outputs for one run, by output name
  (see :mod:`pipectl.output_config`): ``{"jsonl#1": {"path": "today.jsonl"}}``.

Extractors and outputs are pipectl's (:mod:`pipectl.data` says what they implement), as
objects or as ``{"type": "csv", "path": ...}`` mappings naming registered components.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pipectl.model import PipelineRun, PipelineRunConfig, RunStatus
from pipectl.pipeline import Pipeline as _Pipeline

__all__ = ["STEP", "Pipeline", "PipelineRun", "PipelineRunConfig", "RunStatus"]

STEP = "extract_load"
"""The name of the one data step (the name in ``run.steps`` and in the run's errors)."""


class Pipeline(_Pipeline):
    """``Pipeline(pipeline_id, extractor, outputs)``: a pipectl pipeline of one data step.

    Further keywords are :class:`pipectl.Pipeline`'s (``tracker=``, ``description=``...), and
    ``transforms=`` the data step's."""

    def __init__(
        self,
        pipeline_id: str,
        extractor: Any,
        outputs: Iterable[Any],
        *,
        transforms: Iterable[Any] = (),
        **options: Any,
    ):
        outputs = list(outputs)
        if not outputs:
            raise TypeError(f"Pipeline {pipeline_id!r} needs at least one output: outputs=[...]")
        super().__init__(pipeline_id, **options)
        self.pipeline_id = pipeline_id
        self.extractor = extractor
        self.outputs = outputs
        self.data_step(STEP, extractor=extractor, outputs=outputs, transforms=transforms)

    async def execute(self, config: PipelineRunConfig | None = None) -> PipelineRun:
        """Run once: extract, write to every output, return the finished run (a failure is in
        ``run.status`` and ``run.errors``, not raised). ``config.pipeline_id`` must be this
        pipeline's; ``output_config`` naming no output raises ValueError before the run."""
        return await super().execute(config or PipelineRunConfig(self.pipeline_id))
