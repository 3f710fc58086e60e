"""Loads and their markers: how an output knows that a load is in its destination already.

A *load* is what one data step writes to one output in one run. It is named by the pipeline,
the run it belongs to (a resumed run goes on with the loads of the run it resumes, so both name
them alike), the step and the output's name. An output that keeps pipectl's exactly-once promise
commits, with its records and in the same transaction (or the same atomic rename), a *marker*
of the load: those four names, the number of records, and the extractor's cursor after the load
(its ``state``), the way dlt keeps its state in the destination. Then, whatever instant the
process dies:

* before the commit, nothing of the load is visible, so a resume or the next run loads it all;
* after it, the marker is there: a resume of the run finds it (:meth:`loaded`) and skips the
  output ("already committed by run X"), and the next run starts the extractor from the cursor
  in the marker (:meth:`last_load`), not from the one the tracker may not have heard of.

The output side of the contract (all optional; an output without ``loaded`` is loaded again by
a resume that re-runs its step, at least once rather than exactly once):

``open(ctx)``
    ``ctx.load`` is this attempt's :class:`Load`.
``loaded(load) -> LoadMarker | None``
    After ``open``: the marker of this very load, if the destination holds it.
``last_load(load) -> LoadMarker | None``
    After ``open``: the latest marker of the same pipeline, step and output, from any run.
``commit()``
    Commits the records and ``ctx.load.marker()`` together. The runner has set ``load.records``
    and ``load.state`` just before. A second commit of the same load must fail, not add rows
    (a primary key on the four names does that in SQL).

This module also has what the built-in file outputs share: :class:`FileMarker`, a marker beside
a file that is valid only for the file it was written for, so that the rename stays the one
commit point, and :func:`remove_stale_temp_files`.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

__all__ = [
    "FileMarker",
    "Load",
    "LoadMarker",
    "pid_alive",
    "remove_stale_temp_files",
    "temp_prefix",
    "write_atomically",
]


class LoadMarker:
    """A load as its destination recorded it."""

    __slots__ = (
        "pipeline",
        "run_id",
        "step",
        "output",
        "records",
        "state",
        "committed_by",
        "committed_at",
    )

    def __init__(
        self,
        pipeline: str,
        run_id: str,
        step: str,
        output: str,
        records: int = 0,
        state: Any = None,
        committed_by: str | None = None,
        committed_at: str | None = None,
    ):
        self.pipeline, self.run_id, self.step, self.output = pipeline, run_id, step, output
        self.records = records
        self.state = state
        self.committed_by = committed_by or run_id
        self.committed_at = committed_at

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoadMarker:
        fields: dict[str, Any] = {k: data.get(k) for k in cls.__slots__}
        return cls(**fields)

    def __repr__(self) -> str:
        return (
            f"LoadMarker({self.pipeline!r}, run {self.run_id}, {self.step!r} -> "
            f"{self.output!r}, {self.records} records, by {self.committed_by})"
        )


class Load:
    """One load: what the runner hands an output as ``ctx.load``."""

    __slots__ = ("pipeline", "run_id", "step", "output", "writer", "records", "state")

    def __init__(
        self, pipeline: str, run_id: str, step: str, output: str, writer: str | None = None
    ):
        self.pipeline = pipeline
        self.run_id = run_id  # the run the load belongs to (the resumed one, on a resume)
        self.step = step
        self.output = output
        self.writer = writer or run_id  # the run that writes it now
        self.records = 0  # set by the runner before commit()
        self.state: Any = None  # the extractor's cursor after the load, JSON-able, or None

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.pipeline, self.run_id, self.step, self.output)

    def marker(self) -> LoadMarker:
        """The marker to commit with the records."""
        return LoadMarker(
            self.pipeline,
            self.run_id,
            self.step,
            self.output,
            self.records,
            self.state,
            self.writer,
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )

    def state_json(self) -> str | None:
        return None if self.state is None else json.dumps(self.state, sort_keys=True, default=str)

    def __repr__(self) -> str:
        return f"Load({self.pipeline!r}, run {self.run_id}, {self.step!r} -> {self.output!r})"


# -- markers beside files ----------------------------------------------------------------------

#: how many loads a file's marker remembers (a resume looks for its own among them)
FILE_MARKER_LOADS = 50


class FileMarker:
    """The loads committed into ``path``, kept in ``.NAME.pipectl-load`` beside it.

    The marker names the inode of the file it describes, and is written (atomically, synced)
    *before* the rename that commits the file: the rename keeps the inode, so after it the
    marker is valid; if the process dies before it, the file is the old one, whose inode the
    marker lists as ``previous`` with the loads the old file held. One rename is still the one
    instant the load becomes visible, and the result is recognisable."""

    def __init__(self, path: str):
        self.path = path
        head, name = os.path.split(path)
        self.marker_path = os.path.join(head, f".{name}.pipectl-load")

    def _read(self) -> dict[str, Any]:
        try:
            with open(self.marker_path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def loads(self) -> list[LoadMarker]:
        """The markers of the loads the file at ``path`` holds now, oldest first."""
        try:
            inode = os.stat(self.path).st_ino
        except OSError:
            return []
        data = self._read()
        for which in ("current", "previous"):
            entry = data.get(which)
            if isinstance(entry, dict) and entry.get("inode") == inode:
                return [
                    LoadMarker.from_dict(m) for m in entry.get("loads", []) if isinstance(m, dict)
                ]
        return []

    def find(self, load: Load) -> LoadMarker | None:
        for marker in reversed(self.loads()):
            if (marker.pipeline, marker.run_id, marker.step, marker.output) == load.key:
                return marker
        return None

    def last(self, load: Load) -> LoadMarker | None:
        for marker in reversed(self.loads()):
            if (marker.pipeline, marker.step, marker.output) == (
                load.pipeline,
                load.step,
                load.output,
            ):
                return marker
        return None

    def prepare(self, new_file: str, marker: LoadMarker, keep: bool = True) -> None:
        """Before renaming ``new_file`` over ``path``: record that it holds ``marker`` (and, with
        ``keep``, the loads the current file holds: an appended file keeps them)."""
        held = self.loads()
        try:
            current_inode: int | None = os.stat(self.path).st_ino
        except OSError:
            current_inode = None
        loads = [*(held if keep else []), marker][-FILE_MARKER_LOADS:]
        data = {
            "current": {"inode": os.stat(new_file).st_ino, "loads": [m.as_dict() for m in loads]},
            "previous": {"inode": current_inode, "loads": [m.as_dict() for m in held]},
        }
        write_atomically(self.marker_path, json.dumps(data, default=str).encode("utf-8"))


def write_atomically(
    path: str | os.PathLike[str],
    data: bytes,
    *,
    sync: bool = True,
    clean: bool = True,
    fault: str | None = None,
) -> None:
    """``data`` into ``path``: a synced temporary file (``.NAME.pipectl-PID-*.tmp``, removed
    if anything fails, a full disk say) renamed over it. ``sync=False`` skips the fsync: the
    file is whole or absent for other processes, but a machine crash may leave it empty or
    cut short (for files whose readers check them, such as the result store's). ``clean``:
    first remove the temporary files dead processes left beside it (a listing of the folder:
    False for folders of many files written one after another). ``fault``: the fault point
    (:mod:`pipectl.faults`) reached between the temporary file and the rename."""
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    if clean:
        remove_stale_temp_files(path)
    tmp = os.path.join(folder, f"{temp_prefix(path)}{os.urandom(4).hex()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        if fault is not None:
            from pipectl import faults

            faults.reach(fault)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# -- temporary files of dead processes --------------------------------------------------------


def temp_prefix(path: str) -> str:
    """The prefix of this process's temporary files for ``path``: ``.NAME.pipectl-PID-``."""
    return f".{os.path.basename(path)}.pipectl-{os.getpid()}-"


def remove_stale_temp_files(path: str) -> list[str]:
    """Remove the temporary files that pipectl processes now gone left beside ``path``
    (``.NAME.pipectl-PID-*.tmp`` whose PID no longer runs on this machine); returns them."""
    folder = os.path.dirname(path) or "."
    start = f".{os.path.basename(path)}.pipectl-"
    removed: list[str] = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        if not (name.startswith(start) and name.endswith(".tmp")):
            continue
        pid_text = name[len(start) :].split("-", 1)[0]
        if not pid_text.isdigit() or pid_alive(int(pid_text)):
            continue
        try:
            os.unlink(os.path.join(folder, name))
            removed.append(os.path.join(folder, name))
        except OSError:
            pass
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (one we may not signal counts)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
