"""The lifecycle listener that feeds a run to a tracker as the typed events of
:mod:`pipectl.tracking.contract` (:class:`TrackingListener`)."""

from __future__ import annotations

import os
import pickle
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pipectl.hookspecs import hookimpl
from pipectl.tracking import contract
from pipectl.tracking.contract import Tracker
from pipectl.tracking.resume import fingerprint, item_fingerprint

__all__ = ["TrackingListener"]


class TrackingListener:
    """The lifecycle listener that feeds one run (and its sub-pipeline runs) to a tracker, as
    the typed events of :mod:`pipectl.tracking.contract`, each given to
    :meth:`Tracker.record`.

    Every hook call only builds one small event; outputs are pickled here (so the stored value
    is the one the step returned), when the tracker has a result store.
    """

    def __init__(
        self,
        tracker: Tracker,
        run_id: str,
        spec: Any = None,
        *,
        resumed_from: str | None = None,
        pipeline_file: str | None = None,
        executor: str | None = None,
        store_outputs: bool = True,
        fingerprints: Mapping[str, str] | None = None,
    ) -> None:
        self.tracker = tracker
        self.record = tracker.record
        self.run_ids = {run_id}
        self.spec = spec
        self.resumed_from = resumed_from
        self.pipeline_file = pipeline_file
        self.executor = executor
        self.store_outputs = store_outputs and getattr(tracker, "results", None) is not None
        self.fingerprints = (
            fingerprints
            if fingerprints is not None
            else ({s.name: fingerprint(s) for s in spec.steps} if spec is not None else {})
        )
        #: the run captures step logs for the tracker (:mod:`pipectl.step_logs`), unless the
        #: tracker says it does not want them (``wants_step_logs = False``)
        self.wants_step_logs = getattr(tracker, "wants_step_logs", True) is not False
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self._deps: dict[str, tuple[str, ...]] = {}
        self._graph: dict[str, tuple[str, ...]] | None = None

    def _mine(self, run: Any) -> bool:
        if run.run_id in self.run_ids:
            return True
        if run.parent_run_id in self.run_ids:
            self.run_ids.add(run.run_id)
            return True
        return False

    def _run_fields(self, run: Any) -> dict[str, Any]:
        """What both run events say of ``run``."""
        spec = self.spec if run.pipeline_id == getattr(self.spec, "name", None) else None
        if spec is None:
            graph: Mapping[str, tuple[str, ...]] = _NO_GRAPH
        else:
            if self._graph is None:  # the DAG, once per listener
                self._graph = {s.name: tuple(s.all_dependencies) for s in spec.steps}
            graph = self._graph
        return {
            "run_id": run.run_id,
            "pipeline": run.pipeline_id,
            "started_at": run.start_time or datetime.now(UTC),
            "params": run.parameters,
            "description": getattr(spec, "description", "") or "",
            "graph": graph,
            "parent_run_id": run.parent_run_id,
            "resumed_from": self.resumed_from if spec is not None else None,
            "pipeline_file": self.pipeline_file,
            "executor": self.executor,
            "host": self.host,
            "pid": self.pid,
        }

    @hookimpl
    def pipectl_run_start(self, run: Any) -> None:
        if self._mine(run):
            self.record(contract.RunStarted(**self._run_fields(run)))

    @hookimpl
    def pipectl_step_start(self, run: Any, step: Any, attempt: int) -> None:
        if run.run_id in self.run_ids:
            self.record(
                contract.StepStarted(
                    run_id=run.run_id,
                    step_name=step.name,
                    step_type=step.step_type,
                    attempt=attempt,
                    started_at=datetime.now(UTC),
                )
            )

    @hookimpl
    def pipectl_step_retry(
        self, run: Any, step: Any, attempt: int, error: BaseException, delay: float
    ) -> None:
        if run.run_id in self.run_ids:
            from pipectl.log import redact, secrets_var

            text = f"{type(error).__name__}: {error}"
            secrets = secrets_var().get()
            self.record(
                contract.StepRetrying(
                    run_id=run.run_id,
                    step_name=step.name,
                    attempt=attempt,
                    error=redact(text, secrets) if secrets else text,
                    delay=delay,
                    failed_at=datetime.now(UTC),
                )
            )

    @hookimpl
    def pipectl_step_finish(self, run: Any, step: Any, result: Any) -> None:
        if run.run_id not in self.run_ids:
            return
        output = result.output
        blob = None
        in_store = False
        if (
            output is not None
            and self.store_outputs
            and result.status.value == "success"
            and getattr(step, "store_output", True)
        ):  # store_output=False: never pickled
            if getattr(output, "pipectl_stored", False) is True:
                in_store = True  # e.g. written by a dask worker, where it stayed
            else:
                try:
                    blob = pickle.dumps(output, protocol=pickle.HIGHEST_PROTOCOL)
                except Exception:  # noqa: BLE001 - not picklable: resume runs the step again
                    blob = None
                if blob is not None and _holds_secret(blob):
                    blob = None  # a secret is never stored in clear: resume runs the step again
        main = self.spec is not None and run.pipeline_id == self.spec.name
        inputs = None
        if result.attempts:  # it ran: what it was given, summarized by the writer
            inputs = result.received
            if inputs is None:  # a result made elsewhere: the outputs of its dependencies
                deps = self._deps.get(step.name)
                if deps is None:
                    deps = self._deps[step.name] = step.all_dependencies
                if deps:
                    steps = run.steps
                    inputs = {d: steps[d].output for d in deps if d in steps}
        from pipectl.log import secrets_var

        self.record(
            contract.StepFinished(
                run_id=run.run_id,
                step=step,
                result=result,
                pickled_output=blob,
                output_in_store=in_store,
                fingerprint=(
                    None
                    if not main
                    else self.fingerprints.get(step.name)
                    if getattr(step, "map_of", None) is None
                    else item_fingerprint(
                        self.fingerprints.get(step.map_of), step.map_index, step.map_count
                    )
                ),
                inputs=inputs,
                secrets=secrets_var().get(),
                logs=result.logs or (),
            )
        )

    @hookimpl
    def pipectl_run_finish(self, run: Any) -> None:
        if run.run_id not in self.run_ids:
            return
        for name, result in run.steps.items():
            outcome = getattr(result, "rollback", None)
            if outcome is not None:  # what the rollbacks did, in the step rows
                self.record(
                    contract.StepRolledBack(
                        run_id=run.run_id, step_name=name, status=result.status, outcome=outcome
                    )
                )
        if run.status.value == "success":
            for step_name, state in (run.extractor_state or {}).items():
                if state is not None:
                    self.record(
                        contract.ExtractorStateSaved(
                            run_id=run.run_id,
                            pipeline=run.pipeline_id,
                            step_name=step_name,
                            state=state,
                            saved_at=datetime.now(UTC),
                        )
                    )
        self.record(
            contract.RunFinished(
                **self._run_fields(run),
                status=run.status,
                finished_at=run.end_time,
                duration_ms=run.duration_ms,
                records_processed=run.records_processed,
                errors=tuple(run.errors),
            )
        )


_NO_GRAPH: Mapping[str, tuple[str, ...]] = {}  # a sub-pipeline run's (its steps are not listed)


def _holds_secret(blob: bytes) -> bool:
    """Whether a pickled output holds the value of one of the running pipeline's secret params
    (pickle keeps strings as UTF-8, inside containers too)."""
    from pipectl.log import secrets_var

    secrets = secrets_var().get()
    return bool(secrets) and any(
        value.encode("utf-8", "surrogatepass") in blob for value in secrets
    )
