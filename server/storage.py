"""The collector's durable state in SQLite (WAL): devices, rounds, selections, accepted-update
records, model versions and request counters.

Concurrency: every change runs inside `store.write()`, which takes a per-process lock and then
SQLite's `BEGIN IMMEDIATE`, the database-wide write lock. Every gunicorn worker and thread
therefore changes rounds one at a time and always sees the others' committed changes, while
reads (WAL) never block. The collector keeps nothing authoritative in memory: a worker's cached
running sum is checked against the `updates` table inside the write lock before it is used.

The rest of the server calls only the methods of `StoreQueries` plus `conn()`, `write()` and
`exclusive()`. `StoreQueries` holds every statement, in SQL both SQLite and PostgreSQL run (`?`
placeholders, `ON CONFLICT`, `RETURNING`); `SqliteStore` here and `PostgresStore`
(server/storage_pg.py, a database shared by several collector hosts) differ only in how they
connect and lock. `open_store` picks one from `collector.database`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Protocol, Sequence

from server.files import ProcessLock

SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL UNIQUE,
    registered_at REAL NOT NULL,
    public_key TEXT,                     -- Ed25519, hex: re-registering this id needs its proof
    attestation_id TEXT,                 -- the attested physical device (from the certificate)
    attested INTEGER NOT NULL DEFAULT 0, -- 1: registered with a certificate the issuer signed
    token_expires REAL                   -- NULL: the token does not expire
);
CREATE TABLE IF NOT EXISTS used_nonces (
    nonce TEXT PRIMARY KEY,              -- registration nonces already spent, until they expire
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS server_secrets (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY,
    model_version INTEGER NOT NULL,
    state TEXT NOT NULL,                 -- open, closed, abandoned
    goal_count INTEGER NOT NULL,
    slots INTEGER NOT NULL,
    min_reports INTEGER NOT NULL,
    noise_std REAL NOT NULL,
    opened_at REAL NOT NULL,
    deadline REAL,                       -- set by the first accepted check-in
    closed_at REAL,
    selected INTEGER NOT NULL DEFAULT 0,
    reports INTEGER NOT NULL DEFAULT 0,
    ckpt_seq INTEGER NOT NULL DEFAULT 0, -- the checkpoint holds every update with seq <= ckpt_seq
    ckpt_path TEXT,
    ckpt_weight REAL NOT NULL DEFAULT 0,
    ckpt_count INTEGER NOT NULL DEFAULT 0,
    published_version INTEGER,
    note TEXT
);
CREATE TABLE IF NOT EXISTS selections (
    round INTEGER NOT NULL,
    device_id TEXT NOT NULL,
    selected_at REAL NOT NULL,
    PRIMARY KEY (round, device_id)
);
CREATE TABLE IF NOT EXISTS updates (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    round INTEGER NOT NULL,
    device_id TEXT NOT NULL,
    upload_id TEXT NOT NULL,
    num_examples INTEGER NOT NULL,
    weight REAL NOT NULL,                -- its weight in the running sum
    clip_to REAL,                        -- re-clipped to this norm on acceptance (NULL: as sent)
    norm REAL NOT NULL,
    spool TEXT,                          -- the accepted payload, until a checkpoint covers it
    received_at REAL NOT NULL,
    round_complete INTEGER NOT NULL,     -- the answer the upload got, repeated on a retry
    UNIQUE (round, device_id)
);
CREATE INDEX IF NOT EXISTS updates_spool ON updates (spool);
CREATE TABLE IF NOT EXISTS models (
    version INTEGER PRIMARY KEY,
    round INTEGER,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    num_params INTEGER NOT NULL,
    created_at REAL NOT NULL,
    q REAL NOT NULL DEFAULT 0,           -- sampling probability of the round that made it
    z REAL NOT NULL DEFAULT 0,           -- its effective noise multiplier
    meta TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    pid INTEGER NOT NULL,
    name TEXT NOT NULL,
    labels TEXT NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (pid, name, labels)
);
"""


DEVICE_COLUMNS = (("public_key", "TEXT"), ("attestation_id", "TEXT"), ("attested", "INTEGER NOT NULL DEFAULT 0"),
                  ("token_expires", "REAL"))


@dataclass(frozen=True)
class Device:
    device_id: str
    registered_at: float
    public_key: Optional[str]
    attestation_id: Optional[str]
    attested: bool


