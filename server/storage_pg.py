"""The collector's store on PostgreSQL: one database that several collector hosts share.

Every statement is `StoreQueries`' (server/storage.py), the same SQL SQLite runs; this class only
connects, locks and translates placeholders. What SQLite gives the collector, and how:

- One writer at a time. `write()` opens a transaction whose first statement takes one
  transaction-scoped advisory lock (`pg_advisory_xact_lock`), the counterpart of SQLite's
  `BEGIN IMMEDIATE`: every thread of every worker on every host changes the collector's state one
  at a time, and (READ COMMITTED, the lock taken before any read) sees every change committed
  before it. Row locks (`SELECT ... FOR UPDATE` on the round) would let two rounds' writers
  overlap, but the collector's invariants (the running sum checked against `updates`, a
  checkpoint committed only over the checkpoint it read, one device per attestation) are written
  for one writer, and its write transactions are a few statements long.
- Crash safety. COMMIT returns once the database's WAL is on disk (`synchronous_commit` on, the
  default), so an acknowledged update survives a kill -9 of its collector host and of the
  database. A host killed mid-transaction loses its connection; the server then rolls the
  transaction back and frees the lock.
- Reads outside `write()` run in autocommit, each statement on what was committed before it
  began, like SQLite's WAL readers.

It adds the rate-limit buckets (`take_token`): the request limits of every worker on every host
in one table, on the database's clock.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from typing import Any, Callable, ClassVar, Iterator, Optional, Sequence

import psycopg

from server import reputation
from server.storage import SCHEMA, Connection, StoreQueries

LOCK_KEY = int.from_bytes(b"fedkeys", "big")  # the advisory lock every write transaction takes

# UNLOGGED: no WAL for a take; a crash of the database empties the table (every bucket full
# again), as a restart empties the SQLite store's per-worker buckets. Pacing state, not records.
BUCKETS = """
CREATE UNLOGGED TABLE IF NOT EXISTS rate_buckets (
    scope TEXT NOT NULL,                 -- which limit: "device", "register"
    key TEXT NOT NULL,                   -- a device id or a client address
    tokens DOUBLE PRECISION NOT NULL,
    at DOUBLE PRECISION NOT NULL,        -- the database clock (unix seconds) of the last take
    allowed BOOLEAN NOT NULL,            -- whether the last take got a token
    PRIMARY KEY (scope, key)
);
CREATE INDEX IF NOT EXISTS devices_attestation ON devices (attestation_id);
"""

# One statement per take: refill by the time since the last take, spend a token if there is one.
# In DO UPDATE every expression reads the row as it was, and the row stays locked until the
# statement ends, so concurrent takes of one key queue instead of spending one token twice.
# `_SPEND` follows an INSERT of a full bucket less one token (a key's first take).
_SPEND = """
ON CONFLICT (scope, key) DO UPDATE SET
    tokens = LEAST(%(burst)s, b.tokens + GREATEST(0, excluded.at - b.at) * %(rate)s)
             - CASE WHEN LEAST(%(burst)s, b.tokens + GREATEST(0, excluded.at - b.at) * %(rate)s) >= 1 THEN 1 ELSE 0 END,
    at = GREATEST(b.at, excluded.at),
    allowed = LEAST(%(burst)s, b.tokens + GREATEST(0, excluded.at - b.at) * %(rate)s) >= 1
