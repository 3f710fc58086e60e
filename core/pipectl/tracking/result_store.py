"""The result store: step outputs kept for resume, pickled, one file per step of a run, and
cached steps' outputs by cache key (``_cache/``), each authenticated with an HMAC under the
pipectl home's key (:class:`ResultStore`).

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

_HEX = frozenset("0123456789abcdef")


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
        self._cache_root: str | None = None  # the cache's folder, as text (made on first use)

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
        """Store a pickled output: written to a temporary file and renamed into place, so it
        is whole or absent; an OSError (a full disk, a key that cannot be read or made) leaves
        nothing behind. Not synced to disk (an fsync per step output cost 0.45 ms on this
        project's test machine): a process that dies loses nothing (the kernel has the file),
        and after a crash of the machine an output lost or cut short fails :meth:`get`'s
        check, so its step runs again on resume, as for an output never stored."""
        path = self._path(run_id, step)
        tag = self._tag(run_id, step, data)
        _write(str(path), self.MAGIC + tag + data)
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

    # -- the step cache (pipectl.engine.cache) ------------------------------------------------

    CACHE_MAGIC = b"pipectl-cache-v1\n"

    def cache_key(self, material: bytes) -> str:
        """The cache key of ``material`` (what identifies a cached step's call): an HMAC under
        the store's key, so that a key shown or recorded tells nothing of the inputs and params
        it stands for (a secret param's value among them)."""
        return hmac.new(self._secret(), b"pipectl-cache\n" + material, hashlib.sha256).hexdigest()

    def _cache_path(self, key: str) -> str:
        if len(key) != 64 or not _HEX.issuperset(key):
            raise ValueError(f"not a cache key: {key!r}")
        folder = self._cache_root
        if folder is None:
            folder = self._cache_root = os.path.join(self.root, "_cache")
        return f"{folder}{os.sep}{key[:2]}{os.sep}{key}.pickle"

    def _cache_tag(self, key: str, header: bytes, data: Any) -> bytes:
        mac = hmac.new(self._secret(), self.CACHE_MAGIC + key.encode() + b"\n", hashlib.sha256)
        mac.update(header)
        mac.update(data)
        return mac.digest()

    def put_cached(self, key: str, data: bytes, *, run_id: str, step: str) -> float:
        """Store a cached step's pickled output under ``key`` (see :meth:`cache_key`), with the
        run and step that made it; returns when it was stored (a Unix time). An entry already
        there is replaced. Written atomically but not synced (an fsync per step would cost a
        millisecond): after a machine crash an entry may be cut short, which its HMAC check
        sees (the step then runs again)."""
        stored_at = time.time()
        header = json.dumps({"run_id": run_id, "step": step, "stored_at": stored_at}).encode()
        path = self._cache_path(key)
        tag = self._cache_tag(key, header, data)
        entry = self.CACHE_MAGIC + tag + len(header).to_bytes(4, "big") + header + data
        _write(path, entry, fault="cache.mid-store")
        return stored_at

    def get_cached(self, key: str) -> tuple[bool, Any, dict[str, Any]]:
        """(True, the output, {run_id, step, stored_at}) when this store holds an entry for
        ``key`` that it wrote (checked with its HMAC before anything is unpickled), else
        (False, None, {}); an entry that fails the check is left alone with a warning and reads
        as not cached (the step runs)."""
        path = self._cache_path(key)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return False, None, {}
        start = len(self.CACHE_MAGIC) + 32
        why = (
            "its tag does not match this store's key (planted, damaged or cut short, or "
            "written with another key)"
        )
        genuine = False
        header: dict[str, Any] = {}
        body: Any = b""
        if data.startswith(self.CACHE_MAGIC) and len(data) >= start + 4:
            size = int.from_bytes(data[start : start + 4], "big")
            raw = data[start + 4 : start + 4 + size]
            body = memoryview(data)[start + 4 + size :]
            try:
                genuine = len(raw) == size and hmac.compare_digest(
                    data[len(self.CACHE_MAGIC) : start], self._cache_tag(key, raw, body)
                )
            except OSError as exc:
                why = f"the key cannot be read: {exc}"
            if genuine:
                header = json.loads(raw)
        if not genuine:
            from pipectl.log import get_logger

            get_logger().warning(
                "cache_entry_ignored", file=path, reason=f"{why}; its step runs again"
            )
            return False, None, {}
        return True, pickle.loads(body), header  # noqa: S301 - authenticated: put_cached()

    def clear_cache(
        self, older_than: float | None = None, *, dry_run: bool = False
    ) -> tuple[int, int]:
        """Remove the step cache's entries (all of them, or those stored more than
        ``older_than`` seconds ago); returns (entries, bytes) removed, or that would be with
        ``dry_run``. An entry removed is a miss next time: its step runs and stores it again."""
        folder = os.path.join(self.root, "_cache")
        cutoff = None if older_than is None else time.time() - older_than
        count = size = 0
        try:
            shards = os.listdir(folder)
        except FileNotFoundError:
            return 0, 0
        for shard in shards:
            path = os.path.join(folder, shard)
            try:
                names = os.listdir(path)
            except (NotADirectoryError, FileNotFoundError):
                continue
            for name in names:
                entry = os.path.join(path, name)
                try:
                    info = os.stat(entry)
                    if cutoff is not None and info.st_mtime >= cutoff:
                        continue
                    if not dry_run:
                        os.unlink(entry)
                except FileNotFoundError:  # removed meanwhile
                    continue
                count += 1
                size += info.st_size
            if not dry_run and cutoff is None:
                try:
                    os.rmdir(path)
                except OSError:  # an entry written meanwhile: the folder stays
                    pass
        return count, size

    def delete_run(self, run_id: str) -> None:
        """Remove every stored output of run ``run_id`` (its folder); a run with nothing
        stored (or removed already) is fine. An id that is not one plain folder name (empty,
        ``.``, ``..``, with a path separator) removes nothing. Raises OSError when the folder
        cannot be removed."""
        if (
            not run_id
            or run_id in (".", "..", "_cache")
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


def _write(path: str, data: bytes, fault: str | None = None) -> None:
    """``data`` into ``path`` atomically, not synced (see :meth:`ResultStore.put`); its folder
    is made when it is missing (tried first: a mkdir per file costs on some disks). The folder
    is not listed for dead processes' temporary files at each write (a run's folder holds one
    file per step); ``delete_run`` and ``clear_cache`` remove what they hold."""
    from pipectl.loads import write_atomically

    try:
        write_atomically(path, data, sync=False, clean=False, fault=fault)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_atomically(path, data, sync=False, clean=False, fault=fault)


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
