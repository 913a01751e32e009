"""Where the collector keeps what anomaly screening decides: per-device reputation and the
updates it flagged, in the collector's SQLite database.

The scoring and the reputation rule are the algorithm core's (fedcore/anomaly.py,
fedcore/reputation.py); this module only stores and counts. A screened rule closes a round
inside the database's write lock (server/round_sum.py), so `bind` hands it a mapping over the
`reputation` table on that transaction's connection: every gunicorn worker, and a collector
restarted on the same state directory, reads and moves the same values, and a close that fails
rolls its reputation changes back with everything else. `/metrics` and the dashboard show the
counts of flagged updates (`flag_counts`), never which device was flagged.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, MutableMapping
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS reputation (
    device_id TEXT PRIMARY KEY,
    reputation REAL NOT NULL,            -- fedcore.reputation: 1 = never flagged
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS flagged_updates (
    round INTEGER NOT NULL,
    device_id TEXT NOT NULL,
    reasons TEXT NOT NULL,               -- JSON list: "norm", "direction", "previous"
    score TEXT NOT NULL,                 -- JSON: norm, norm_z, cos_mean(_z), cos_previous(_z), weight factor
    PRIMARY KEY (round, device_id)
);
"""


class SqliteReputations(MutableMapping):
    """device id -> reputation over the `reputation` table, on one connection (inside its transaction)."""

    def __init__(self, c: sqlite3.Connection) -> None:
        self.c = c

    def __getitem__(self, device_id: str) -> float:
        row = self.c.execute("SELECT reputation FROM reputation WHERE device_id = ?", (device_id,)).fetchone()
        if row is None:
            raise KeyError(device_id)
        return float(row[0])

    def __setitem__(self, device_id: str, value: float) -> None:
        self.c.execute("INSERT INTO reputation (device_id, reputation, updated_at) VALUES (?, ?, ?) "
                       "ON CONFLICT (device_id) DO UPDATE SET reputation = excluded.reputation, "
                       "updated_at = excluded.updated_at", (device_id, float(value), time.time()))

    def __delitem__(self, device_id: str) -> None:
        self.c.execute("DELETE FROM reputation WHERE device_id = ?", (device_id,))

    def __iter__(self) -> Iterator[str]:
        return iter([r[0] for r in self.c.execute("SELECT device_id FROM reputation ORDER BY device_id")])

    def __len__(self) -> int:
        return int(self.c.execute("SELECT COUNT(*) FROM reputation").fetchone()[0])


def ensure_schema(c: sqlite3.Connection) -> None:
    """Create the two tables if missing, statement by statement (executescript would commit the
    caller's open transaction first)."""
    for statement in SCHEMA.split(";"):
        if statement.strip():
            c.execute(statement)


def bind(c: sqlite3.Connection, rule: Any) -> None:
    """Point a screened rule's reputations at the database (inside the close's transaction)."""
    ensure_schema(c)
    rule.reputations = SqliteReputations(c)


def record(c: sqlite3.Connection, round_number: int, state: Any) -> int:
    """Store the flagged updates of a closed screened round (`fedcore.anomaly.ScreenedRound`);
    returns how many were flagged."""
    n = 0
    for device, score, factor in zip(state.device_ids, state.scores, state.multipliers):
        if not score.flagged:
            continue
        detail = {"norm": score.norm, "norm_z": score.norm_z, "cos_mean": score.cos_mean,
                  "cos_mean_z": score.cos_mean_z, "cos_previous": score.cos_previous,
                  "cos_previous_z": score.cos_previous_z, "weight_factor": factor}
        c.execute("INSERT OR REPLACE INTO flagged_updates (round, device_id, reasons, score) VALUES (?, ?, ?, ?)",
                  (round_number, device, json.dumps(list(score.reasons)), json.dumps(detail)))
        n += 1
    return n


def flag_counts(c: sqlite3.Connection) -> dict[str, float]:
    """{"flagged": updates flagged in all rounds, "flagged_last_round": in the latest round with
    a flagged update, "low_reputation": devices below 0.5}; zeros before any screening."""
    try:
        total = c.execute("SELECT COUNT(*) FROM flagged_updates").fetchone()[0]
        last = c.execute("SELECT COUNT(*) FROM flagged_updates WHERE round = "
                         "(SELECT MAX(round) FROM flagged_updates)").fetchone()[0]
        low = c.execute("SELECT COUNT(*) FROM reputation WHERE reputation < 0.5").fetchone()[0]
    except sqlite3.OperationalError:  # no screened round has closed here: the tables do not exist
        return {"flagged": 0.0, "flagged_last_round": 0.0, "low_reputation": 0.0}
    return {"flagged": float(total), "flagged_last_round": float(last), "low_reputation": float(low)}