RETURNING allowed, tokens
"""

TAKE = """
INSERT INTO rate_buckets AS b (scope, key, tokens, at, allowed)
VALUES (%(scope)s, %(key)s, %(burst)s - 1, COALESCE(%(now)s, EXTRACT(EPOCH FROM statement_timestamp())), TRUE)
""" + _SPEND

# device_for_token and TAKE in one statement, the bucket keyed by the device the token names; no
# row is spent for an unknown, revoked or expired token (`d` is empty: the INSERT selects nothing).
TAKE_FOR_TOKEN = """
WITH d AS (
    SELECT device_id FROM devices
    WHERE token_sha256 = %(token)s AND (token_expires IS NULL OR token_expires > %(unix)s)
), t AS (
    INSERT INTO rate_buckets AS b (scope, key, tokens, at, allowed)
    SELECT %(scope)s, d.device_id, %(burst)s - 1, EXTRACT(EPOCH FROM statement_timestamp()), TRUE FROM d
""" + _SPEND + """)
SELECT d.device_id, t.allowed, t.tokens FROM d LEFT JOIN t ON TRUE
"""

# StoreQueries.insert_update's two statements as one (a data-modifying WITH runs to completion
# whether or not the outer query reads it): the record with its sequence number, and the count.
INSERT_UPDATE = """
WITH ins AS (
    INSERT INTO updates (round, device_id, upload_id, num_examples, weight, clip_to, norm, spool, received_at,
                         round_complete)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq
), counted AS (
    UPDATE rounds SET reports = reports + 1 WHERE round = ?
)
SELECT seq FROM ins
"""


def postgres_ddl(sqlite_ddl: str) -> str:
    """SQLite's schema in PostgreSQL's types: 8-byte integers and floats (SQLite's INTEGER and
    REAL are 8 bytes; PostgreSQL's are 4), BYTEA for BLOB, an identity column for AUTOINCREMENT."""
    ddl = sqlite_ddl.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")
    ddl = re.sub(r"\bINTEGER\b", "BIGINT", ddl)
    ddl = re.sub(r"\bREAL\b", "DOUBLE PRECISION", ddl)
    return re.sub(r"\bBLOB\b", "BYTEA", ddl)


def redact(url: str) -> str:
    """The database URL without its password (for messages and logs)."""
    return re.sub(r"(//[^:/@]*):[^@/]*@", r"\1:***@", url)


class Row:
    """A result row read by position or column name, and `dict(row)`-able, like sqlite3.Row."""

    __slots__ = ("_values", "_index")

    def __init__(self, values: Sequence[Any], index: dict[str, int]) -> None:
        self._values = values
        self._index = index

    def __getitem__(self, key: int | str) -> Any:
        return self._values[key if isinstance(key, int) else self._index[key]]

    def keys(self) -> list[str]:
        return list(self._index)

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)


_INDEXES: dict[tuple[bytes, ...], dict[str, int]] = {}  # a result's column names -> name to position


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], Row]:
    # from the result's names, not `cursor.description`, which builds a Column object per column
    # on every execute: a measurable share of a short statement's client time
    res = cursor.pgresult
    names = tuple(res.fname(i) for i in range(res.nfields)) if res is not None else ()
    index = _INDEXES.get(names)
    if index is None:
        index = {n.decode(): i for i, n in enumerate(names)}
        if len(_INDEXES) < 1024:  # the store's statements have a few dozen shapes
            _INDEXES[names] = index
    return lambda values: Row(values, index)


class PgConnection:
    """One psycopg connection with sqlite3's calling convention: `?` placeholders, `execute`
    and `executemany` on the connection.

    Inside `PostgresStore.write()` the transaction starts with its first statement: BEGIN, the
    store-wide lock and that statement go to the server together (pipeline mode), one round trip
    instead of two. Any use of `raw` starts it first, so nothing runs outside it."""

    _sql: ClassVar[dict[str, str]] = {}  # `?` statement -> `%s` statement (a few dozen distinct ones)

    def __init__(self, raw: psycopg.Connection) -> None:
        self._raw = raw
        self.pid = os.getpid()
        self.pending = False  # write() has begun and no statement has started its transaction yet

    @property
    def raw(self) -> psycopg.Connection:
        if self.pending:
            self._begin(None, ())
        return self._raw

    def _begin(self, sql: Optional[str], params: Any) -> Optional[psycopg.Cursor]:
        """BEGIN, take the lock and run `sql` (if any) in one round trip; its cursor."""
        self.pending = False
        cur = None
        with self._raw.pipeline():
            self._raw.execute("BEGIN")
            self._raw.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            if sql is not None:
                cur = self._raw.execute(sql, params)
        return cur

    @classmethod
    def _translate(cls, sql: str) -> str:
        out = cls._sql.get(sql)
        if out is None:
            out = cls._sql[sql] = sql.replace("%", "%%").replace("?", "%s")
        return out

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor:
        if self.pending:
            return self._begin(self._translate(sql), params)  # type: ignore[return-value]
        return self._raw.execute(self._translate(sql), params)

    def executemany(self, sql: str, seq: Sequence[Sequence[Any]]) -> psycopg.Cursor:
        cur = self.raw.cursor()
        cur.executemany(self._translate(sql), seq)
        return cur


