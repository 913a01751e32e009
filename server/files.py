"""Files the collector writes: spooled update payloads, running-sum checkpoints, model versions.

Every file appears under its final name only once complete (written to a temporary name, then
`os.replace`), so a reader or a restart after `kill -9` sees the old file or the new one, never a
torn one. With `fsync=True` the data and the directory entry are also forced to disk, which a
power cut needs and a process crash does not (the page cache outlives the process).
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import mmap
import os
import socket
import threading
import uuid
from typing import BinaryIO, Callable, Optional, Sequence

import numpy as np

from fedmath.types import Shapes, Weights


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str, chunks: Sequence[bytes | memoryview], fsync: bool) -> None:
    """Write `chunks` to `path` via a temporary file and a rename."""

    def write(f: BinaryIO) -> None:
        for c in chunks:
            f.write(c)

    atomic_write_with(path, write, fsync)


def atomic_write_with(path: str, write: Callable[[BinaryIO], object], fsync: bool) -> None:
    """Let `write(f)` fill a temporary file, then rename it to `path`."""
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, f".tmp-{uuid.uuid4().hex}")
    with open(tmp, "wb") as f:
        write(f)
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
    atomic_write_with(path, lambda f: np.savez(f, **{n: np.asarray(a, np.float32) for n, a in zip(names, arrays)}),
                      fsync)


def write_arrays(path: str, arrays: dict[str, np.ndarray], fsync: bool) -> None:
    """Named arrays of any dtype (a server optimizer's state) as an uncompressed .npz."""
    atomic_write_with(path, lambda f: np.savez(f, **arrays), fsync)


# numpy parses each .npy header with ast.literal_eval, and CPython 3.11's AST constructor keeps
# its recursion depth in state the threads share: two threads of a worker reading weights at once
# can fail with "SystemError: AST constructor recursion depth mismatch" (CPython gh-106905, seen
# here on 3.11.7 as a 500 on GET /v1/model/N/weights). The reads are serialized; the bytes are small.
_NPZ_READ = threading.Lock()


def read_arrays(path: str) -> dict[str, np.ndarray]:
    with _NPZ_READ, np.load(path) as z:
        return {k: z[k] for k in z.files}


def read_npz(path: str, names: Sequence[str]) -> Weights:
    with _NPZ_READ, np.load(path) as npz:
        return [np.asarray(npz[n], np.float32) for n in names]


def pwrite_all(fd: int, data: bytes | memoryview, offset: int = 0) -> int:
    """Write all of `data` at `offset` (pwrite may write less than asked); returns its length."""
    view = memoryview(data).cast("B")
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)
    return len(view)


def write_in_place(path: str, chunks: Sequence[bytes | memoryview], fsync: bool) -> None:
    """Overwrite `path` with `chunks` (created if missing, cut to their length): no rename, so
    the caller must never point at the file while it is being written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        offset = 0
        for c in chunks:
            offset += pwrite_all(fd, c, offset)
        if os.fstat(fd).st_size != offset:
            os.ftruncate(fd, offset)
        if fsync:
            os.fdatasync(fd)
    finally:
        os.close(fd)


def write_sums(path: str, sums: Sequence[np.ndarray], fsync: bool) -> None:
    """A running-sum checkpoint: the float64 tensors concatenated, raw little-endian, written in
    place (the caller alternates between two files, so the one the store points at is intact)."""
    write_in_place(path, [np.ascontiguousarray(s, dtype="<f8").data for s in sums], fsync)


def read_sums_into(path: str, out: np.ndarray) -> None:
    """Read a running-sum checkpoint into `out`, a flat little-endian float64 array of the model's size."""
    if out.dtype != np.dtype("<f8") or out.ndim != 1 or not out.flags.c_contiguous:
        raise ValueError(f"checkpoints are read into a flat contiguous <f8 array, got {out.dtype} {out.shape}")
    view = memoryview(out).cast("B")
    with open(path, "rb", buffering=0) as f:
        got = 0
        while got < len(view) and (n := f.readinto(view[got:])):
            got += n
        if got != len(view) or f.read(1):
            raise ValueError(f"checkpoint {path} does not hold the model's {out.size} float64 values")