@dataclass(frozen=True)
class Round:
    round: int
    model_version: int
    state: str
    goal_count: int
    slots: int
    min_reports: int
    noise_std: float
    opened_at: float
    deadline: Optional[float]
    closed_at: Optional[float]
    selected: int
    reports: int
    ckpt_seq: int
    ckpt_path: Optional[str]
    ckpt_weight: float
    ckpt_count: int
    published_version: Optional[int]
    note: Optional[str]


@dataclass(frozen=True)
class UpdateRecord:
    seq: int
    round: int
    device_id: str
    upload_id: str
    num_examples: int
    weight: float
    clip_to: Optional[float]
    norm: float
    spool: Optional[str]
    received_at: float
    round_complete: int


@dataclass(frozen=True)
class ModelRecord:
    version: int
    round: Optional[int]
    path: str
    sha256: str
    num_params: int
    created_at: float
    q: float
    z: float
    meta: dict


ROUND_FIELDS = tuple(f.name for f in dataclasses.fields(Round))
UPDATE_FIELDS = tuple(f.name for f in dataclasses.fields(UpdateRecord))
# The round, whether the device was selected for it, and the device's update in it; a row even
# when the round does not exist (its columns NULL), from the one-row table of the two arguments.
UPLOAD_STATE = (
    "SELECT " + ", ".join(f"r.{f}" for f in ROUND_FIELDS)
    + ", EXISTS (SELECT 1 FROM selections s WHERE s.round = k.n AND s.device_id = k.d), "
    + ", ".join(f"u.{f}" for f in UPDATE_FIELDS)
    + " FROM (SELECT CAST(? AS BIGINT) AS n, CAST(? AS TEXT) AS d) AS k"
    " LEFT JOIN rounds r ON r.round = k.n LEFT JOIN updates u ON u.round = k.n AND u.device_id = k.d")


class Connection(Protocol):
    """What the queries need of a connection: sqlite3's, or storage_pg's wrapper of psycopg's."""

    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any: ...

    def executemany(self, sql: str, seq: Sequence[Sequence[Any]]) -> Any: ...


