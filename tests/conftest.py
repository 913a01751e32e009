"""Shared fixtures: paths to the real corpora (skipped cleanly when ../shared is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPORA = REPO.parent / "shared" / "corpora"


def corpus_path(name: str) -> Path:
    """The gzip JSONL of a shared corpus, or skip the test when it is not beside the repo."""
    path = CORPORA / name / f"{name}.jsonl.gz"
    if not path.exists():
        pytest.skip(f"shared corpus {name} not found at {path}")
    return path


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL server for the session (server/pg_local.py), stopped at the end;
    the tests that use it skip, saying why, when PostgreSQL or psycopg is not installed."""
    from server import pg_local

    if pg_local.binaries() is None:
        pytest.skip("PostgreSQL is not installed (no initdb): `make postgres`, as root, installs Debian's postgresql")
    pytest.importorskip("psycopg", reason="psycopg is not installed: `make install` installs requirements.txt")
    pg = pg_local.LocalPostgres().start()
    try:
        yield pg
    finally:
        pg.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def database(request) -> str:
    """`collector.database` for each store: "" (SQLite in the state directory), then a fresh
    database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return ""
    return request.getfixturevalue("postgres").create_database()
