"""The round lifecycle (Bonawitz et al. 2019): selection, reporting, aggregation, publication.

    check-in ──> selected (up to ceil(goal * over_selection) per round; others get Retry-After)
       │            │ the first selection starts the reporting deadline
       v            v
    upload ──> validation.py ──> spool slot + `updates` row (one SQLite transaction)
                                  └─> linear rule: running weighted sum (fedmath.aggregate.RunningSum)
    (over HTTP a float32 payload is received into a free spool slot first, then checked there)
    goal_count reports ──> aggregate (+ central noise) ──> server optimizer step ──> models/v<N+1>.npz
    deadline passed ──> >= min_reports: publish what arrived; fewer: abandon, keep the model
    either way the next round opens at once.

With `secagg.enabled` a round's reports arrive through the secure stages instead
(server/secure_rounds.py): plain uploads are refused, and the secure round says when the round
publishes (the unmasked sum, decoded by `fedcore.secure.SecureSum`) or is abandoned.

What a round computes is the algorithm core's (fedcore/): the round policy (`SyncRounds`) says
when to select, publish or abandon; the aggregation rule gives each update its weight and makes
the aggregate; the server optimizer (with its state in `models/.opt-v<N>.npz`) takes the step.
This class keeps that durable and concurrent. A non-linear rule needs every update at the close:
its rounds are not checkpointed, and the spooled updates are replayed into the rule then.

Crash safety. An accepted update is durable before it is acknowledged: its payload is written to
`spool/` and its record (weight, re-clip, spool name) committed to SQLite. The running sum is
written to `sums/` every `checkpoint_every` updates together with the last sequence number it
covers; spool files it covers are deleted only after that commit. The sum of a round is always
"checkpoint + the spooled updates after it", so a restart after `kill -9` rebuilds it exactly,
counting each accepted update once. Model files are written under a temporary name and renamed
before the transaction that announces them commits.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from fedcore.algorithm import build as build_algorithm
from fedcore.messages import Plan, Refusal
from fedcore.optimizers import State
from fedmath import encodings, wire
from fedmath.types import Weights
from server import files, pace, validation
from server.bundle import Bundle, load_initial_weights
from server.identity import DeviceRegistry
from server.privacy import ServerPrivacy
from server.round_sum import RoundSum
from server.secure_rounds import SecureRounds
from server.settings import Settings
from server.storage import Round, StoreQueries, open_store

if TYPE_CHECKING:
    from server.body import BodyStream

log = logging.getLogger("fedkeys.server")
SPOOL_ENCODING = "float32"  # spooled updates are stored decoded, so a replay needs no codec
ORPHAN_AGE_S = 120.0  # an unreferenced spool file older than this is left over from a crash


def weights_sha256(weights: Weights) -> str:
    """The ETag of a model version: sha256 of its float32 download payload
    (`encodings.encode_float32`), hashed tensor by tensor instead of joined first."""
    h = hashlib.sha256()
    for w in weights:
        h.update(np.ascontiguousarray(w, dtype="<f4").reshape(-1).view(np.uint8))  # any shape, empty too
    return h.hexdigest()


class Collector:
    """Owns one state directory; safe to use from many threads and many processes at once."""

    def __init__(self, settings: Settings, bundle: Bundle, store: Optional[StoreQueries] = None,
                 shared: bool = False) -> None:
        """`shared`: other processes (gunicorn workers) accept updates into the same state
        directory, so checkpoints are built from the spool outside the write lock
        (`RoundSum.build_checkpoint`) rather than kept current in this process's memory. A
        collector on PostgreSQL (`collector.database`) is always shared: other hosts may be."""
        self.settings = settings
        shared = shared or bool(settings.collector.database)
        self.shared = shared
        self.bundle = bundle
        self.shapes = list(bundle.shapes)
        self.dim = bundle.num_params
        self.fsync = settings.collector.durability == "power"
        self.dp = ServerPrivacy(settings)
        self.policy = settings.rounds
        self.algorithm = build_algorithm(settings.train, dp_noise=settings.dp_noise,
                                         central_noise=self.dp.central_noise(settings.max_examples))
        self.aggregator = self.algorithm.aggregator
        root = settings.state_dir
        self.models_dir = os.path.join(root, "models")
        self.spool_dir = os.path.join(root, "spool")
        self.sums_dir = os.path.join(root, "sums")
        for d in (root, self.models_dir, self.spool_dir, self.sums_dir):
            os.makedirs(d, exist_ok=True)
        self.store = store or open_store(settings.collector.database, root, self.fsync)
        self.identity = DeviceRegistry(settings, self.store)
        self.slots = files.SpoolSlots(self.spool_dir, self.fsync)
        self.sums = RoundSum(self.store, self.slots, self.aggregator, self.shapes, self.sums_dir,
                             settings.collector.checkpoint_every, shared, self.fsync)
        self.secure = (SecureRounds(settings, self.store, self.aggregator, self.dim, self._device_key, shared)
                       if settings.secagg.enabled else None)
        self._payloads: dict[int, tuple[bytes, str]] = {}
        self._payload_lock = threading.Lock()
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
                if files.slot_host(name) not in (None, files.HOST_TAG):
                    continue  # another host's slot: that host cleans it
                try:
                    pid = int(name[1:].split("-", 1)[0])
                except ValueError:
                    continue
                if pid == os.getpid() or files.pid_alive(pid) or self.store.spool_owner(name) is not None:
                    continue
                files.remove_quietly(path)
                removed += 1
        return removed

    # -- devices (server/identity.py) ----------------------------------------------------------
    def register(self, device_id: Any, body: Optional[dict] = None) -> str:
        """A token for a registration body (`{"device_id": ...}` plus the proof, see identity.py)."""
        return self.identity.register(dict(body or {}, device_id=device_id))

    def authenticate(self, authorization: Optional[str], limiter: Any) -> tuple[str, Optional[int]]:
        """The device id behind an `Authorization: Bearer <token>` header (else Refusal
        "unauthorized"), and the seconds its rate limit asks it to wait (None: go on)."""
        return self.identity.authenticate_paced(authorization, limiter)

    def _device_key(self, device_id: str) -> Optional[str]:
        device = self.store.get_device(device_id)
        return device.public_key if device is not None else None

    # -- check-in ------------------------------------------------------------------------------
    def plan(self, rnd: Round) -> dict:
        t = self.settings.train
        return Plan(round=rnd.round, model_version=rnd.model_version, local_epochs=t.local_epochs,
                    batch_size=t.batch_size, learning_rate=t.client_learning_rate,
                    clip_norm=self.settings.privacy.clip_norm, noise_std=rnd.noise_std,
                    encoding=self.settings.server.encoding, max_examples=t.max_examples_per_client,
                    deadline_unix=rnd.deadline or 0.0, grad_clip=t.client_grad_clip).to_json()

    def _turn_away(self, device_id: str, rnd: Round, now: float, code: str, detail: str) -> Refusal:
        s = self.settings
        wait = pace.retry_after(
            device_id, rnd.round, now, base=s.server.retry_after_s, cap=s.collector.max_retry_after_s,
            population=self.store.count_devices(), slots=rnd.slots, goal=rnd.goal_count, reports=rnd.reports,
            first_checkin=(rnd.deadline - s.collector.report_deadline_s) if rnd.deadline else None,
            deadline=rnd.deadline)
        return Refusal(code, detail, retry_after=wait)

    @staticmethod
    def eligible(body: Any) -> bool:
        """Whether a check-in body says the device may train now (Refusal for a malformed one)."""
        if not isinstance(body, dict):
            raise Refusal("bad_request", f"check-in body must be a JSON object, got {type(body).__name__}")
        for key in ("idle", "charging", "unmetered"):
            if not isinstance(body.get(key), bool):
                raise Refusal("bad_request", f"check-in field {key!r} must be a boolean, got {validation.shown(body.get(key))}")
        n = body.get("num_examples")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise Refusal("bad_request", f"check-in field 'num_examples' must be an integer >= 0, got {validation.shown(n)}")
        return bool(body["idle"] and body["charging"] and body["unmetered"] and n >= 1)

    def checkin(self, device_id: str, body: Any, now: Optional[float] = None) -> dict:
        ok = self.eligible(body)
        now = time.time() if now is None else now
        rnd = self.tick(now)
        assert rnd is not None
        if self.store.get_update(rnd.round, device_id) is not None:
            raise self._turn_away(device_id, rnd, now, "already_reported",
                                  f"device already reported for round {rnd.round}; come back for the next one")
        if self.store.is_selected(rnd.round, device_id):
            return self._selected(device_id, rnd, now)
        if not ok:
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
        return self._selected(device_id, rnd, now)

    def _selected(self, device_id: str, rnd: Round, now: float) -> dict:
        """A selected device's answer; in a secure round it carries the round's secure-stage info
        (GET /v1/secagg/<r>), which saves the device that request."""
        if self.secure is None:
            return {"round": rnd.round, "plan": self.plan(rnd), "secure": False}
        return {"round": rnd.round, "plan": self.plan(rnd), "secure": True,
                "secagg": self.secure.info(device_id, rnd.round, rnd, now)}

    # -- models --------------------------------------------------------------------------------
    def model_info(self) -> dict:
        m = self.store.latest_model()
        return {"version": m.version, "sha256": m.sha256, "num_params": m.num_params,
                "epsilon": m.meta.get("epsilon"), "delta": m.meta.get("delta"), "created_unix": m.created_at}

    def model_meta(self, version: int) -> dict:
        m = self.store.get_model(version)
        if m is None:
            raise Refusal("not_found", f"no model version {version}")
        return dict(m.meta, sha256=m.sha256, num_params=m.num_params, created_unix=m.created_at)

    def weights_payload(self, version: int) -> tuple[bytes, str]:
        """The float32 payload of a model version and its sha256 (the ETag)."""
        with self._payload_lock:
            hit = self._payloads.get(version)
        if hit is not None:
            return hit
        m = self.store.get_model(version)
        if m is None:
            raise Refusal("not_found", f"no model version {version}")
        payload = encodings.encode_float32(files.read_npz(m.path, self.bundle.names))
        with self._payload_lock:
            if len(self._payloads) >= 2:
                self._payloads.pop(min(self._payloads))
            self._payloads[version] = (payload, m.sha256)
        return payload, m.sha256

    # -- uploads -------------------------------------------------------------------------------
    def accept(self, device_id: str, url_round: int, body: bytes | memoryview, now: Optional[float] = None) -> dict:
        """Validate an upload and add it to the round; returns the 202 body. Raises Refusal.

        `body` may be a view into a buffer the caller reuses: nothing here keeps it (or the
        decoded update, which views it) after returning."""
        now = time.time() if now is None else now
        if self.secure is not None:
            self.tick(now)  # a full or expired round closes, as on any request
            raise Refusal("secure_only", "this collector takes updates only through the secure stages (/v1/secagg)")
        header, payload = validation.parse(body, url_round)
        rnd, answer = self._check_round(device_id, header, now)
        if answer is not None:
            return answer
        checked = self._check_content(header, payload, rnd)
        slot = self.slots.acquire(self.store.referenced_spools)
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
        if self.secure is not None:
            return self.accept(device_id, url_round, body.read_all(), now)
        buf = body.buffer()
        k = min(wire.PREFIX_BYTES, body.length)
        body.readinto(buf[:k])
        header = None
        try:
            end = wire.PREFIX_BYTES + wire.header_length(buf[:k], body.length)
            body.readinto(buf[k:end])
            header, _ = validation.parse(buf[:end], url_round)
        except (wire.WireError, Refusal):
            pass  # accept() reads the rest and says what is wrong
        if header is None or header.encoding != SPOOL_ENCODING or body.length - end != 4 * self.dim:
            return self.accept(device_id, url_round, body.read_all(), now)
        slot = self.slots.acquire(self.store.referenced_spools)
        try:
            payload = self.slots.receive(slot, 4 * self.dim, body.readinto)
            now = time.time() if now is None else now
            rnd, answer = self._check_round(device_id, header, now)
            if answer is not None:
                return answer
            checked = self._check_content(header, payload, rnd)
            return self._record(device_id, checked, slot, now)
        finally:
            self.slots.release(slot)  # a refused payload leaves a free slot: no record points at it

    def _check_round(self, device_id: str, header: wire.UploadHeader,
                     now: float) -> tuple[Optional[Round], Optional[dict]]:
        """The upload's round, and the earlier answer when this is a retry (validation.check_round).

        This is also the upload's `tick`: when the upload names the open round and it is not due
        to close, the one read that the checks need has shown all that `tick` would read; else
        the full `tick` runs (a full or expired round closes first, as on any request) and the
        state is read again."""
        rnd, selected, existing = self.store.upload_state(header.round, device_id)
        if rnd is None or rnd.state != "open" or self._outcome(rnd, now) != "open":
            self.tick(now)
            rnd, selected, existing = self.store.upload_state(header.round, device_id)
        return rnd, validation.check_round(header, device_id, rnd, selected, existing, now)

    def _check_content(self, header: wire.UploadHeader, payload: memoryview, rnd: Round) -> validation.CheckedUpdate:
        return validation.check_content(
            header, payload, self.shapes, max_examples=self.settings.max_examples,
            clip_norm=self.settings.privacy.clip_norm, noise_std=rnd.noise_std,
            norm_slack=self.settings.server.norm_slack, norm_policy=self.settings.collector.norm_policy)

    def _record(self, device_id: str, checked: validation.CheckedUpdate, slot: str, now: float) -> dict:
        """Commit a checked update whose payload is in its spool slot, and add it to the sum."""
        header = checked.header
        r = header.round
        update = validation.prepared(checked.update, checked.clip_to)
        weight = self.aggregator.weight(header.num_examples)
        with self.store.write() as c:
            rnd, selected, existing = self.store.upload_state(r, device_id, c)
            answer = validation.check_round(header, device_id, rnd, selected, existing, now)
            if answer is not None:
                return answer
            complete = rnd.reports + 1 >= rnd.goal_count
            seq = self.store.insert_update(c, r, device_id, header.upload_id, header.num_examples, weight,
                                           checked.clip_to, checked.norm, slot, now, complete)
            try:
                build = self.sums.add(c, rnd, seq, update, weight)
            except BaseException:
                self.sums.forget()  # the transaction rolls back; rebuild from disk next time
                raise
        if complete:
            self._close(r, time.time())
        elif build:
            self.sums.build_checkpoint(r)
        return {"accepted": True, "round_complete": bool(complete)}

    # -- closing rounds ------------------------------------------------------------------------
    def tick(self, now: float | None = None) -> Round | None:
        """Close the open round if it has its reports or its deadline has passed (any request
        calls this); returns the round open afterwards (read once when nothing had to close)."""
        now = time.time() if now is None else now
        rnd = self.store.open_round()
        if rnd is None:
            return None
        if self.secure is not None:
            self.secure.advance(rnd, now)
        if self._outcome(rnd, now) != "open":
            self._close(rnd.round, now)
            return self.store.open_round()
        return rnd

    def _outcome(self, rnd: Round, now: float) -> str:
        """The policy's verdict on a round, by the counts it was opened with (a restart with
        other settings does not change a round already open)."""
        if self.secure is not None:
            return self.secure.outcome(rnd, now)
        policy = self.policy
        if (rnd.goal_count, rnd.min_reports) != (policy.goal_count, policy.publish_at):
            policy = dataclasses.replace(policy, goal_count=rnd.goal_count, min_reports=rnd.min_reports)
        return policy.outcome(rnd.reports, rnd.deadline, now)

    def _close(self, number: int, now: float) -> None:
        with self.store.write() as c:
            rnd = self.store.get_round(number, c)
            if rnd is None or rnd.state != "open":
                return
            outcome = self._outcome(rnd, now)
            if outcome == "open":
                return
            full = rnd.reports >= rnd.goal_count
            latest = self.store.latest_model(c)
            if outcome == "publish":
                try:
                    version = self._publish(c, rnd, latest, now)
                except BaseException:
                    self.sums.forget()
                    raise
                note = "goal reached" if full else f"deadline passed with {rnd.reports} of {rnd.goal_count} reports"
                if self.secure is not None:
                    note = self.secure.note(rnd)
                self.store.finish_round(c, number, "closed", now, version, note)
            else:
                version = latest.version
                self.store.finish_round(c, number, "abandoned", now, None, self.secure.note(rnd) if self.secure else
                                        f"deadline passed with {rnd.reports} reports, fewer than {rnd.min_reports}")
            if self.secure is not None:
                self.secure.forget(c, number)
            self.store.clear_spools(c, number, rnd.ckpt_seq)
            self._open_round(c, number + 1, version, now)
            # inside the lock: cleared after it, this could drop (or, mid-_rebuild, break) the
            # sum another thread has just started for the next round
            self.sums.forget()

    def _publish(self, c: Any, rnd: Round, latest: Any, now: float) -> int:
        aggregate = (self.secure.aggregate(rnd, [np.empty(s, np.float32) for s in self.shapes]) if self.secure is not None
                     else self.sums.aggregate(c, rnd))
        self.sums.forget()  # the round's sum is done with: free it before the model is loaded
        old = files.read_npz(latest.path, self.bundle.names)
        state = self._optimizer_state(latest.version, old)
        lr = self.algorithm.lr(int(state["step"]))
        state, new = self.algorithm.apply(state, old, aggregate)
        del old
        version = latest.version + 1
        files.write_arrays(self._optimizer_path(version), state, self.fsync)
        path = os.path.join(self.models_dir, f"v{version}.npz")
        files.write_npz(path, self.bundle.names, new, self.fsync)
        sha = weights_sha256(new)
        del new, state
        population = self.dp.population_size(self.store.count_devices(c, attested_only=True))
        weights = self.secure.weights(rnd) if self.secure is not None else self.store.round_weights(c, rnd.round)
        q, z = self.dp.round_event(weights, population, rnd.noise_std)
        events = self.store.privacy_events(c) + [(q, z)]
        delta = self.dp.delta(population)
        eps = self.dp.epsilon(events, delta)
        meta = {"version": version, "round": rnd.round, "parent_version": latest.version,
                "reports": aggregate.reports, "total_weight": aggregate.total_weight, "goal_count": rnd.goal_count,
                "published_unix": now, "sampling_probability": q, "effective_noise_multiplier": z, "epsilon": eps,
                "delta": delta, "population": population, "rounds_accounted": len(events),
                "rho": self.dp.rho(events), "epsilon_unamplified": self.dp.epsilon_unamplified(events, delta),
                "privacy": self.dp.describe(), "algorithm": self.algorithm.describe(), "server_learning_rate": lr}
        self._write_meta(version, meta)
        self.store.insert_model(c, version, rnd.round, path, sha, self.dim, now, q, z, meta)
        return version

    def _optimizer_path(self, version: int) -> str:
        return os.path.join(self.models_dir, f".opt-v{version}.npz")

    def _optimizer_state(self, version: int, weights: Weights) -> State:
        """The server optimizer's state after model `version` was published (fresh at v0, or
        when none fits: zero slots, its step count at `version`)."""
        path = self._optimizer_path(version)
        if os.path.exists(path):
            state = files.read_arrays(path)
            if self.algorithm.optimizer.fits(state, weights):
                return state
            log.warning("%s is not %s's state for this model (the state directory ran another server "
                        "optimizer): starting it afresh", path, self.algorithm.optimizer.name)
        state = self.algorithm.init_state(weights)
        state["step"] = np.asarray(version, np.int64)
        return state

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
            "devices": self.store.count_devices(), "attested_devices": self.store.count_devices(attested_only=True),
            "algorithm": self.algorithm.describe(),
            "privacy": dict(self.dp.describe(), epsilon=m.meta.get("epsilon"), delta=m.meta.get("delta"),
                            rounds_accounted=m.meta.get("rounds_accounted", 0)),
            "server_time_unix": time.time(), "uptime_s": time.time() - self.started,
        }