class StoreQueries:
    """Every statement of the collector's store, over `conn()` (the calling thread's connection)
    or the connection of an open `write()` transaction. Rows are read by column name."""

    path: str  # where the data lives, for messages (a file, or the database URL without password)

    def conn(self) -> Connection:
        raise NotImplementedError

    def write(self) -> contextlib.AbstractContextManager[Connection]:
        raise NotImplementedError

    def exclusive(self) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # -- devices -------------------------------------------------------------------------------
    def add_device(self, c: Connection, device_id: str, token_sha256: str, now: float, *,
                   public_key: Optional[str] = None, attestation_id: Optional[str] = None, attested: bool = False,
                   token_expires: Optional[float] = None) -> bool:
        """Register a device, or give a registered one a new token (revoking the old) and the
        key and attestation given. True if new."""
        known = c.execute("SELECT 1 FROM devices WHERE device_id = ?", (device_id,)).fetchone() is not None
        c.execute("INSERT INTO devices (device_id, token_sha256, registered_at, public_key, attestation_id, attested,"
                  " token_expires) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(device_id) DO UPDATE SET"
                  " token_sha256 = excluded.token_sha256, public_key = excluded.public_key,"
                  " attestation_id = excluded.attestation_id, attested = excluded.attested,"
                  " token_expires = excluded.token_expires",
                  (device_id, token_sha256, now, public_key, attestation_id, int(attested), token_expires))
        return not known

    def get_device(self, device_id: str, c: Optional[Connection] = None) -> Optional[Device]:
        row = (c or self.conn()).execute(
            "SELECT device_id, registered_at, public_key, attestation_id, attested FROM devices WHERE device_id = ?",
            (device_id,)).fetchone()
        return Device(row[0], float(row[1]), row[2], row[3], bool(row[4])) if row else None

    def device_for_token(self, token_sha256: str, now: Optional[float] = None) -> Optional[str]:
        """The device holding this token, None when unknown, revoked or (at `now`) expired."""
        row = self.conn().execute("SELECT device_id, token_expires FROM devices WHERE token_sha256 = ?",
                                  (token_sha256,)).fetchone()
        if row is None or (now is not None and row[1] is not None and now >= row[1]):
            return None
        return row[0]

    def count_devices(self, c: Optional[Connection] = None, attested_only: bool = False) -> int:
        sql = "SELECT COUNT(*) FROM devices" + (" WHERE attested = 1" if attested_only else "")
        return int((c or self.conn()).execute(sql).fetchone()[0])

    def devices_with_attestation(self, c: Connection, attestation_id: str, other_than: str) -> int:
        """Device ids other than `other_than` registered with certificates for this physical device."""
        return int(c.execute("SELECT COUNT(*) FROM devices WHERE attestation_id = ? AND device_id != ?",
                             (attestation_id, other_than)).fetchone()[0])

    def spend_nonce(self, c: Connection, nonce: str, expires_at: float, now: float) -> bool:
        """Record a registration nonce as used; False if it was used already (a replay)."""
        c.execute("DELETE FROM used_nonces WHERE expires_at < ?", (now,))
        cur = c.execute("INSERT INTO used_nonces VALUES (?, ?) ON CONFLICT (nonce) DO NOTHING", (nonce, expires_at))
        return cur.rowcount == 1

    def secret(self, name: str, make: Callable[[], bytes]) -> bytes:
        """A server secret shared by every worker over this database, made once by `make`."""
        with self.write() as c:
            row = c.execute("SELECT value FROM server_secrets WHERE name = ?", (name,)).fetchone()
            if row is not None:
                return bytes(row[0])
            value = make()
            c.execute("INSERT INTO server_secrets VALUES (?, ?)", (name, value))
            return value

    # -- rounds --------------------------------------------------------------------------------
    def open_round(self, c: Optional[Connection] = None) -> Optional[Round]:
        row = (c or self.conn()).execute("SELECT * FROM rounds WHERE state = 'open' ORDER BY round DESC LIMIT 1").fetchone()
        return Round(**dict(row)) if row else None

    def get_round(self, number: int, c: Optional[Connection] = None) -> Optional[Round]:
        row = (c or self.conn()).execute("SELECT * FROM rounds WHERE round = ?", (number,)).fetchone()
        return Round(**dict(row)) if row else None

    def last_round(self, c: Optional[Connection] = None) -> Optional[Round]:
        row = (c or self.conn()).execute("SELECT * FROM rounds ORDER BY round DESC LIMIT 1").fetchone()
        return Round(**dict(row)) if row else None

    def insert_round(self, c: Connection, number: int, model_version: int, goal: int, slots: int,
                     min_reports: int, noise_std: float, now: float) -> None:
        c.execute(
            "INSERT INTO rounds (round, model_version, state, goal_count, slots, min_reports, noise_std, opened_at)"
            " VALUES (?, ?, 'open', ?, ?, ?, ?, ?)",
            (number, model_version, goal, slots, min_reports, noise_std, now),
        )

    def finish_round(self, c: Connection, number: int, state: str, now: float,
                     published_version: Optional[int], note: str) -> None:
        c.execute("UPDATE rounds SET state = ?, closed_at = ?, published_version = ?, note = ? WHERE round = ?",
                  (state, now, published_version, note, number))

    def round_counts(self) -> dict[str, int]:
        rows = self.conn().execute("SELECT state, COUNT(*) FROM rounds GROUP BY state").fetchall()
        return {r[0]: int(r[1]) for r in rows}

    # -- selection -----------------------------------------------------------------------------
    def is_selected(self, number: int, device_id: str, c: Optional[Connection] = None) -> bool:
        row = (c or self.conn()).execute("SELECT 1 FROM selections WHERE round = ? AND device_id = ?",
                                         (number, device_id)).fetchone()
        return row is not None

    def select_device(self, c: Connection, number: int, device_id: str, now: float,
                      deadline_if_first: float) -> None:
        c.execute("INSERT INTO selections VALUES (?, ?, ?)", (number, device_id, now))
        c.execute("UPDATE rounds SET selected = selected + 1, deadline = COALESCE(deadline, ?) WHERE round = ?",
                  (deadline_if_first, number))

    # -- updates -------------------------------------------------------------------------------
    def get_update(self, number: int, device_id: str, c: Optional[Connection] = None) -> Optional[UpdateRecord]:
        row = (c or self.conn()).execute("SELECT * FROM updates WHERE round = ? AND device_id = ?",
                                         (number, device_id)).fetchone()
        return UpdateRecord(**dict(row)) if row else None

    def upload_state(self, number: int, device_id: str,
                     c: Optional[Connection] = None) -> tuple[Optional[Round], bool, Optional[UpdateRecord]]:
        """`get_round`, `is_selected` and `get_update` in one statement: what an upload's checks
        (validation.check_round) read, before and again inside its write transaction. One
        statement is one round trip to a database server instead of three."""
        row = (c or self.conn()).execute(UPLOAD_STATE, (number, device_id)).fetchone()
        rnd = Round(*(row[i] for i in range(len(ROUND_FIELDS)))) if row[0] is not None else None
        k = len(ROUND_FIELDS) + 1
        update = UpdateRecord(*(row[k + i] for i in range(len(UPDATE_FIELDS)))) if row[k] is not None else None
        return rnd, bool(row[k - 1]), update

    def insert_update(self, c: Connection, number: int, device_id: str, upload_id: str, num_examples: int,
                      weight: float, clip_to: Optional[float], norm: float, spool: Optional[str], now: float,
                      round_complete: bool) -> int:
        cur = c.execute(
            "INSERT INTO updates (round, device_id, upload_id, num_examples, weight, clip_to, norm, spool,"
            " received_at, round_complete) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq",
            (number, device_id, upload_id, num_examples, weight, clip_to, norm, spool, now, int(round_complete)),
        )
        seq = int(cur.fetchone()[0])
        c.execute("UPDATE rounds SET reports = reports + 1 WHERE round = ?", (number,))
        return seq

    def updates_between(self, c: Connection, number: int, after_seq: int,
                        upto_seq: Optional[int] = None) -> list[UpdateRecord]:
        """Accepted updates of a round with after_seq < seq <= upto_seq, in acceptance order."""
        hi = upto_seq if upto_seq is not None else 2**62
        rows = c.execute("SELECT * FROM updates WHERE round = ? AND seq > ? AND seq <= ? ORDER BY seq",
                         (number, after_seq, hi)).fetchall()
        return [UpdateRecord(**dict(r)) for r in rows]

    def last_seq(self, c: Connection, number: int) -> int:
        row = c.execute("SELECT MAX(seq) FROM updates WHERE round = ?", (number,)).fetchone()
        return int(row[0] or 0)

    def round_weights(self, c: Connection, number: int) -> list[float]:
        return [float(r[0]) for r in c.execute("SELECT weight FROM updates WHERE round = ? ORDER BY seq", (number,))]

    def set_checkpoint(self, c: Connection, number: int, seq: int, path: str, total_weight: float,
                       count: int) -> None:
        c.execute("UPDATE rounds SET ckpt_seq = ?, ckpt_path = ?, ckpt_weight = ?, ckpt_count = ? WHERE round = ?",
                  (seq, path, total_weight, count, number))

    def clear_spools(self, c: Connection, number: int, after_seq: int, upto_seq: Optional[int] = None) -> None:
        """Drop the spool references of a round's updates with after_seq < seq <= upto_seq (the
        ones a new checkpoint covers: those up to the previous checkpoint have none left). A
        range of the primary key, not the whole round: per checkpoint the work is the updates
        it adds, not all the round's so far."""
        hi = upto_seq if upto_seq is not None else 2**62
        c.execute("UPDATE updates SET spool = NULL WHERE seq > ? AND seq <= ? AND round = ?", (after_seq, hi, number))

    def spool_owner(self, spool: str) -> Optional[tuple[int, int]]:
        row = self.conn().execute("SELECT round, seq FROM updates WHERE spool = ?", (spool,)).fetchone()
        return (int(row[0]), int(row[1])) if row else None

    def referenced_spools(self, spools: Sequence[str]) -> set[str]:
        """Which of these spool slots an update record still points at (one statement per 512)."""
        out: set[str] = set()
        for i in range(0, len(spools), 512):  # under any SQLite's limit of bound parameters
            part = list(spools[i:i + 512])
            # padded to a power of two with repeats: a few statement texts, each prepared once
            width = max(8, 1 << (len(part) - 1).bit_length())
            part += part[-1:] * (width - len(part))
            sql = "SELECT spool FROM updates WHERE spool IN (" + ", ".join("?" * width) + ")"
            out.update(r[0] for r in self.conn().execute(sql, part).fetchall())
        return out

    # -- models --------------------------------------------------------------------------------
    def insert_model(self, c: Connection, version: int, number: Optional[int], path: str, sha256: str,
                     num_params: int, now: float, q: float, z: float, meta: dict) -> None:
        c.execute("INSERT INTO models VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                  (version, number, path, sha256, num_params, now, q, z, json.dumps(meta, sort_keys=True)))

    def _model(self, row: Any) -> Optional[ModelRecord]:
        if row is None:
            return None
        d = dict(row)
        d["meta"] = json.loads(d["meta"])
        return ModelRecord(**d)

    def get_model(self, version: int, c: Optional[Connection] = None) -> Optional[ModelRecord]:
        return self._model((c or self.conn()).execute("SELECT * FROM models WHERE version = ?", (version,)).fetchone())

    def latest_model(self, c: Optional[Connection] = None) -> Optional[ModelRecord]:
        return self._model((c or self.conn()).execute("SELECT * FROM models ORDER BY version DESC LIMIT 1").fetchone())

    def privacy_events(self, c: Connection) -> list[tuple[float, float]]:
        """(q, z) of every published round, in order."""
        rows = c.execute("SELECT q, z FROM models WHERE round IS NOT NULL ORDER BY version").fetchall()
        return [(float(r[0]), float(r[1])) for r in rows]

    # -- counters ------------------------------------------------------------------------------
    def save_counters(self, c: Connection, pid: int, items: dict[tuple[str, str], float]) -> None:
        c.executemany("INSERT INTO counters VALUES (?, ?, ?, ?)"
                      " ON CONFLICT (pid, name, labels) DO UPDATE SET value = excluded.value",
                      [(pid, name, labels, value) for (name, labels), value in items.items()])

    def all_counters(self) -> dict[tuple[str, str], float]:
        out: dict[tuple[str, str], float] = {}
        for name, labels, value in self.conn().execute("SELECT name, labels, SUM(value) FROM counters GROUP BY name, labels"):
            out[(name, labels)] = float(value)
        return out


class SqliteStore(StoreQueries):
    """One SQLite database; a connection per thread; `write()` serializes all changes."""

    def __init__(self, path: str, fsync: bool = False) -> None:
        self.path = path
        self.fsync = fsync
        self._local = threading.local()
        self._lock = threading.RLock()
        self._depth = 0  # _exclusive() nesting in the thread holding self._lock
        # the write lock between processes: SQLite's own busy handler sleeps and polls, leaving
        # a waiting worker's core idle for milliseconds after the other's transaction ended
        self._flock = ProcessLock(path + ".lock")
        with self._exclusive():
            self.conn().executescript(SCHEMA)
            self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        """Bring a state directory made before device keys existed up to SCHEMA (its devices
        stay keyless and unattested)."""
        c = self.conn()
        have = {r[1] for r in c.execute("PRAGMA table_info(devices)")}
        for name, decl in DEVICE_COLUMNS:
            if name not in have:
                c.execute(f"ALTER TABLE devices ADD COLUMN {name} {decl}")
        c.execute("CREATE INDEX IF NOT EXISTS devices_attestation ON devices (attestation_id)")

    # -- connections ---------------------------------------------------------------------------
    def conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=True)
            c.row_factory = sqlite3.Row
            with self._exclusive():  # two workers switching a new database to WAL at once: "locked"
                c.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a commit survives a crash of the process (kill -9); FULL also
            # survives a power cut.
            c.execute(f"PRAGMA synchronous={'FULL' if self.fsync else 'NORMAL'}")
            c.execute("PRAGMA busy_timeout=60000")
            self._local.conn = c
        return c

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding the database-wide write lock (BEGIN IMMEDIATE)."""
        with self._exclusive():
            c = self.conn()
            c.execute("BEGIN IMMEDIATE")
            try:
                yield c
            except BaseException:
                c.execute("ROLLBACK")
                raise
            else:
                c.execute("COMMIT")

    def exclusive(self) -> contextlib.AbstractContextManager[None]:
        """This thread alone among all workers' threads, without a transaction (for reads that
        must not interleave with another thread's; re-entrant, and allowed inside `write()`)."""
        return self._exclusive()

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """This thread alone among the process's threads (an RLock) and this process alone among
        the workers (the flock), re-entrant within the thread."""
        with self._lock:
            outer = self._depth == 0
            if outer:
                self._flock.acquire()
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if outer:
                    self._flock.release()

    def close(self) -> None:
        c = getattr(self._local, "conn", None)
        if c is not None:
            c.close()
            self._local.conn = None


def open_store(database: str, state_dir: str, fsync: bool) -> StoreQueries:
    """The collector's store (`collector.database`): "" is SQLite in the state directory, only
    for the processes of one host; a postgresql:// URL is a database several hosts share."""
    if not database:
        return SqliteStore(os.path.join(state_dir, "fedkeys.sqlite3"), fsync=fsync)
    from server.storage_pg import PostgresStore  # psycopg is imported only by collectors that use it

    return PostgresStore(database)