class PostgresStore(StoreQueries):
    """A PostgreSQL database; a connection per thread (and process); `write()` serializes all
    changes of every host."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = redact(url)
        self._local = threading.local()
        with self.write() as c:  # hosts starting at once: CREATE ... IF NOT EXISTS is not atomic
            c.raw.execute(postgres_ddl(SCHEMA + reputation.SCHEMA) + BUCKETS)

    # -- connections ---------------------------------------------------------------------------
    def conn(self) -> PgConnection:
        c: Optional[PgConnection] = getattr(self._local, "conn", None)
        if c is None or c.pid != os.getpid() or c._raw.closed or c._raw.broken:
            # a forked worker opens its own; a connection the server dropped is replaced
            try:
                raw = psycopg.connect(self.url, autocommit=True, row_factory=_row_factory)
            except psycopg.OperationalError as e:
                raise RuntimeError(f"cannot connect to collector.database {self.path}: {e}") from None
            c = PgConnection(raw)
            self._local.conn = c
            self._local.depth = 0
        return c

    @contextlib.contextmanager
    def write(self) -> Iterator[PgConnection]:
        """A write transaction holding the store-wide lock (every host's writers queue on it).

        BEGIN and the lock go with the transaction's first statement (`PgConnection`), COMMIT
        alone: one round trip more than the statements themselves. A COMMIT that the server
        answers with ROLLBACK (a statement failed and its error was swallowed) raises, so a
        caller never takes a rolled-back transaction for a committed one."""
        c = self.conn()
        c.pending = True
        try:
            yield c
        except BaseException:
            began, c.pending = not c.pending, False
            if began:
                try:
                    c.raw.execute("ROLLBACK")
                except psycopg.Error:  # the caller's error is the one to see; the server rolls back
                    c.raw.close()      # a dropped connection, and `conn()` opens a new one
            raise
        if c.pending:  # no statement: no transaction was begun, nothing to commit
            c.pending = False
            return
        status = c.raw.execute("COMMIT").statusmessage
        if status != "COMMIT":
            raise psycopg.errors.InFailedSqlTransaction(f"the write transaction was rolled back ({status})")

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """This thread alone among all hosts' threads, without a transaction (re-entrant, and
        allowed around `write()`: a session holding the lock may take it again)."""
        c = self.conn()
        c.raw.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        try:
            yield
        finally:
            c.raw.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))

    # -- updates -------------------------------------------------------------------------------
    def insert_update(self, c: Connection, number: int, device_id: str, upload_id: str, num_examples: int,
                      weight: float, clip_to: Optional[float], norm: float, spool: Optional[str], now: float,
                      round_complete: bool) -> int:
        """StoreQueries.insert_update in one statement (one round trip, inside the write lock)."""
        row = c.execute(INSERT_UPDATE, (number, device_id, upload_id, num_examples, weight, clip_to, norm, spool, now,
                                        int(round_complete), number)).fetchone()
        return int(row[0])

    # -- rate limits ---------------------------------------------------------------------------
    def take_token(self, scope: str, key: str, rate_per_s: float, burst: float,
                   now: Optional[float] = None) -> tuple[bool, float]:
        """Spend one token of `key`'s bucket in `scope`: (allowed, tokens left). `now` (unix
        seconds) defaults to the database's clock, the one clock every host shares."""
        row = self.conn().raw.execute(TAKE, {"scope": scope, "key": key, "rate": float(rate_per_s),
                                             "burst": float(burst), "now": now}).fetchone()
        return bool(row[0]), float(row[1])

    def take_token_for(self, scope: str, token_sha256: str, now_unix: float, rate_per_s: float,
                       burst: float) -> tuple[Optional[str], bool, float]:
        """`device_for_token(token_sha256, now_unix)` and `take_token(scope, device, ...)` in one
        statement: (device or None, allowed, tokens left); nothing is spent for no device."""
        row = self.conn().raw.execute(TAKE_FOR_TOKEN, {"scope": scope, "token": token_sha256, "unix": float(now_unix),
                                                       "rate": float(rate_per_s), "burst": float(burst)}).fetchone()
        if row is None:
            return None, False, 0.0
        return row[0], bool(row[1]), float(row[2])

    def forget_full_buckets(self, scope: str, older_than_s: float) -> int:
        """Drop buckets not taken from for `older_than_s` (full again: the same as no row)."""
        cur = self.conn().raw.execute(
            "DELETE FROM rate_buckets WHERE scope = %s AND at < EXTRACT(EPOCH FROM statement_timestamp()) - %s",
            (scope, older_than_s))
        return cur.rowcount

    def close(self) -> None:
        c = getattr(self._local, "conn", None)
        if c is not None:
            c._raw.close()
            self._local.conn = None
