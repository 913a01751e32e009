"""Files the collector writes: spooled update payloads, running-sum checkpoints, model versions.

Every file appears under its final name only once complete (written to a temporary name, then
`os.replace`), so a reader or a restart after `kill -9` sees the old file or the new one, never a
torn one. With `fsync=True` the data and the directory entry are also forced to disk, which a
power cut needs and a process crash does not (the page cache outlives the process).
"""

from __future__ import annotations

import io
import os
import uuid
from typing import Sequence

import numpy as np

from fedmath import encodings
from fedmath.types import Shapes, Weights


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str, chunks: Sequence[bytes | memoryview], fsync: bool) -> None:
    """Write `chunks` to `path` via a temporary file and a rename."""
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, f".tmp-{uuid.uuid4().hex}")
    with open(tmp, "wb") as f:
        for c in chunks:
            f.write(c)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if fsync:
        _fsync_dir(directory)


def remove_quietly(path: str | None) -> None:
    if not path:
        return
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def write_npz(path: str, names: Sequence[str], arrays: Weights, fsync: bool) -> None:
    """Model weights as an uncompressed .npz keyed by the manifest names (in order)."""
    buf = io.BytesIO()
    np.savez(buf, **{n: np.asarray(a, np.float32) for n, a in zip(names, arrays)})
    atomic_write(path, [buf.getbuffer()], fsync)


def read_npz(path: str, names: Sequence[str]) -> Weights:
    with np.load(path) as npz:
        return [np.asarray(npz[n], np.float32) for n in names]


def write_sums(path: str, sums: Sequence[np.ndarray], fsync: bool) -> None:
    """A running-sum checkpoint: the float64 tensors concatenated, raw little-endian, written in
    place (the caller alternates between two files, so the one the store points at is intact)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        offset = 0
        for s in sums:
            view = np.ascontiguousarray(s, dtype="<f8").data.cast("B")
            done = 0
            while done < len(view):
                done += os.pwrite(fd, view[done:], offset + done)
            offset += len(view)
        if os.fstat(fd).st_size != offset:
            os.ftruncate(fd, offset)
        if fsync:
            os.fdatasync(fd)
    finally:
        os.close(fd)


def read_sums(path: str, shapes: Shapes) -> list[np.ndarray]:
    flat = np.fromfile(path, dtype="<f8")
    sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
    if flat.size != sum(sizes):
        raise ValueError(f"checkpoint {path} holds {flat.size} values, the model has {sum(sizes)}")
    return encodings.unflatten(flat, shapes, np.float64)


class SpoolSlots:
    """Reusable spool files owned by one process: `w<pid>-<instance>-<i>.bin`.

    Writing a fresh 5 MB file costs about ten times as much as overwriting one whose pages are
    already cached, so accepted payloads go into a small pool of slot files that are reused once
    no update record needs them (the running-sum checkpoint covers them or the round closed).
    A slot is only ever written by the process that owns it, and only when `is_referenced`
    says no committed record points at it, so a crash mid-write can tear only a slot nobody needs.
    """

    def __init__(self, directory: str, fsync: bool) -> None:
        self.directory = directory
        self.fsync = fsync
        self.prefix = f"w{os.getpid()}-{uuid.uuid4().hex[:8]}-"
        self._lock = __import__("threading").Lock()
        self._count = 0
        self._free: list[str] = []
        self._busy: set[str] = set()

    def acquire(self, is_referenced) -> str:
        """A slot name nobody needs; `is_referenced(name)` asks the store."""
        with self._lock:
            candidates = list(self._free)
        for name in candidates:
            if is_referenced(name):
                continue
            with self._lock:
                if name in self._free:
                    self._free.remove(name)
                    self._busy.add(name)
                    return name
        with self._lock:
            name = f"{self.prefix}{self._count}.bin"
            self._count += 1
            self._busy.add(name)
            return name

    def release(self, name: str) -> None:
        """Hand a slot back to the pool (it may still be referenced: acquire checks again)."""
        with self._lock:
            self._busy.discard(name)
            if name not in self._free:
                self._free.append(name)

    def write(self, name: str, payload: bytes | memoryview) -> str:
        path = os.path.join(self.directory, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            view = memoryview(payload).cast("B")
            written = 0
            while written < len(view):
                written += os.pwrite(fd, view[written:], written)
            if os.fstat(fd).st_size != len(view):
                os.ftruncate(fd, len(view))
            if self.fsync:
                os.fdatasync(fd)
        finally:
            os.close(fd)
        return path


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
