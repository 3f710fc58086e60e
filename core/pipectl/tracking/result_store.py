"""The result store: step outputs kept for resume, pickled, one file per step of a run, each
authenticated with an HMAC under the pipectl home's key (:class:`ResultStore`).

Importing this module is cheap (a dask worker unpickles a store and writes into it)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import pickle
import re
import shutil
import time
from pathlib import Path
from typing import Any

__all__ = ["ResultStore", "read_or_make_key", "write_durably"]


def write_durably(path: Path, data: bytes) -> None:
    """``data`` into ``path`` atomically (:func:`pipectl.loads.write_atomically`): the
    temporary file is removed when anything fails (a full disk)."""
    from pipectl.loads import write_atomically

    write_atomically(path, data)


class ResultStore:
    """Step outputs, pickled, one file per step of a run under ``root`` (local files), each
    authenticated, so that a resume never unpickles a file the store did not write.

    Each file is ``pipectl-result-v1``, an HMAC-SHA256 tag, then the pickle. The tag covers
    the run id, the step's name and the pickle, under the store's secret key: the file
    ``result-store.key`` in the pipectl home (``$PIPECTL_HOME``, else ``.pipectl/`` in the
    project of the working directory, where the default tracker is), or ``key_file``, made on first use (32
    random bytes in hex, mode 0600, created with ``O_CREAT | O_EXCL``: of several processes
    making it at once, one writes it and all read it back). :meth:`get` checks the tag before
    it unpickles anything: a file whose tag does not match (planted, damaged, cut short,
    moved from another run or step, written with another key, or in the format of an older
    pipectl) is left alone with a one-line warning naming it, and reads as not stored (the
    step runs again). So a resume takes outputs only from the same pipectl home: another home
    has another key. The key travels with the store when the store is pickled (to dask
    workers, which write outputs into it), so the workers need no access to the home.
    Keep the key as private as the data the pipeline reads.

    Anything with the same two methods can stand in for it (and a third, :meth:`delete_run`,
    for :meth:`pipectl.tracking.SQLTracker.prune` to remove what it holds of a deleted run).
    """

    MAGIC = b"pipectl-result-v1\n"

    def __init__(
        self, root: str | os.PathLike[str], key_file: str | os.PathLike[str] | None = None
    ):
        self.root = Path(root)
        if key_file is None:
            from pipectl.project import home

            key_file = home() / "result-store.key"
        self.key_file = Path(key_file).absolute()
        self._key: bytes | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_key": self._secret()}  # the key goes with the store

    def _path(self, run_id: str, step: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", step)[:80]
        digest = hashlib.sha256(step.encode()).hexdigest()[:10]
        return self.root / run_id / f"{safe}-{digest}.pickle"

    def _secret(self) -> bytes:
        if self._key is None:
            self._key = read_or_make_key(self.key_file)
        return self._key

    def _tag(self, run_id: str, step: str, data: Any) -> bytes:
        mac = hmac.new(
            self._secret(), self.MAGIC + json.dumps([run_id, step]).encode(), hashlib.sha256
        )
        mac.update(data)
        return mac.digest()

    def put(self, run_id: str, step: str, data: bytes) -> str:
        """Store a pickled output durably (written, fsynced, renamed into place); an OSError
        (a full disk, a key that cannot be read or made) leaves nothing behind."""
        path = self._path(run_id, step)
        tag = self._tag(run_id, step, data)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_durably(path, self.MAGIC + tag + data)
        return str(path)

    def get(self, run_id: str, step: str) -> tuple[bool, Any]:
        """(True, the output) if stored by this store, else (False, None)."""
        path = self._path(run_id, step)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return False, None
        start = len(self.MAGIC) + 32  # the tag: an HMAC-SHA256
        body = memoryview(data)[start:]
        why = (
            "its tag does not match this store's key (planted, damaged or cut short, from "
            "another run or step, or written with another key)"
        )
        try:
            genuine = (
                data.startswith(self.MAGIC)
                and len(data) >= start
                and hmac.compare_digest(
                    data[len(self.MAGIC) : start], self._tag(run_id, step, body)
                )
            )
        except OSError as exc:  # the key cannot be read or made: nothing can be checked
            genuine, why = False, f"the key cannot be read: {exc}"
        if not genuine:
            from pipectl.log import get_logger

            get_logger().warning(
                "result_store_ignored", file=str(path), reason=f"{why}; its step runs again"
            )
            return False, None
        return True, pickle.loads(body)  # noqa: S301 - authenticated: written by put()

    def delete_run(self, run_id: str) -> None:
        """Remove every stored output of run ``run_id`` (its folder); a run with nothing
        stored (or removed already) is fine. An id that is not one plain folder name (empty,
        ``.``, ``..``, with a path separator) removes nothing. Raises OSError when the folder
        cannot be removed."""
        if (
            not run_id
            or run_id in (".", "..")
            or "/" in run_id
            or "\\" in run_id
            or "\x00" in run_id
        ):
            return
        folder = self.root / run_id
        try:
            shutil.rmtree(folder)
        except FileNotFoundError:
            pass


def read_or_make_key(path: Path) -> bytes:
    """The key in ``path``, made first when there is none (see :class:`ResultStore`)."""
    for _ in range(200):
        try:
            text = path.read_bytes().strip()
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue  # another process made it: read it
            try:
                os.write(fd, os.urandom(32).hex().encode() + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            continue  # read it back, as the others do
        if len(text) == 64:
            try:
                return bytes.fromhex(text.decode("ascii"))
            except ValueError:
                break
        time.sleep(0.005)  # empty: the process that made it is writing it
    raise OSError(
        f"result store key {path} is not a key (64 hex digits): remove it and a new "
        "one is made (outputs stored with the old one then run again)"
    )
