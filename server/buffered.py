"""The collector under FedBuff (`collector.policy = "fedbuff"`): buffers instead of rounds.

The policy is `fedcore.buffered.BufferedAsync` (Nguyen et al. 2022). Here it is made durable on
the same tables, spool, checkpoints and publication path as synchronous rounds, so the crash
safety argument of server/rounds.py holds unchanged:

    a buffer is a row of `rounds`: opened on model version V, goal_count = K, no deadline
    check-in ──> the device holds an unexpired admission without a report? the same plan
             ──> admissions in flight >= concurrency: 503 round_full with Retry-After
             ──> else admitted into the open buffer (a `selections` row), plan = version V
    upload (header: the buffer it was admitted in, the version it trained) ──>
        staleness tau = latest version - trained version; tau > max_staleness: 409 too_stale
        else one transaction: `updates` row in the OPEN buffer with weight rule(n) * s(tau),
        a `buffered_reports` row (admission -> update, tau), running sum
    K updates in the open buffer ──> publish (rounds.py `_close`: aggregate, optimizer step,
        epsilon for this version) and open the next buffer on the new version

An admission holds a concurrency slot until its report arrives or `collector.report_deadline_s`
passes (a device that dropped out frees it then); a report after that still counts if it is not
too stale. A retried upload is answered from `buffered_reports` (idempotent), whichever buffer
its update went into. The weight stored with an update already carries s(tau), so a restart
that replays the spool, and a non-linear rule that replays every update, weigh it the same.
"""

from __future__ import annotations

import time
from typing import Any, Optional

from fedcore.buffered import BufferedAsync
from fedcore.messages import Refusal
from fedmath import wire
from server import validation
from server.rounds import Collector
from server.storage import Round

SCHEMA = """
CREATE TABLE IF NOT EXISTS buffered_reports (
    admitted_round INTEGER NOT NULL,     -- the buffer open when the device was admitted
    device_id TEXT NOT NULL,
    seq INTEGER NOT NULL,                -- its row in `updates` (whose round is the buffer it joined)
    buffer INTEGER NOT NULL,
    staleness INTEGER NOT NULL,
    factor REAL NOT NULL,                -- s(staleness), already in the update's weight
    PRIMARY KEY (admitted_round, device_id)
);
CREATE INDEX IF NOT EXISTS buffered_reports_buffer ON buffered_reports (buffer);
CREATE INDEX IF NOT EXISTS selections_device ON selections (device_id, selected_at);
CREATE INDEX IF NOT EXISTS selections_at ON selections (selected_at);
"""


