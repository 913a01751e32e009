"""Secure rounds on the collector: the four SecAgg+ stages (secagg/server.py) over HTTP, durable
in SQLite, for the collector's open round when `secagg.enabled` (docs/http_api.md, "Secure
aggregation").

    check-in (selected) ──> GET  /v1/secagg/<r>            session, quantizer, stage
                            POST /v1/secagg/<r>/keys       signed X25519 keys (JSON) ─┐ stage 0
                            GET  /v1/secagg/<r>/roster     neighbours' keys          ─┘
                            POST /v1/secagg/<r>/shares     AES-GCM shares            ─┐ stage 1
                            GET  /v1/secagg/<r>/inbox      shares sent to it         ─┘
                            POST /v1/secagg/<r>/masked     packed masked vector      ─┐ stage 2
                            GET  /v1/secagg/<r>/survivors  who survived, who dropped ─┘
                            POST /v1/secagg/<r>/unmask     seed and key shares          stage 3
    all answered, or the stage's timeout ──> next stage ... ──> sum ──> the collector publishes

What the collector holds. Every accepted stage message is appended to `secagg_log` (a masked
vector: its file under `secagg/` is written first, then the row commits), and a stage closing is
a row too. The round's state is a pure function of that log, replayed in order: a restart after
kill -9 rebuilds it exactly, and every gunicorn worker catches up by replaying the rows it has
not seen. No row or file holds an unmasked individual update: the log holds public keys,
ciphertexts addressed to devices, masked vectors and shares of seeds, and the result file
`secagg/r<N>.sum` holds the round's ring sum (kept, like the model it made). Masked vectors and
the messages of a round are deleted when it is published or abandoned; their digests stay, so a
late retry is answered as before.

A stage closes when every device it waits on has answered, or after `secagg.stage_timeout_s`
without a new message (an idle timeout: a large cohort that keeps answering is not cut off).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from typing import Any, Callable, Iterator, Optional

import numpy as np

from fedcore.messages import Aggregate, Refusal
from fedcore.secure import SecureSum, build as build_secure
from fedcore.aggregator import Aggregator
from secagg import messages, ring
from secagg.server import ServerRound
from secagg.server import canonical, digest as server_digest
from server import files
from server.settings import Settings
from server.storage import Round, SqliteStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS secagg_rounds (
    round INTEGER PRIMARY KEY,
    session BLOB NOT NULL,               -- 16 random bytes every signature and key derivation names
    graph_seed INTEGER NOT NULL,         -- orders the neighbour graph (secret until the roster)
    max_devices INTEGER NOT NULL,
    noise_std REAL NOT NULL,             -- the plan's per-device noise std (float units)
    opened_at REAL NOT NULL,             -- the first stage's idle clock starts here
    stage_active_at REAL NOT NULL        -- as opened_at (later stage times: the log rows' `at`)
);
CREATE TABLE IF NOT EXISTS secagg_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    round INTEGER NOT NULL,
    kind TEXT NOT NULL,                  -- advertise, share, masked, unmask, or close (a stage closed)
    device_id TEXT,
    body TEXT,                           -- advertise: its JSON; share, unmask: the binary message (a BLOB);
                                         -- masked: NULL, see path; NULL once the round ends
    path TEXT,                           -- masked: the file holding the packed masked vector
    digest TEXT,                         -- sha256 of the message: a retry after the round ended is recognised
    at REAL NOT NULL DEFAULT 0           -- when it was accepted: the open stage idles from its last row
);
CREATE INDEX IF NOT EXISTS secagg_log_round ON secagg_log (round, seq);
"""


