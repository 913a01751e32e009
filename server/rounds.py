"""The round lifecycle (Bonawitz et al. 2019): selection, reporting, aggregation, publication.

    check-in ──> selected (up to ceil(goal * over_selection) per round; others get Retry-After)
       │            │ the first selection starts the reporting deadline
       v            v
    upload ──> validation.py ──> spool slot + `updates` row (one SQLite transaction)
                                  └─> running weighted sum (fedmath.aggregate.RunningSum)
    (over HTTP a float32 payload is received into a free spool slot first, then checked there)
    goal_count reports ──> mean delta (+ central noise) ──> server step ──> models/v<N+1>.npz
    deadline passed ──> >= min_reports: publish what arrived; fewer: abandon, keep the model
    either way the next round opens at once.

Crash safety. An accepted update is durable before it is acknowledged: its payload is written to
`spool/` and its record (weight, re-clip, spool name) committed to SQLite. The running sum is
written to `sums/` every `checkpoint_every` updates together with the last sequence number it
covers; spool files it covers are deleted only after that commit. The sum of a round is always
"checkpoint + the spooled updates after it", so a restart after `kill -9` rebuilds it exactly,
counting each accepted update once. Model files are written under a temporary name and renamed
before the transaction that announces them commits.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Optional

import numpy as np

from fedmath import encodings, wire
from fedmath.aggregate import RunningSum, apply_delta
from fedmath.types import Weights
from server import files, pace, validation
from server.bundle import Bundle, load_initial_weights
from server.errors import ApiError
from server.privacy import ServerPrivacy
from server.settings import Settings
from server.storage import Round, SqliteStore, UpdateRecord

if TYPE_CHECKING:
    from server.body import BodyStream

log = logging.getLogger("fedkeys.server")
SPOOL_ENCODING = "float32"  # spooled updates are stored decoded, so a replay needs no codec
ORPHAN_AGE_S = 120.0  # an unreferenced spool file older than this is left over from a crash


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def weights_sha256(weights: Weights) -> str:
    """The ETag of a model version: sha256 of its float32 download payload
    (`encodings.encode_float32`), hashed tensor by tensor instead of joined first."""
    h = hashlib.sha256()
    for w in weights:
        h.update(np.ascontiguousarray(w, dtype="<f4").reshape(-1).view(np.uint8))  # any shape, empty too
    return h.hexdigest()


@dataclass
class _SumCache:
    round: int
    seq: int  # the last update (by seq) included
    rs: RunningSum
    flat: np.ndarray  # the float64 buffer rs.sums are views of (reused when the sum is rebuilt)


class Collector:
    """Owns one state directory; safe to use from many threads and many processes at once."""

    def __init__(self, settings: Settings, bundle: Bundle, store: Optional[SqliteStore] = None,
                 shared: bool = False) -> None:
        """`shared`: other processes (gunicorn workers) accept updates into the same state
        directory, so checkpoints are built from the spool outside the write lock
        (`_build_checkpoint`) rather than kept current in this process's memory."""
        self.settings = settings
        self.shared = shared
        self.bundle = bundle
        self.shapes = list(bundle.shapes)
        self.dim = bundle.num_params
        self.fsync = settings.collector.durability == "power"
        self.dp = ServerPrivacy(settings)
        root = settings.state_dir
        self.models_dir = os.path.join(root, "models")
        self.spool_dir = os.path.join(root, "spool")
        self.sums_dir = os.path.join(root, "sums")
        for d in (root, self.models_dir, self.spool_dir, self.sums_dir):
            os.makedirs(d, exist_ok=True)
        self.store = store or SqliteStore(os.path.join(root, "fedkeys.sqlite3"), fsync=self.fsync)
        self._cache: Optional[_SumCache] = None
        self.slots = files.SpoolSlots(self.spool_dir, self.fsync)
        self._payloads: dict[int, tuple[bytes, str]] = {}
        self._payload_lock = threading.Lock()
        self._build_lock = threading.Lock()  # one checkpoint writer at a time in this process...
        self._build_flock = files.ProcessLock(os.path.join(self.sums_dir, ".build.lock"))  # ...and across them
        self._build_flat: np.ndarray | None = None  # the build's float64 sum
        self.started = time.time()
        self._bootstrap()
        self.cleanup_files(min_age_s=ORPHAN_AGE_S)
        self.tick()

    # -- setup ---------------------------------------------------------------------------------
    def _bootstrap(self) -> None:
        now = time.time()
        with self.store.write() as c:
            latest = self.store.latest_model(c)
            if latest is not None:
                self._check_state_matches_bundle(c)
            if latest is None:
                weights = load_initial_weights(self.bundle)
                path = os.path.join(self.models_dir, "v0.npz")
                files.write_npz(path, self.bundle.names, weights, self.fsync)
                sha = weights_sha256(weights)
                meta = {"version": 0, "round": None, "source": "bundle", "epsilon": None if self.dp.mode == "none" else 0.0,
                        "delta": None, "privacy": self.dp.describe()}
                self.store.insert_model(c, 0, None, path, sha, self.dim, now, 0.0, 0.0, meta)
                self._write_meta(0, meta)
                latest = self.store.latest_model(c)
            if self.store.open_round(c) is None:
                last = self.store.last_round(c)
                self._open_round(c, last.round + 1 if last else 0, latest.version, now)

    def _check_state_matches_bundle(self, c: Any) -> None:
        """Refuse a state directory whose model v0 is not this bundle's initial weights.

        Resuming after a crash reopens the same state with the same bundle; a state left by a
        run with another bundle (another vocabulary, another model) would serve models whose
        shapes the phones' bundle does not have, and every upload would fail to decode.
        """
        v0 = self.store.get_model(0, c)
        sha = weights_sha256(load_initial_weights(self.bundle))
        if v0 is not None and (v0.num_params != self.dim or v0.sha256 != sha):
            raise ValueError(f"the collector state in {self.store.path} was started from another bundle "
                             f"(model v0: {v0.num_params:,} parameters, sha256 {v0.sha256[:12]}; this bundle: "
                             f"{self.dim:,}, {sha[:12]}): use a new state directory, or the bundle it was made for")

    def _open_round(self, c: Any, number: int, model_version: int, now: float) -> None:
        s = self.settings
        self.store.insert_round(c, number, model_version, s.server.goal_count, s.slots, s.min_reports,
                                self.dp.plan_noise_std(), now)

    def _write_meta(self, version: int, meta: dict) -> None:
        import json

        path = os.path.join(self.models_dir, f"v{version}.json")
        files.atomic_write(path, [json.dumps(meta, indent=2, sort_keys=True).encode()], self.fsync)

    def cleanup_files(self, min_age_s: float) -> int:
        """Remove spool slots of dead processes that no record needs, and stray temporary files
        (left by a crash). Slots of live processes are never touched. Returns the count removed."""
        removed = 0
        now = time.time()
        for d in (self.spool_dir, self.sums_dir, self.models_dir):
            for name in os.listdir(d):
                path = os.path.join(d, name)
                if name.startswith(".tmp-"):
                    try:
                        stale = now - os.path.getmtime(path) > min_age_s
                    except FileNotFoundError:
                        continue
                    if stale:
                        files.remove_quietly(path)
                        removed += 1
                    continue
                if d != self.spool_dir or not name.startswith("w"):
                    continue
                try:
                    pid = int(name[1:].split("-", 1)[0])
                except ValueError:
                    continue
                if pid == os.getpid() or files.pid_alive(pid) or self.store.spool_owner(name) is not None:
                    continue
                files.remove_quietly(path)
                removed += 1
        return removed

    # -- devices -------------------------------------------------------------------------------
    def register(self, device_id: Any) -> str:
        if not isinstance(device_id, str) or not 0 < len(device_id) <= 128 or not device_id.isprintable():
            raise ApiError(400, "bad_request", f"device_id must be a printable string of 1 to 128 chars, got {device_id!r}")
        token = secrets.token_urlsafe(32)
        with self.store.write() as c:  # registering again rotates the token (the old one stops working)
            self.store.add_device(c, device_id, token_hash(token), time.time())
        return token

    def authenticate(self, authorization: Optional[str]) -> str:
        """The device id behind an `Authorization: Bearer <token>` header, or ApiError 401."""
        if not authorization or not authorization.startswith("Bearer ") or len(authorization) > 512:
            raise ApiError(401, "unauthorized", "missing 'Authorization: Bearer <token>' header")
        # no cache: a re-registration in another worker revokes the token at once
        device = self.store.device_for_token(token_hash(authorization[len("Bearer "):].strip()))
        if device is None:
            raise ApiError(401, "unauthorized", "unknown or revoked token")
        return device

    # -- check-in ------------------------------------------------------------------------------
    def plan(self, rnd: Round) -> dict:
        s = self.settings.server
        return {
            "round": rnd.round, "model_version": rnd.model_version, "local_epochs": s.local_epochs,
            "batch_size": s.batch_size, "learning_rate": s.learning_rate,
            "clip_norm": self.settings.privacy.clip_norm, "noise_std": rnd.noise_std, "encoding": self.settings.server.encoding,
            "max_examples": s.max_examples, "deadline_unix": rnd.deadline,
        }

    def _turn_away(self, device_id: str, rnd: Round, now: float, code: str, detail: str) -> ApiError:
        s = self.settings
        wait = pace.retry_after(
            device_id, rnd.round, now, base=s.server.retry_after_s, cap=s.collector.max_retry_after_s,
            population=self.store.count_devices(), slots=rnd.slots, goal=rnd.goal_count, reports=rnd.reports,
            first_checkin=(rnd.deadline - s.collector.report_deadline_s) if rnd.deadline else None,
            deadline=rnd.deadline)
        return ApiError(503, code, detail, retry_after=wait)

    def checkin(self, device_id: str, body: Any, now: Optional[float] = None) -> dict:
        if not isinstance(body, dict):
            raise ApiError(400, "bad_request", f"check-in body must be a JSON object, got {type(body).__name__}")
        for key in ("idle", "charging", "unmetered"):
            if not isinstance(body.get(key), bool):
                raise ApiError(400, "bad_request", f"check-in field {key!r} must be a boolean, got {body.get(key)!r}")
        n = body.get("num_examples")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ApiError(400, "bad_request", f"check-in field 'num_examples' must be an integer >= 0, got {n!r}")
        now = time.time() if now is None else now
        rnd = self.tick(now)
        assert rnd is not None
        if self.store.get_update(rnd.round, device_id) is not None:
            raise self._turn_away(device_id, rnd, now, "already_reported",
                                  f"device already reported for round {rnd.round}; come back for the next one")
        if self.store.is_selected(rnd.round, device_id):
            return {"round": rnd.round, "plan": self.plan(rnd)}
        if not (body["idle"] and body["charging"] and body["unmetered"] and n >= 1):
            raise self._turn_away(device_id, rnd, now, "not_eligible",
                                  "a device takes part only when idle, charging, on an unmetered network, with data")
        if rnd.selected >= rnd.slots:
            raise self._turn_away(device_id, rnd, now, "round_full",
                                  f"round {rnd.round} has all its {rnd.slots} devices")
        with self.store.write() as c:
            rnd = self.store.open_round(c)
            if not self.store.is_selected(rnd.round, device_id, c):
                if rnd.selected >= rnd.slots:
                    raise self._turn_away(device_id, rnd, now, "round_full",
                                          f"round {rnd.round} has all its {rnd.slots} devices")
                self.store.select_device(c, rnd.round, device_id, now, now + self.settings.collector.report_deadline_s)
                rnd = self.store.get_round(rnd.round, c)
        return {"round": rnd.round, "plan": self.plan(rnd)}

    # -- models --------------------------------------------------------------------------------
    def model_info(self) -> dict:
        m = self.store.latest_model()
        return {"version": m.version, "sha256": m.sha256, "num_params": m.num_params,
                "epsilon": m.meta.get("epsilon"), "delta": m.meta.get("delta"), "created_unix": m.created_at}

    def model_meta(self, version: int) -> dict:
        m = self.store.get_model(version)
        if m is None:
            raise ApiError(404, "not_found", f"no model version {version}")
        return dict(m.meta, sha256=m.sha256, num_params=m.num_params, created_unix=m.created_at)

    def weights_payload(self, version: int) -> tuple[bytes, str]:
        """The float32 payload of a model version and its sha256 (the ETag)."""
        with self._payload_lock:
            hit = self._payloads.get(version)
        if hit is not None:
            return hit
        m = self.store.get_model(version)
        if m is None:
            raise ApiError(404, "not_found", f"no model version {version}")
        payload = encodings.encode_float32(files.read_npz(m.path, self.bundle.names))
        with self._payload_lock:
            if len(self._payloads) >= 2:
                self._payloads.pop(min(self._payloads))
            self._payloads[version] = (payload, m.sha256)
        return payload, m.sha256

    # -- uploads -------------------------------------------------------------------------------
    def accept(self, device_id: str, url_round: int, body: bytes | memoryview, now: Optional[float] = None) -> dict:
        """Validate an upload and add it to the round; returns the 202 body. Raises ApiError.

        `body` may be a view into a buffer the caller reuses: nothing here keeps it (or the
        decoded update, which views it) after returning."""
        now = time.time() if now is None else now
        current = self.tick(now)  # a full or expired round closes first, as on any request
        header, payload = validation.parse(body, url_round)
        rnd, answer = self._check_round(device_id, header, current, now)
        if answer is not None:
            return answer
        checked = self._check_content(header, payload, rnd)
        slot = self.slots.acquire(self._spool_referenced)
        try:
            spooled = payload if header.encoding == SPOOL_ENCODING else encodings.encode_float32(checked.update)
            self.slots.write(slot, spooled)
            return self._record(device_id, checked, slot, now)
        finally:
            self.slots.release(slot)  # reusable once no committed record needs it (acquire checks)

    def receive(self, device_id: str, url_round: int, body: "BodyStream", now: Optional[float] = None) -> dict:
        """`accept` for a body read from a stream (an HTTP request): the same checks, answers
        and errors. A float32 payload of the model's size is read straight into a free spool
        slot, so it reaches the page cache in one copy and is checked where it lands; any other
        body is read whole and accepted. The whole body is read either way (a connection stays
        usable after a refusal)."""
        buf = body.buffer()
        k = min(wire.PREFIX_BYTES, body.length)
        body.readinto(buf[:k])
        header = None
        try:
            end = wire.PREFIX_BYTES + wire.header_length(buf[:k], body.length)
            body.readinto(buf[k:end])
            header, _ = validation.parse(buf[:end], url_round)
        except (wire.WireError, ApiError):
            pass  # accept() reads the rest and says what is wrong
        if header is None or header.encoding != SPOOL_ENCODING or body.length - end != 4 * self.dim:
            return self.accept(device_id, url_round, body.read_all(), now)
        slot = self.slots.acquire(self._spool_referenced)
        try:
            payload = self.slots.receive(slot, 4 * self.dim, body.readinto)
            now = time.time() if now is None else now
            rnd, answer = self._check_round(device_id, header, self.tick(now), now)
            if answer is not None:
                return answer
            checked = self._check_content(header, payload, rnd)
            return self._record(device_id, checked, slot, now)
        finally:
            self.slots.release(slot)  # a refused payload leaves a free slot: no record points at it

    def _spool_referenced(self, name: str) -> bool:
        return self.store.spool_owner(name) is not None

    def _check_round(self, device_id: str, header: wire.UploadHeader, current: Optional[Round],
                     now: float) -> tuple[Optional[Round], Optional[dict]]:
        """The upload's round, and the earlier answer when this is a retry (validation.check_round)."""
        r = header.round
        rnd = current if current is not None and current.round == r else self.store.get_round(r)
        answer = validation.check_round(header, device_id, rnd, self.store.is_selected(r, device_id),
                                        self.store.get_update(r, device_id), now)
        return rnd, answer

    def _check_content(self, header: wire.UploadHeader, payload: memoryview, rnd: Round) -> validation.CheckedUpdate:
        return validation.check_content(
            header, payload, self.shapes, max_examples=self.settings.server.max_examples,
            clip_norm=self.settings.privacy.clip_norm, noise_std=rnd.noise_std,
            norm_slack=self.settings.server.norm_slack, norm_policy=self.settings.collector.norm_policy)

    def _record(self, device_id: str, checked: validation.CheckedUpdate, slot: str, now: float) -> dict:
        """Commit a checked update whose payload is in its spool slot, and add it to the sum."""
        header = checked.header
        r = header.round
        update = validation.prepared(checked.update, checked.clip_to)
        weight = self.dp.weight(header.num_examples)
        with self.store.write() as c:
            rnd = self.store.get_round(r, c)
            answer = validation.check_round(header, device_id, rnd, self.store.is_selected(r, device_id, c),
                                            self.store.get_update(r, device_id, c), now)
            if answer is not None:
                return answer
            complete = rnd.reports + 1 >= rnd.goal_count
            seq = self.store.insert_update(c, r, device_id, header.upload_id, header.num_examples, weight,
                                           checked.clip_to, checked.norm, slot, now, complete)
            try:
                build = self._add(c, rnd, seq, update, weight)
            except BaseException:
                self._cache = None  # the transaction rolls back; rebuild from disk next time
                raise
        if complete:
            self._close(r, time.time())
        elif build:
            self._build_checkpoint(r)
        return {"accepted": True, "round_complete": bool(complete)}

    def _add(self, c: Any, rnd: Round, seq: int, update: Weights, weight: float) -> bool:
        """Add a just-recorded update (seq) to this worker's sum when that sum is current, and
        checkpoint when one is due (inside the write lock; `rnd` is the round before it).
        Shared: nothing here; returns whether a checkpoint build is due (after the commit)."""
        due = rnd.reports + 1 - rnd.ckpt_count >= self.settings.collector.checkpoint_every
        if self.shared:
            return due
        cache = self._cache
        if rnd.reports == 0 and (cache is None or cache.round != rnd.round):  # the round's first update
            cache = self._rebuild(rnd)
        if cache is not None and cache.round == rnd.round and cache.rs.count == rnd.reports:
            cache.rs.add(update, weight)
            cache.seq = seq
        # else another worker added since: this sum still holds exactly the updates up to
        # cache.seq, and catches up from the spool when a checkpoint is due
        if due:
            with self._building() as mine:
                if mine:  # else a shared-mode build elsewhere writes checkpoint files now: next time
                    self._checkpoint(c, rnd, self._sum_upto(c, rnd, seq))
        return False

    def _build_checkpoint(self, number: int) -> None:
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
        rs.add(validation.prepared(self._read_spool(rec.spool), rec.clip_to), rec.weight)

    def _read_spool(self, name: str) -> Weights:
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

    # -- closing rounds ------------------------------------------------------------------------
    def tick(self, now: float | None = None) -> Round | None:
        """Close the open round if it has its reports or its deadline has passed (any request
        calls this); returns the round open afterwards (read once when nothing had to close)."""
        now = time.time() if now is None else now
        rnd = self.store.open_round()
        if rnd is None:
            return None
        if rnd.reports >= rnd.goal_count or (rnd.deadline is not None and now > rnd.deadline):
            self._close(rnd.round, now)
            return self.store.open_round()
        return rnd

    def _close(self, number: int, now: float) -> None:
        with self.store.write() as c:
            rnd = self.store.get_round(number, c)
            if rnd is None or rnd.state != "open":
                return
            full = rnd.reports >= rnd.goal_count
            if not full and (rnd.deadline is None or now <= rnd.deadline):
                return
            latest = self.store.latest_model(c)
            if full or (rnd.reports >= rnd.min_reports and rnd.reports > 0):
                try:
                    version = self._publish(c, rnd, latest, now)
                except BaseException:
                    self._cache = None
                    raise
                note = "goal reached" if full else f"deadline passed with {rnd.reports} of {rnd.goal_count} reports"
                self.store.finish_round(c, number, "closed", now, version, note)
            else:
                version = latest.version
                self.store.finish_round(c, number, "abandoned", now, None,
                                        f"deadline passed with {rnd.reports} reports, fewer than {rnd.min_reports}")
            self.store.clear_spools(c, number, rnd.ckpt_seq)
            self._open_round(c, number + 1, version, now)
            # inside the lock: cleared after it, this could drop (or, mid-_rebuild, break) the
            # sum another thread has just started for the next round
            self._cache = None

    def _publish(self, c: Any, rnd: Round, latest: Any, now: float) -> int:
        cache = self._sum_upto(c, rnd, self.store.last_seq(c, rnd.round))
        mean = self.dp.mean(cache.rs)
        reports, total_weight = cache.rs.count, cache.rs.total_weight
        del cache
        self._cache = None  # the round's sum is done with: free it before the model is loaded
        old = files.read_npz(latest.path, self.bundle.names)
        beta = self.settings.collector.server_momentum
        version = latest.version + 1
        if beta > 0:
            mpath = os.path.join(self.models_dir, f".momentum-v{latest.version}.npz")
            prev = files.read_npz(mpath, self.bundle.names) if os.path.exists(mpath) else [np.zeros_like(m) for m in mean]
            step = [(beta * p + m).astype(np.float32) for p, m in zip(prev, mean)]
            files.write_npz(os.path.join(self.models_dir, f".momentum-v{version}.npz"), self.bundle.names, step, self.fsync)
        else:
            step = mean
        new = apply_delta(old, step, self.settings.server.server_learning_rate)
        del mean, step, old  # only the new model from here on
        path = os.path.join(self.models_dir, f"v{version}.npz")
        files.write_npz(path, self.bundle.names, new, self.fsync)
        sha = weights_sha256(new)
        population = self.dp.population_size(self.store.count_devices(c))
        q, z = self.dp.round_event(self.store.round_weights(c, rnd.round), population, rnd.noise_std)
        events = self.store.privacy_events(c) + [(q, z)]
        delta = self.dp.delta(population)
        eps = self.dp.epsilon(events, delta)
        meta = {"version": version, "round": rnd.round, "parent_version": latest.version, "reports": reports,
                "total_weight": total_weight, "goal_count": rnd.goal_count, "published_unix": now,
                "sampling_probability": q, "effective_noise_multiplier": z, "epsilon": eps, "delta": delta,
                "population": population,
                "rounds_accounted": len(events), "privacy": self.dp.describe(),
                "server_learning_rate": self.settings.server.server_learning_rate, "server_momentum": beta}
        self._write_meta(version, meta)
        self.store.insert_model(c, version, rnd.round, path, sha, self.dim, now, q, z, meta)
        return version

    # -- status --------------------------------------------------------------------------------
    def status(self) -> dict:
        rnd = self.tick()
        m = self.store.latest_model()
        counts = self.store.round_counts()
        return {
            "round": {"round": rnd.round, "state": rnd.state, "model_version": rnd.model_version,
                      "goal_count": rnd.goal_count, "slots": rnd.slots, "selected": rnd.selected,
                      "reports": rnd.reports, "min_reports": rnd.min_reports, "opened_unix": rnd.opened_at,
                      "deadline_unix": rnd.deadline},
            "model": {"version": m.version, "sha256": m.sha256, "num_params": m.num_params},
            "rounds_closed": counts.get("closed", 0), "rounds_abandoned": counts.get("abandoned", 0),
            "devices": self.store.count_devices(),
            "privacy": dict(self.dp.describe(), epsilon=m.meta.get("epsilon"), delta=m.meta.get("delta"),
                            rounds_accounted=m.meta.get("rounds_accounted", 0)),
            "server_time_unix": time.time(), "uptime_s": time.time() - self.started,
        }
