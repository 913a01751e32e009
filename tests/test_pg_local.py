"""server/pg_local.py: the throwaway PostgreSQL server the tests and benchmarks start."""

from __future__ import annotations

import pytest

from server import pg_local
from server.serve import listening_socket

pytestmark = pytest.mark.slow


def test_a_port_taken_before_postgres_binds_it_is_given_up_for_another(monkeypatch):
    if pg_local.binaries() is None:
        pytest.skip("PostgreSQL is not installed (no initdb): `make postgres`")
    psycopg = pytest.importorskip("psycopg")
    # another process takes the free port between its choice and postgres binding it
    taken = listening_socket("127.0.0.1")
    first = [taken.getsockname()[1]]
    real = pg_local.free_port
    monkeypatch.setattr(pg_local, "free_port", lambda host: first.pop() if first else real(host))
    pg = pg_local.LocalPostgres()
    try:
        pg.start(timeout_s=60)
        assert not first and pg.port != taken.getsockname()[1]
        with psycopg.connect(pg.url("postgres")) as c:  # over TCP, this instance's own data directory
            assert c.execute("SHOW data_directory").fetchone()[0].startswith(pg.root)
    finally:
        pg.stop()
        taken.close()