def tensor_views(flat: np.ndarray, shapes: Shapes) -> list[np.ndarray]:
    """Cut a flat vector into tensors of `shapes`, in order, as views of it (no copy; the size
    must be their total). The layout of float32 payloads, spool files and checkpoints."""
    out, start = [], 0
    for shape in shapes:
        n = math.prod(shape)
        out.append(flat[start : start + n].reshape(shape))
        start += n
    return out


# Spool slot names carry their host, so that collector hosts sharing one spool directory judge
# only their own slots by pid (a pid on another host says nothing about a process here).
HOST_TAG = "h" + hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def slot_host(name: str) -> Optional[str]:
    """The host tag of a slot name `w<pid>-<host>-...`, None for a name without one."""
    parts = name.split("-")
    return parts[1] if len(parts) > 2 and len(parts[1]) == len(HOST_TAG) and parts[1][0] == "h" else None


class SpoolSlots:
    """Reusable spool files owned by one process: `w<pid>-<host>-<instance>-<i>.bin`.

    Writing a fresh 5 MB file costs about ten times as much as overwriting one whose pages are
    already cached, so accepted payloads go into a small pool of slot files that are reused once
    no update record needs them (the running-sum checkpoint covers them or the round closed).
    A slot is only ever written by the process that owns it, and only when `is_referenced`
    says no committed record points at it, so a crash mid-write can tear only a slot nobody needs.
    """

    max_read_maps = 256

    def __init__(self, directory: str, fsync: bool) -> None:
        self.directory = directory
        self.fsync = fsync
        self.prefix = f"w{os.getpid()}-{HOST_TAG}-{uuid.uuid4().hex[:8]}-"
        self._lock = threading.Lock()
        self._count = 0
        self._free: list[str] = []
        self._busy: set[str] = set()
        self._uses: dict[str, int] = {}  # how many times each slot was handed out
        self._maps: dict[str, mmap.mmap] = {}  # slots received into, mapped once and kept
        self._read_maps: dict[str, mmap.mmap] = {}  # slots read back (any process's), oldest first

    def acquire(self, referenced: Callable[[list[str]], set[str]]) -> str:
        """A slot name nobody needs; `referenced(names)` asks the store, once, which of the free
        slots a record points at.

        Only the thread holding a slot can make a record point at it, and a slot goes back to
        the free list only after its record committed. So a slot that was free when the store
        was asked, and that nobody took since (its use count unchanged), has no record the
        answer missed. (Without that count, another thread could take the slot, record an
        update in it and release it while the store is being asked, and two records would share
        one file: found by server_faults' kill test.) Other threads keep taking free slots
        meanwhile: one question for all candidates, not one round trip per slot."""
        with self._lock:
            candidates = [(name, self._uses.get(name, 0)) for name in self._free]
        used = referenced([name for name, _ in candidates]) if candidates else set()
        with self._lock:
            for name, uses in candidates:
                if name not in used and name in self._free and self._uses.get(name, 0) == uses:
                    self._free.remove(name)
                    break
            else:
                name = f"{self.prefix}{self._count}.bin"
                self._count += 1
            self._uses[name] = self._uses.get(name, 0) + 1
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
        with self._lock:
            for maps in (self._maps, self._read_maps):  # about to change size: unmap first
                mapped = maps.get(name)
                if mapped is not None and len(mapped) != len(payload):
                    del maps[name]  # unmapped once no view of it is left
        write_in_place(path, [payload], self.fsync)
        return path

    def receive(self, name: str, nbytes: int, fill: Callable[[memoryview], None]) -> memoryview:
        """Let `fill(view)` write the slot's `nbytes` bytes in place, through a shared mapping
        of the file kept from one use to the next (so the pages are mapped, and writable, once),
        and return the view: the bytes land in the page cache straight from `fill` (a socket's
        recv_into), with no buffer to write out afterwards. The view is valid until the slot is
        released."""
        with self._lock:
            mapped = self._maps.get(name)
        if mapped is None or len(mapped) != nbytes:
            path = os.path.join(self.directory, name)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if os.fstat(fd).st_size != nbytes:
                    os.ftruncate(fd, nbytes)
                reserve(fd, nbytes)
                mapped = mmap.mmap(fd, nbytes, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            finally:
                os.close(fd)
            with self._lock:
                self._maps[name] = mapped  # a mapping of another size is unmapped once unused
        view = memoryview(mapped)
        fill(view)
        if self.fsync:
            mapped.flush()
        return view

    def view(self, name: str, nbytes: int) -> memoryview:
        """A slot's `nbytes` bytes, this process's or another's, read in place through a shared
        mapping kept from one read to the next (a checkpoint build reads every recorded update
        back: through a read() into a buffer that is one more copy of each, through a fresh
        mapping one page fault per few pages). A slot is only ever overwritten in place at its
        one size, never truncated or replaced under its name (names carry the owner's pid and a
        random part), so a kept mapping always shows the file's current bytes; a removed file's
        mapping is never asked for again, since no record names it. At most `max_read_maps`
        are kept: a process sees the slots of every worker, and workers come and go.
        FileNotFoundError if the file is gone, ValueError if it is not `nbytes` long."""
        with self._lock:
            mapped = self._maps.get(name)
            if mapped is None:
                mapped = self._read_maps.get(name)
        if mapped is None or len(mapped) != nbytes:
            fd = os.open(os.path.join(self.directory, name), os.O_RDONLY)
            try:
                size = os.fstat(fd).st_size
                if size != nbytes:
                    raise ValueError(f"spool file {name} holds {size} bytes, not the model's {nbytes}")
                mapped = mmap.mmap(fd, nbytes, mmap.MAP_SHARED, mmap.PROT_READ)
            finally:
                os.close(fd)
            with self._lock:
                self._read_maps[name] = mapped
                while len(self._read_maps) > self.max_read_maps:  # unmapped once no view of it is left
                    del self._read_maps[next(iter(self._read_maps))]
        return memoryview(mapped)


def reserve(fd: int, nbytes: int) -> None:
    """Allocate a file's first `nbytes` on disk now, so that a full disk is an OSError here and
    not a SIGBUS later, on a write into a mapping of it (posix_fallocate; where the OS has none,
    macOS, by writing zeros)."""
    if hasattr(os, "posix_fallocate"):
        os.posix_fallocate(fd, 0, nbytes)
        return
    zeros = bytes(min(nbytes, 1 << 20))
    for offset in range(0, nbytes, len(zeros) or 1):
        pwrite_all(fd, zeros[: min(len(zeros), nbytes - offset)], offset)


class ProcessLock:
    """An exclusive `flock` on a file, which one process at a time holds: a waiting process is
    woken the moment it is released (and a killed holder releases it). The descriptor is opened
    once per process, since one inherited across fork would share the lock rather than contend
    for it; flock is per open file, so a process's threads must be kept apart by the caller."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._opened: tuple[int, int] | None = None  # (pid, fd)

    def _fd(self) -> int:
        if self._opened is None or self._opened[0] != os.getpid():
            self._opened = (os.getpid(), os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644))
        return self._opened[1]

    def acquire(self, wait: bool = True) -> bool:
        """Take the lock; without `wait`, False at once when another process holds it."""
        try:
            fcntl.flock(self._fd(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            return False
        return True

    def release(self) -> None:
        fcntl.flock(self._fd(), fcntl.LOCK_UN)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
