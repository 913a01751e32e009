"""The durable accumulation of a round's accepted updates: spool replay, checkpoints, the sum.

The collector (server/rounds.py) records each accepted update (SQLite row + spool slot) and hands
it here. For a linear aggregation rule this keeps the round's running weighted sum, in memory
when this process is the only writer and as checkpoints on disk either way, so that the sum of a
round is always "checkpoint + the spooled updates after it" (crash safety: docs/decisions.md).
For a non-linear rule nothing is summed or checkpointed: `aggregate` replays every recorded
update of the round from its spool file into the rule.

Checkpoints are double-buffered files in `sums/` (`ckpt-0.f64`, `ckpt-1.f64`); the store
records which one holds the round's sum up to which update. One process at a time writes them
(a thread lock and an flock, both taken without waiting).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import numpy as np

from fedcore.aggregator import Aggregator
from fedcore.messages import Aggregate
from fedmath.aggregate import RunningSum
from fedmath.types import Shapes, Weights
from server import files, reputation, validation
from server.storage import Round, StoreQueries, UpdateRecord

log = logging.getLogger("fedkeys.server")


@dataclass
class _SumCache:
    round: int
    seq: int  # the last update (by seq) included
    rs: RunningSum
    flat: np.ndarray  # the float64 buffer rs.sums are views of (reused when the sum is rebuilt)


class RoundSum:
    """A round's accepted updates, accumulated durably for one aggregation rule.

    Args:
        store: the collector's SQLite store (rounds, update records, checkpoints).
        slots: the spool slots the updates' payloads lie in.
        aggregator: the round's rule; linear rules are summed and checkpointed as they arrive.
        shapes: the model's tensor shapes.
        sums_dir: where checkpoint files go.
        checkpoint_every: write a checkpoint every this many accepted updates.
        shared: other processes record updates into the same state directory, so no process
            keeps a current sum: checkpoints are built from the spool (`build_checkpoint`).
        fsync: fsync every write (durability "power").
    """

    def __init__(self, store: StoreQueries, slots: files.SpoolSlots, aggregator: Aggregator, shapes: Shapes,
                 sums_dir: str, checkpoint_every: int, shared: bool, fsync: bool) -> None:
        self.store, self.slots, self.aggregator = store, slots, aggregator
        self.shapes = [tuple(s) for s in shapes]
        self.dim = int(sum(int(np.prod(s)) for s in self.shapes))
        self.sums_dir, self.checkpoint_every, self.shared, self.fsync = sums_dir, checkpoint_every, shared, fsync
        self._cache: Optional[_SumCache] = None
        self._build_lock = threading.Lock()  # one checkpoint writer at a time in this process...
        self._build_flock = files.ProcessLock(os.path.join(sums_dir, ".build.lock"))  # ...and across them
        self._build_flat: np.ndarray | None = None  # the build's float64 sum

    def forget(self) -> None:
        """Drop this process's in-memory sum (a transaction that added to it rolled back, or the
        round closed): the next add or aggregate starts again from the round's checkpoint."""
        self._cache = None

    def add(self, c: Any, rnd: Round, seq: int, update: Weights, weight: float) -> bool:
        """Add a just-recorded update (seq) to this worker's sum when that sum is current, and
        checkpoint when one is due (inside the write lock; `rnd` is the round before it).
        Shared: nothing here; returns whether a checkpoint build is due (after the commit)."""
        if not self.aggregator.linear:
            return False  # the rule needs each update at the close: no running sum, no checkpoint
        due = rnd.reports + 1 - rnd.ckpt_count >= self.checkpoint_every
        if self.shared:
            return due
        cache = self._cache
        if rnd.reports == 0 and (cache is None or cache.round != rnd.round):  # the round's first update
            cache = self._rebuild(rnd)
        if cache is not None and cache.round == rnd.round and cache.rs.count == rnd.reports:
            self.aggregator.add(cache.rs, update, weight)
            cache.seq = seq
        # else another worker added since: this sum still holds exactly the updates up to
        # cache.seq, and catches up from the spool when a checkpoint is due
        if due:
            with self._building() as mine:
                if mine:  # else a shared-mode build elsewhere writes checkpoint files now: next time
                    self._checkpoint(c, rnd, self._sum_upto(c, rnd, seq))
        return False

    def build_checkpoint(self, number: int) -> None:
        """Shared mode: fold the round's spooled updates into a new checkpoint, reading and adding
        them outside the write lock, so the other workers go on recording uploads meanwhile.

        Several processes accept updates, so none keeps a current sum in memory (each would add
        every update, its own and, read back from the spool, everyone else's). Instead one
        process at a time (an flock, taken without waiting: a busy builder means one is
        running) sums the latest checkpoint and the updates recorded after it, in recorded order,
        exactly as `_sum_upto` would, writes the checkpoint file the store does not point at, and
        commits it only if the round is still open and no other checkpoint was committed
        meanwhile. A spool file is reused only after a checkpoint commit or the round's close has
        dropped its record's reference, and both make this commit refuse, so a file read while
        being overwritten never reaches a checkpoint."""
        with self._building() as mine:
            if not mine:
                return
            try:
                self._build(number)
            except (OSError, ValueError):  # a spool file gone or resized: the round closed under the build
                log.warning("checkpoint build for round %d dropped", number, exc_info=True)

    @contextlib.contextmanager
    def _building(self) -> Iterator[bool]:
        """The right to write checkpoint files, taken without waiting: yields whether it was had.
        Builds hold it while they read and write; the inline checkpoint of a worker that is alone
        takes it too, so no two writers ever share a checkpoint file."""
        if not self._build_lock.acquire(blocking=False):
            yield False
            return
        try:
            mine = self._build_flock.acquire(wait=False)
            try:
                yield mine
            finally:
                if mine:
                    self._build_flock.release()
        finally:
            self._build_lock.release()

    def _build(self, number: int) -> None:
        c = self.store.conn()
        rnd = self.store.get_round(number, c)
        if rnd is None or rnd.state != "open":
            return
        records = self.store.updates_between(c, number, rnd.ckpt_seq)
        if not records or any(rec.spool is None for rec in records):
            return  # nothing to fold, or the round closed while it was read
        if self._build_flat is None:
            self._build_flat = np.empty(self.dim, "<f8")
        rs = self._from_checkpoint(rnd, self._build_flat)
        for rec in records:
            self._add_spooled(rs, rec)
        path = self._write_checkpoint(rnd, self._build_flat)
        with self.store.write() as c:
            latest = self.store.get_round(number, c)
            if latest is None or latest.state != "open" or latest.ckpt_seq != rnd.ckpt_seq:
                return  # closed, or checkpointed by someone else: this sum may hold a torn read
            self._point_at_checkpoint(c, number, rnd.ckpt_seq, records[-1].seq, path, rs)

    def _sum_upto(self, c: Any, rnd: Round, upto_seq: int) -> _SumCache:
        """The round's running sum over its updates with seq <= upto_seq (inside the write lock):
        this worker's sum if no later checkpoint replaced it, else the checkpoint, plus the
        spooled updates after it."""
        cache = self._cache
        if cache is None or cache.round != rnd.round or cache.seq < rnd.ckpt_seq or cache.seq > upto_seq:
            cache = self._rebuild(rnd)
        for rec in self.store.updates_between(c, rnd.round, cache.seq, upto_seq):
            self._add_spooled(cache.rs, rec)
            cache.seq = rec.seq
        return cache

    def _rebuild(self, rnd: Round) -> _SumCache:
        """This worker's sum set to the round's checkpoint (zeros before the first one), in the
        float64 buffer of the sum it replaces when there is one (no new 8-bytes-per-value array
        each time another worker's checkpoint makes this one stale)."""
        old = self._cache
        flat = old.flat if old is not None else np.empty(self.dim, "<f8")
        self._cache = old = None
        self._cache = _SumCache(rnd.round, rnd.ckpt_seq, self._from_checkpoint(rnd, flat), flat)
        return self._cache

    def _from_checkpoint(self, rnd: Round, flat: np.ndarray) -> RunningSum:
        """A running sum over `flat` (float64, the model's size) holding the round's checkpoint
        (zeros before the first one)."""
        if rnd.ckpt_path:
            files.read_sums_into(rnd.ckpt_path, flat)
        else:
            flat.fill(0.0)
        return RunningSum(files.tensor_views(flat, self.shapes), rnd.ckpt_weight, rnd.ckpt_count)

    def _add_spooled(self, rs: RunningSum, rec: UpdateRecord) -> None:
        """Add a recorded update to `rs` from its spool file, as it entered the sum when accepted."""
        self.aggregator.add(rs, validation.prepared(self.read_spool(rec.spool), rec.clip_to), rec.weight)

    def read_spool(self, name: str) -> Weights:
        """A spooled update (float32, validated when it was accepted) as tensors viewing the
        spool file in place (`SpoolSlots.view`; OSError if it is gone, ValueError if cut)."""
        view = self.slots.view(name, 4 * self.dim)
        return files.tensor_views(np.frombuffer(view, dtype="<f4"), self.shapes)

    def _checkpoint(self, c: Any, rnd: Round, cache: _SumCache) -> None:
        """Checkpoint this worker's sum inside the write lock."""
        self._point_at_checkpoint(c, rnd.round, rnd.ckpt_seq, cache.seq, self._write_checkpoint(rnd, cache.flat), cache.rs)

    def _write_checkpoint(self, rnd: Round, flat: np.ndarray) -> str:
        """Write a sum to the checkpoint file the round's record does not point at (double
        buffering: a crash mid-write leaves the recorded checkpoint intact); returns its path."""
        current = os.path.basename(rnd.ckpt_path or "")
        path = os.path.join(self.sums_dir, "ckpt-1.f64" if current == "ckpt-0.f64" else "ckpt-0.f64")
        files.write_sums(path, [flat], self.fsync)
        return path

    def _point_at_checkpoint(self, c: Any, number: int, after: int, seq: int, path: str, rs: RunningSum) -> None:
        """Record a written checkpoint, holding the updates up to seq, as the round's in place of
        the one up to `after` (inside the write lock)."""
        self.store.set_checkpoint(c, number, seq, path, rs.total_weight, rs.count)
        self.store.clear_spools(c, number, after, seq)  # their slots may be reused from now on

    def aggregate(self, c: Any, rnd: Round) -> Aggregate:
        """The round's aggregate (inside the write lock): a linear rule's running sum, or for a
        non-linear rule every recorded update replayed from its spool file in recorded order."""
        if self.aggregator.linear:
            cache = self._sum_upto(c, rnd, self.store.last_seq(c, rnd.round))
            return self.aggregator.result(cache.rs)
        state = self.aggregator.init([np.zeros(s, np.float32) for s in self.shapes])
        tracks = self.aggregator.tracks_devices  # a rule that screens devices (fedcore.anomaly)
        if tracks:
            reputation.bind(c, self.aggregator)
        for rec in self.store.updates_between(c, rnd.round, -1):
            update = validation.prepared(self.read_spool(rec.spool), rec.clip_to)
            self.aggregator.add_from(state, rec.device_id, update, rec.weight)
        aggregate = self.aggregator.result(state)
        if tracks:
            reputation.record(c, rnd.round, state)
        return aggregate