class BufferedCollector(Collector):
    """`Collector` with the FedBuff policy; see the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        settings = args[0] if args else kwargs["settings"]
        policy = settings.buffered
        if policy is None:
            raise ValueError(f"BufferedCollector needs collector.policy = 'fedbuff', got {settings.collector.policy!r}")
        self.buffered: BufferedAsync = policy
        self._schema_ready = False
        super().__init__(*args, **kwargs)
        self._ensure_schema()

    def _ensure_schema(self) -> None:
        """Create this policy's table (before any transaction of this object: executescript
        commits whatever transaction its connection has open)."""
        if not self._schema_ready:
            self.store.conn().executescript(SCHEMA)
            self._schema_ready = True

    # -- buffers -------------------------------------------------------------------------------
    def _open_round(self, c: Any, number: int, model_version: int, now: float) -> None:
        self.store.insert_round(c, number, model_version, self.buffered.buffer_size, self.buffered.concurrency,
                                self.buffered.buffer_size, self.dp.plan_noise_std(), now)

    def _outcome(self, rnd: Round, now: float) -> str:
        """Publish at the buffer's K (the count it was opened with); a buffer never expires."""
        return "publish" if rnd.reports >= rnd.goal_count else "open"

    # -- admission -----------------------------------------------------------------------------
    def _held(self, device_id: str, now: float, c: Any = None) -> Optional[Round]:
        """The buffer of the device's unexpired admission that has no report yet, if any."""
        self._ensure_schema()
        row = (c or self.store.conn()).execute(
            "SELECT s.round FROM selections s WHERE s.device_id = ? AND s.selected_at > ? AND NOT EXISTS "
            "(SELECT 1 FROM buffered_reports b WHERE b.admitted_round = s.round AND b.device_id = s.device_id) "
            "ORDER BY s.round DESC LIMIT 1", (device_id, now - self.settings.collector.report_deadline_s)).fetchone()
        return self.store.get_round(int(row[0]), c) if row else None

    def in_flight(self, now: float, c: Any = None) -> int:
        """Admissions that hold a concurrency slot: unexpired and not yet reported."""
        self._ensure_schema()
        row = (c or self.store.conn()).execute(
            "SELECT COUNT(*) FROM selections s WHERE s.selected_at > ? AND NOT EXISTS "
            "(SELECT 1 FROM buffered_reports b WHERE b.admitted_round = s.round AND b.device_id = s.device_id)",
            (now - self.settings.collector.report_deadline_s,)).fetchone()
        return int(row[0])

    def checkin(self, device_id: str, body: Any, now: Optional[float] = None) -> dict:
        ok = self.eligible(body)
        now = time.time() if now is None else now
        rnd = self.tick(now)
        assert rnd is not None
        held = self._held(device_id, now)
        if held is not None:
            return {"round": held.round, "plan": self.plan(held)}
        if self.store.get_update(rnd.round, device_id) is not None:
            raise self._turn_away(device_id, rnd, now, "already_reported",
                                  f"device already reported into buffer {rnd.round}; come back for the next one")
        if not ok:
            raise self._turn_away(device_id, rnd, now, "not_eligible",
                                  "a device takes part only when idle, charging, on an unmetered network, with data")
        with self.store.write() as c:
            rnd = self.store.open_round(c)
            held = self._held(device_id, now, c)
            if held is not None:
                return {"round": held.round, "plan": self.plan(held)}
            if not self.buffered.may_admit(self.in_flight(now, c)):
                raise self._turn_away(device_id, rnd, now, "round_full",
                                      f"all {self.buffered.concurrency} training slots are taken")
            if self.store.is_selected(rnd.round, device_id, c):  # its earlier admission here expired
                c.execute("UPDATE selections SET selected_at = ? WHERE round = ? AND device_id = ?",
                          (now, rnd.round, device_id))
            else:
                self.store.select_device(c, rnd.round, device_id, now, None)  # None: a buffer has no deadline
            rnd = self.store.get_round(rnd.round, c)
        return {"round": rnd.round, "plan": self.plan(rnd)}

    # -- uploads -------------------------------------------------------------------------------
    def _earlier_answer(self, header: wire.UploadHeader, device_id: str, c: Any = None) -> Optional[dict]:
        """The answer a retried upload got (idempotency); Refusal for another upload of the same admission."""
        self._ensure_schema()
        row = (c or self.store.conn()).execute(
            "SELECT u.upload_id, u.round_complete FROM buffered_reports b JOIN updates u ON u.seq = b.seq "
            "WHERE b.admitted_round = ? AND b.device_id = ?", (header.round, device_id)).fetchone()
        if row is None:
            return None
        if row[0] == header.upload_id:
            return {"accepted": True, "round_complete": bool(row[1])}
        raise Refusal("duplicate", f"device {device_id!r} already reported for its admission in buffer "
                                   f"{header.round} with upload_id {row[0]!r}; this upload has {header.upload_id!r}")

    def _staleness(self, header: wire.UploadHeader, device_id: str, admitted: Optional[Round],
                   latest_version: int, selected: bool) -> int:
        """tau of an upload, after the checks of its admission; Refusal when it may not count."""
        if admitted is None or not selected:
            raise Refusal("not_selected", f"device {device_id!r} was not admitted in buffer {header.round}")
        if header.model_version != admitted.model_version:
            raise Refusal("stale_version", f"buffer {header.round} handed out model version "
                                           f"{admitted.model_version}, the update says {header.model_version}")
        tau = self.buffered.staleness_of(admitted.model_version, latest_version)
        if not self.buffered.accepts(tau):
            raise Refusal("too_stale", f"the update was trained on version {admitted.model_version}, {tau} versions "
                                       f"behind the latest {latest_version}; at most {self.buffered.max_staleness}")
        return tau

    def _check_round(self, device_id: str, header: wire.UploadHeader,
                     now: float) -> tuple[Optional[Round], Optional[dict]]:
        """Before the payload is checked: the admission's buffer (its plan's noise), or the earlier answer."""
        self.tick(now)  # a full or expired buffer publishes first, as on any request
        admitted = self.store.get_round(header.round)
        answer = self._earlier_answer(header, device_id)
        if answer is not None:
            return admitted, answer
        self._staleness(header, device_id, admitted, self.store.latest_model().version,
                        self.store.is_selected(header.round, device_id))
        return admitted, None

    def _record(self, device_id: str, checked: validation.CheckedUpdate, slot: str, now: float) -> dict:
        """Commit a checked update into the open buffer, weighted by its staleness."""
        header = checked.header
        update = validation.prepared(checked.update, checked.clip_to)
        for _ in range(8):  # another process may fill the buffer between the tick and the lock
            self.tick(now)
            with self.store.write() as c:
                answer = self._earlier_answer(header, device_id, c)
                if answer is not None:
                    return answer
                buf = self.store.open_round(c)
                if buf.reports >= buf.goal_count:
                    continue  # full: publish it first (the next tick), then add to the next one
                tau = self._staleness(header, device_id, self.store.get_round(header.round, c),
                                      self.store.latest_model(c).version,
                                      self.store.is_selected(header.round, device_id, c))
                if self.store.get_update(buf.round, device_id, c) is not None:
                    raise Refusal("duplicate", f"device {device_id!r} already has an update in buffer {buf.round}")
                factor = self.buffered.weight(tau)
                weight = self.aggregator.weight(header.num_examples) * factor
                complete = buf.reports + 1 >= buf.goal_count
                seq = self.store.insert_update(c, buf.round, device_id, header.upload_id, header.num_examples,
                                               weight, checked.clip_to, checked.norm, slot, now, complete)
                c.execute("INSERT INTO buffered_reports VALUES (?, ?, ?, ?, ?, ?)",
                          (header.round, device_id, seq, buf.round, tau, factor))
                try:
                    build = self.sums.add(c, buf, seq, update, weight)
                except BaseException:
                    self.sums.forget()
                    raise
            if complete:
                self._close(buf.round, time.time())
            elif build:
                self.sums.build_checkpoint(buf.round)
            return {"accepted": True, "round_complete": bool(complete), "staleness": tau}
        raise Refusal("round_full", "the buffer kept filling before this update could join; retry", retry_after=1)

    # -- status --------------------------------------------------------------------------------
    def staleness(self, buffer: int) -> dict:
        """Staleness of the updates in one buffer: count, mean, max, histogram {tau: n}."""
        self._ensure_schema()
        rows = self.store.conn().execute(
            "SELECT staleness, COUNT(*) FROM buffered_reports WHERE buffer = ? GROUP BY staleness ORDER BY staleness",
            (buffer,)).fetchall()
        n = sum(int(r[1]) for r in rows)
        return {"updates": n, "mean": (sum(int(r[0]) * int(r[1]) for r in rows) / n) if n else None,
                "max": int(rows[-1][0]) if rows else None, "histogram": {str(int(r[0])): int(r[1]) for r in rows}}

    def status(self) -> dict:
        out = super().status()
        rnd = out["round"]["round"]
        now = time.time()
        out["policy"] = self.buffered.describe()
        out["buffer"] = {"buffer": rnd, "in_flight": self.in_flight(now), "concurrency": self.buffered.concurrency,
                         "staleness": self.staleness(rnd),
                         "last_published_staleness": self.staleness(rnd - 1) if rnd > 0 else None}
        return out
