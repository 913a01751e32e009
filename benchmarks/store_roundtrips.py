"""What an accepted upload costs the collector's store: SQL statements, and round trips to the
database server, per `gboard` upload through the Flask app (authentication, the shared rate
limit, the round's checks, the spool slot, the record), on SQLite and on PostgreSQL, with the
CPU milliseconds of this process and (PostgreSQL) of the database server per upload.

    .venv/bin/python benchmarks/store_roundtrips.py [--small] [--updates 100] [--repeats 2]

In-process (`app.test_client()`, one worker's configuration of `benchmarks/_scale_collectors.py`:
SQLite with 2 workers, PostgreSQL with 1 worker a host, so both in shared mode), on a throwaway
PostgreSQL server (server/pg_local.py) reached over TCP on loopback. Statements are counted
where the driver runs them (sqlite3's trace callback; psycopg's `execute` and `executemany`);
round trips are the statements sent alone plus one per pipeline (several statements sent
together). The round's last upload (which publishes) is left out: this is the cost of the
upload path. The stores run alternately, `--repeats` times; medians are printed. Ends with one
JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from typing import Any

import numpy as np
import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import psycopg  # noqa: E402

import server_ingest  # noqa: E402
from fedmath import encodings  # noqa: E402
from server.app import build_app  # noqa: E402
from server.pg_local import LocalPostgres  # noqa: E402
from server.settings import settings_from_dict  # noqa: E402
from server.testing import MODEL_SHAPES, random_update  # noqa: E402

SIZE = "gboard"


class Counter:
    """Statements and round trips while `on`, by patching the drivers' entry points."""

    def __init__(self) -> None:
        self.on = False
        self.statements = 0
        self.round_trips = 0
        execute, executemany, pipeline = psycopg.Connection.execute, psycopg.Cursor.executemany, psycopg.Connection.pipeline
        counter = self

        def pg_execute(conn: Any, *a: Any, **k: Any) -> Any:
            if counter.on:
                counter.statements += 1
                counter.round_trips += conn._pipeline is None  # in a pipeline: counted once, below
            return execute(conn, *a, **k)

        def pg_executemany(cur: Any, query: Any, seq: Any, **k: Any) -> Any:
            if counter.on:
                counter.statements += 1  # its round trip: the pipeline psycopg sends it in
            return executemany(cur, query, seq, **k)

        def pg_pipeline(conn: Any) -> Any:
            if counter.on:
                counter.round_trips += 1
            return pipeline(conn)

        psycopg.Connection.execute = pg_execute  # type: ignore[method-assign]
        psycopg.Cursor.executemany = pg_executemany  # type: ignore[method-assign]
        psycopg.Connection.pipeline = pg_pipeline  # type: ignore[method-assign]

    def sqlite_trace(self, _statement: str) -> None:
        if self.on:
            self.statements += 1


def run(counter: Counter, root: str, n: int, database: str, db_pid: int | None) -> dict:
    workers = 1 if database else 2
    cfg = server_ingest.make_config(root, SIZE, n, "process", workers, 1, database)
    app = build_app(settings_from_dict(cfg), workers)
    store = app.extensions["fedkeys"]["collector"].store
    if not database:  # every thread's connection is made on first use: trace them all
        connect, seen = store.conn, set()

        def traced() -> sqlite3.Connection:
            c = connect()
            if id(c) not in seen:
                seen.add(id(c))
                c.set_trace_callback(counter.sqlite_trace)
            return c

        store.conn = traced  # type: ignore[method-assign]
    client = app.test_client()
    payload = encodings.encode_float32(random_update([s for _, s in MODEL_SHAPES[SIZE]], 0.9, np.random.default_rng(0)))
    tokens = [client.post("/v1/devices", json={"device_id": f"phone-{i}"}).json["token"] for i in range(n)]
    for t in tokens:
        assert client.post("/v1/checkin", json=server_ingest.ELIGIBLE,
                           headers={"Authorization": f"Bearer {t}"}).status_code == 200
    bodies = [server_ingest.header_bytes(0, 16, uuid.uuid4().hex) + payload for _ in range(n)]
    db = [psutil.Process(db_pid)] + psutil.Process(db_pid).children() if db_pid else []
    counter.statements = counter.round_trips = 0
    counter.on = True
    d0, c0, t0 = server_ingest.cpu_seconds(db), time.process_time(), time.perf_counter()
    for body, t in zip(bodies[:-1], tokens):
        r = client.post("/v1/rounds/0/updates", data=body,
                        headers={"Authorization": f"Bearer {t}", "Content-Type": "application/octet-stream"})
        assert r.status_code == 202, r.data
    wall, cpu, db_cpu = time.perf_counter() - t0, time.process_time() - c0, server_ingest.cpu_seconds(db) - d0
    counter.on = False
    m = n - 1
    return {"statements_per_upload": counter.statements / m,
            "round_trips_per_upload": counter.round_trips / m if database else 0.0,
            "cpu_ms_per_upload": 1000 * cpu / m, "database_cpu_ms_per_upload": 1000 * db_cpu / m,
            "wall_ms_per_upload": 1000 * wall / m}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="40 uploads, one repeat")
    p.add_argument("--updates", type=int, default=100)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    n, repeats = (40, 1) if args.small else (args.updates, args.repeats)
    counter = Counter()
    load_before = os.getloadavg()
    base = tempfile.mkdtemp(prefix="fedkeys-roundtrips-")
    runs: dict[str, list[dict]] = {"sqlite": [], "postgres": []}
    try:
        with LocalPostgres() as pg:
            for r in range(repeats):
                runs["sqlite"].append(run(counter, os.path.join(base, f"s{r}"), n, "", None))
                runs["postgres"].append(run(counter, os.path.join(base, f"p{r}"), n, pg.create_database(), pg.proc.pid))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    out: dict[str, Any] = {}
    for store, rs in runs.items():
        med = {k: statistics.median(x[k] for x in rs) for k in rs[0]}
        out[store] = med
        print(f"{store:8s}: {med['statements_per_upload']:.2f} statements, {med['round_trips_per_upload']:.2f} round trips "
              f"an upload; CPU {med['cpu_ms_per_upload']:.2f} ms here + {med['database_cpu_ms_per_upload']:.2f} ms "
              f"database; wall {med['wall_ms_per_upload']:.2f} ms")
    total = {k: v["cpu_ms_per_upload"] + v["database_cpu_ms_per_upload"] for k, v in out.items()}
    print(f"CPU an upload, PostgreSQL over SQLite: {total['postgres'] / total['sqlite']:.2f}; load average "
          f"{load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after on {os.cpu_count()} cores")
    print(json.dumps({"benchmark": "store_roundtrips", "size": SIZE, "uploads": n - 1, "repeats": repeats, **out,
                      "postgres_over_sqlite_cpu": total["postgres"] / total["sqlite"],
                      "loadavg_before": load_before, "loadavg_after": os.getloadavg()}))


if __name__ == "__main__":
    main()