class SecureRounds:
    """The secure stages of the collector's rounds (module docstring)."""

    def __init__(self, settings: Settings, store: SqliteStore, inner: Aggregator, dim: int,
                 identity_key: Callable[[str], Optional[str]], shared: bool = True) -> None:
        """`shared`: other processes (gunicorn workers) append to the same log, so every read of
        the round first replays the rows they committed; a lone process's cached round already
        holds every row (each one it commits passes through `_log`), and reads it as it is."""
        self.settings = settings
        self.shared = shared
        self.cfg = settings.secagg
        self.store = store
        self.inner = inner
        self.dim = dim
        self.size = dim + 1  # the model's values and the weight (fedcore.secure)
        self.identity_key = identity_key
        self.issuer = settings.issuer_key if settings.collector.attestation == "required" else None
        self.fsync = settings.collector.durability == "power"
        self.dir = os.path.join(settings.state_dir, "secagg")
        os.makedirs(self.dir, exist_ok=True)
        with store.exclusive():  # outside any transaction; IF NOT EXISTS makes it idempotent
            conn = store.conn()
            conn.executescript(SCHEMA)
            if "at" not in {r[1] for r in conn.execute("PRAGMA table_info(secagg_log)")}:
                conn.execute("ALTER TABLE secagg_log ADD COLUMN at REAL NOT NULL DEFAULT 0")
        self._cache: dict[int, tuple[ServerRound, int]] = {}
        self._rows: dict[int, Any] = {}  # a round's row: its fixed fields never change once written
        self._active: dict[int, float] = {}  # when the open stage last moved, as far as the replay has read
        self._info: tuple[int, dict] = (-1, {})  # a round and its stage info, less the stage
        self._selected: tuple[int, set[str]] = (-1, set())  # a round and its selections seen (never withdrawn)
        self._inserted: Optional[int] = None  # a round row this worker inserted, not known committed
        self._wrote = False  # the open write transaction changed the log or the round's row

    # -- the quantizer all devices of a round share ------------------------------------------
    def max_weight(self) -> float:
        return float(self.inner.weight(self.settings.train.max_examples_per_client or 1))

    def rule(self, max_devices: int, device_noise_std: float) -> SecureSum:
        c, p = self.cfg, self.settings.privacy
        return build_secure(self.inner, c.bits, p.clip_norm, c.coord_bound, max_devices,
                            device_noise_std * float(np.sqrt(max_devices)), self.max_weight())

    # -- state: the log replayed ------------------------------------------------------------
    def _row(self, number: int) -> Optional[Any]:
        """The round's row, for its fixed fields (session, graph seed, sizes); read once."""
        row = self._rows.get(number)
        if row is None:
            row = self.store.conn().execute("SELECT * FROM secagg_rounds WHERE round = ?", (number,)).fetchone()
            if row is not None and number != self._inserted:
                self._rows = {number: row}  # one round at a time
        return row

    def _ensure(self, c: Any, rnd: Round, now: float) -> Any:
        row = self._row(rnd.round)
        if row is None:
            c.execute("INSERT INTO secagg_rounds VALUES (?, ?, ?, ?, ?, ?, ?)",
                      (rnd.round, secrets.token_bytes(16), secrets.randbits(62), rnd.slots, rnd.noise_std, now, now))
            self._inserted = rnd.round  # not cached until its transaction commits (_write)
            self._wrote = True
            row = self._row(rnd.round)
        return row

    def _state(self, number: int) -> ServerRound:
        """The round's ServerRound with every committed log row applied (call under the write lock)."""
        row = self._row(number)
        assert row is not None
        sr, applied = self._cache.get(number, (None, 0))
        if sr is not None and not self.shared:
            return sr
        if sr is None:
            self._active[number] = float(row["stage_active_at"])
            sr = ServerRound(bytes(row["session"]), self.size, self.cfg.bits, int(row["graph_seed"]), self.cfg.dropout,
                             self.identity_key, self.cfg.corrupt, self.cfg.min_devices, self.cfg.security_bits,
                             self.cfg.correctness_bits, self.issuer)
        rows = self.store.conn().execute("SELECT * FROM secagg_log WHERE round = ? AND seq > ? ORDER BY seq",
                                         (number, applied)).fetchall()
        try:
            for r in rows:
                self._apply(sr, r)
                applied = r["seq"]
                self._active[number] = max(self._active[number], float(r["at"]))
        except BaseException:
            self._cache.pop(number, None)
            raise
        self._cache = {number: (sr, applied)}  # one round at a time
        return sr

    def _apply(self, sr: ServerRound, r: Any) -> None:
        kind = r["kind"]
        if kind == "close":
            sr.close_stage()
            if sr.stage == "done":
                self._write_sum(r["round"], sr)
        elif sr.stage == "abandoned":
            return  # no message changes an abandoned round (an upgrade's, below, may have rows after it)
        elif kind == "masked":
            with open(r["path"], "rb") as f:
                sr.masked(r["device_id"], f.read(), r["digest"])
        elif kind == "advertise":
            sr.advertise(r["device_id"], json.loads(r["body"]), r["digest"])
        elif isinstance(r["body"], str):  # share, unmask rows of the first, JSON version of the messages
            sr.abandon("the collector was upgraded during this round: its log holds share or unmask messages of "
                       "the first (JSON) format, which this version reads as binary")
        else:  # share, unmask: the binary message as it came
            getattr(sr, kind)(r["device_id"], bytes(r["body"]), r["digest"])

    def _write_sum(self, number: int, sr: ServerRound) -> None:
        path = self.sum_path(number)
        if not os.path.exists(path):
            assert sr.result is not None
            files.atomic_write(path, [sr.result.astype("<u4").tobytes()], self.fsync)

    def sum_path(self, number: int) -> str:
        return os.path.join(self.dir, f"r{number}.sum")

    @contextlib.contextmanager
    def _write(self) -> Iterator[Any]:
        """The store's write transaction; when it rolls back, what this worker holds in memory
        from it (the replayed round, the stage time, a row it inserted) is dropped with it."""
        self._wrote = False
        try:
            with self.store.write() as c:
                yield c
        except BaseException:
            if self._wrote:  # a refusal that wrote nothing (a device asking too early) keeps them
                self._cache.clear()
                self._active.clear()
                self._rows.clear()
                self._info = (-1, {})
            raise
        self._inserted = None

    def _log(self, c: Any, number: int, kind: str, device_id: Optional[str], now: float,
             body: Optional[str | bytes] = None,
             path: Optional[str] = None, digest: Optional[str] = None) -> None:
        """Append a row the cached round has already applied (and restart the stage's idle clock)."""
        cur = c.execute("INSERT INTO secagg_log (round, kind, device_id, body, path, digest, at) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)", (number, kind, device_id, body, path, digest, now))
        self._wrote = True
        sr, _ = self._cache[number]
        self._cache[number] = (sr, int(cur.lastrowid))
        self._active[number] = now

    # -- stages closing -------------------------------------------------------------------------
    def _advance(self, c: Any, rnd: Round, sr: ServerRound, now: float) -> None:
        """Close stages that have all their answers, or whose timeout passed (after `_state`)."""
        opened = self._active[rnd.round]
        if sr.stage == "advertise" and not sr.advertised:
            return  # the stage's idle clock starts with its first message (the check-ins open the
            # round row, and phones train between check-in and advertising); until then the
            # round's report deadline governs (`outcome`)
        while sr.stage in ("advertise", "share", "masked", "unmask"):
            if sr.stage == "advertise":
                ready = len(sr.advertised) >= rnd.slots or (len(sr.advertised) >= rnd.goal_count
                                                             and len(sr.advertised) >= rnd.selected)
            else:
                ready = sr.all_answered()
            if not ready and now < opened + self.cfg.stage_timeout_s:
                return
            self._log(c, rnd.round, "close", None, now)
            try:
                sr.close_stage()
                if sr.stage == "done":
                    self._write_sum(rnd.round, sr)
            except BaseException:
                self._cache.pop(rnd.round, None)
                raise
            opened = now

    def advance(self, rnd: Round, now: float) -> None:
        """Close the open round's stage if its timeout passed (called on every request, so a stage
        that waits on devices that dropped closes without a message from them)."""
        seen = self._active.get(rnd.round)
        if seen is not None and now < seen + self.cfg.stage_timeout_s:
            return  # the log's last time is at least the one seen: no timeout yet
        cached = self._cache.get(rnd.round)
        if cached is not None and cached[0].stage == "advertise" and not cached[0].advertised:
            return  # no idle clock before the first advertisement (`_advance`); `outcome` replays each request
        if self._row(rnd.round) is None:
            return
        with self._write() as c:  # the replay reads the stage's latest time; _advance closes only past it
            if self._row(rnd.round) is not None:
                self._advance(c, rnd, self._state(rnd.round), now)

    # -- the collector's view -----------------------------------------------------------------
    def outcome(self, rnd: Round, now: float) -> str:
        """"open", "publish" or "abandon" for the collector's round (read in the caller's transaction)."""
        with self.store.exclusive():  # the cached round is replayed by one thread at a time
            if self._row(rnd.round) is None or not self._state(rnd.round).advertised:  # no stage has started
                if rnd.deadline is not None and now > rnd.deadline:
                    return "abandon"
                return "open"
            sr = self._state(rnd.round)
            return {"done": "publish", "abandoned": "abandon"}.get(sr.stage, "open")

    def aggregate(self, rnd: Round, template: list) -> Aggregate:
        sr = self._state(rnd.round)
        assert sr.result is not None
        row = self._row(rnd.round)
        return self.rule(int(row["max_devices"]), float(row["noise_std"])).decode(sr.result, len(sr.u3), template)

    def note(self, rnd: Round) -> str:
        if self._row(rnd.round) is None or not self._state(rnd.round).advertised:
            return "no device advertised keys before the round's deadline"
        return self._state(rnd.round).note

    def weights(self, rnd: Round) -> list[float]:
        """The weights of the round's summed updates, for the privacy accountant: each at most
        max_weight; the secure sum reveals only their total, so each counts as the largest."""
        return [self.max_weight()] * len(self._state(rnd.round).u3)

    def forget(self, c: Any, number: int) -> None:
        """Drop the round's masked vectors and messages (it is published or abandoned); keep each
        message's digest, so a device retrying it later is answered as before."""
        for r in c.execute("SELECT path FROM secagg_log WHERE round = ? AND path IS NOT NULL", (number,)).fetchall():
            files.remove_quietly(r["path"])
        for name in os.listdir(self.dir):  # also a file whose row never committed (a crash between the two)
            if name.startswith(f"r{number}-") and name.endswith(".masked"):
                files.remove_quietly(os.path.join(self.dir, name))
        c.execute("UPDATE secagg_log SET body = NULL, path = NULL WHERE round = ?", (number,))
        c.execute("DELETE FROM secagg_log WHERE round = ? AND kind = 'close'", (number,))
        self._cache.pop(number, None)

    # -- requests -------------------------------------------------------------------------------
    def _member(self, c: Any, device_id: str, number: int, rnd: Optional[Round]) -> Round:
        """The open round `number`, if the device was selected for it."""
        if rnd is None or rnd.round != number or rnd.state != "open":
            raise Refusal("round_closed", f"round {number} is not the open round")
        seen_round, seen = self._selected
        if seen_round != number or device_id not in seen:
            if not self.store.is_selected(number, device_id, c):
                raise Refusal("not_selected", f"device was not selected for round {number}")
            if seen_round != number:
                self._selected = (number, seen := set())  # one round at a time
            seen.add(device_id)
        return rnd

    def _open_round(self, c: Any, device_id: str, number: int, rnd: Optional[Round], now: float
                    ) -> tuple[Round, ServerRound]:
        rnd = self._member(c, device_id, number, rnd)
        self._ensure(c, rnd, now)
        sr = self._state(number)
        self._advance(c, rnd, sr, now)
        return rnd, sr

    @contextlib.contextmanager
    def _read(self, device_id: str, number: int, rnd: Optional[Round]) -> Iterator[ServerRound]:
        """The round replayed for an answer that writes nothing (the stage it reads from has
        closed, or the device waits): this thread alone, no write transaction. A timed-out stage
        was closed by the request's `advance`; a stage whose last answer came closed with it."""
        with self.store.exclusive():
            conn = self.store.conn()
            self._member(conn, device_id, number, rnd)
            if self._row(number) is None:
                raise Refusal("secagg_wait", "no device has opened the round's secure stages yet", retry_after=1)
            yield self._state(number)

    def info(self, device_id: str, number: int, rnd: Optional[Round], now: float) -> dict:
        if self._row(number) is None:  # the first device to ask opens the stages
            with self._write() as c:
                rnd, sr = self._open_round(c, device_id, number, rnd, now)
                stage = sr.stage
        else:
            with self._read(device_id, number, rnd) as sr:
                stage = sr.stage
        if self._info[0] != number:  # the round's row is fixed once written: built once per round
            row = self._row(number)
            q = self.rule(int(row["max_devices"]), float(row["noise_std"])).quantizer
            self._info = (number, {
                "round": number, "session": messages.b64(bytes(row["session"])), "size": self.size,
                "max_weight": self.max_weight(),
                "quantizer": {"bits": q.bits, "clip_norm": q.clip_norm, "coord_bound": q.coord_bound,
                              "max_devices": q.max_devices, "noise_std": q.noise_std},
                "stage_timeout_s": self.cfg.stage_timeout_s})
        return dict(self._info[1], stage=stage)

    def post(self, device_id: str, number: int, rnd: Optional[Round], kind: str, body: Any, now: float) -> dict:
        """A stage message: checked, logged (durable) and answered; the same message again gets the
        same answer."""
        path = logged = None  # the masked vector goes to a file, every other message into the log
        if kind == "masked":
            want = ring.packed_bytes(self.size, self.cfg.bits)
            if len(body) != want:
                raise Refusal("bad_payload", f"a masked vector of {self.size} values of {self.cfg.bits} bits is "
                                             f"{want} bytes, got {len(body)}")
            path = os.path.join(self.dir, f"r{number}-{secrets.token_hex(8)}.masked")
            digest = server_digest(body)
        elif kind == "advertise":
            text = canonical(body)  # what the log holds, and what the digest covers
            logged, digest = text.decode(), server_digest(text)
        else:
            logged = bytes(body)
            digest = server_digest(logged)
        with self._write() as c:
            if rnd is None or rnd.round != number:
                seen = c.execute("SELECT 1 FROM secagg_log WHERE round = ? AND kind = ? AND device_id = ? AND "
                                 "digest = ?", (number, kind, device_id, digest)).fetchone()
                if seen is not None:
                    return {"accepted": True, "stage": "finished"}
            rnd, sr = self._open_round(c, device_id, number, rnd, now)
            try:
                answer = getattr(sr, kind)(device_id, body, digest)
            except Refusal:
                raise
            except BaseException:
                self._cache.pop(number, None)
                raise
            if not answer.get("repeat"):
                try:
                    if path is not None:
                        files.atomic_write(path, [body], self.fsync)
                    self._log(c, number, kind, device_id, now, logged, path, digest)
                except BaseException:
                    self._cache.pop(number, None)
                    files.remove_quietly(path)
                    raise
            self._advance(c, rnd, sr, now)
        answer = dict(answer)
        answer.pop("repeat", None)
        return dict(answer, stage=sr.stage)

    def get(self, device_id: str, number: int, rnd: Optional[Round], what: str, now: float) -> dict | bytes:
        """An answer of the round: `roster` and `inbox` binary, `survivors` JSON (secagg/messages.py)."""
        with self._read(device_id, number, rnd) as sr:
            try:
                return getattr(sr, what)(device_id)
            except Refusal as e:
                if e.code == "secagg_wait":
                    raise Refusal("secagg_wait", e.detail, retry_after=1) from None
                raise
