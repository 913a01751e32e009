"""A throwaway PostgreSQL server in a temporary directory, for the tests and benchmarks that run
the collector on PostgreSQL (`collector.database`).

The binaries are Debian's `postgresql` package (`make postgres` installs it when missing):
`initdb` and `postgres` from PATH or /usr/lib/postgresql/<version>/bin. PostgreSQL refuses to run
as root, so under root the server runs as the `postgres` user the package creates (else
`nobody`), in a directory made for it. It listens on 127.0.0.1 at a free port, as a database
on another machine would be reached, with trust authentication for that address only.

`fsync=off`: a commit is written to the operating system before it returns (a kill -9 of the
database or of a collector loses nothing committed), but not forced to disk, the durability of
the SQLite store's default `collector.durability = "process"`; a production database keeps
PostgreSQL's default.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from typing import Optional

from server.serve import free_port


def binaries() -> Optional[str]:
    """The directory holding `initdb` and `postgres`, or None when PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found and os.path.exists(os.path.join(os.path.dirname(os.path.realpath(found)), "postgres")):
        return os.path.dirname(os.path.realpath(found))
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                      key=lambda p: int(p.split("/")[-3]) if p.split("/")[-3].isdigit() else 0)
    return os.path.dirname(versions[-1]) if versions else None


def _server_user() -> Optional[pwd.struct_passwd]:
    """Who runs the server: None (the caller) unless the caller is root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL")


def _tail(log: str) -> str:
    with open(log, errors="replace") as f:
        return f.read()[-2000:]


class LocalPostgres:
    """`with LocalPostgres() as pg: pg.create_database()` -> a postgresql:// URL; stopped and
    removed on exit."""

    def __init__(self, bindir: Optional[str] = None) -> None:
        self.bindir = bindir or binaries()
        if self.bindir is None:
            raise FileNotFoundError("PostgreSQL is not installed (no initdb in PATH or /usr/lib/postgresql/*/bin); "
                                    "`make postgres` installs Debian's postgresql package")
        self.user = _server_user()
        self.root = ""
        self.port = 0
        self.proc: Optional[subprocess.Popen] = None

    def _run_as(self) -> dict:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def start(self, timeout_s: float = 60.0) -> "LocalPostgres":
        # under another user, in /tmp: $TMPDIR may sit in a home the server's user cannot enter
        self.root = tempfile.mkdtemp(prefix="fedkeys-pg-", dir=None if self.user is None else "/tmp")
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        data = os.path.join(self.root, "data")
        log = os.path.join(self.root, "server.log")
        init = subprocess.run([os.path.join(self.bindir, "initdb"), "-D", data, "-U", "fedkeys", "-A", "trust",
                               "-E", "UTF8", "--locale=C", "--no-sync"],
                              cwd=self.root, capture_output=True, text=True, **self._run_as())
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed ({init.returncode}): {init.stderr.strip()[-2000:]}")
        deadline = time.monotonic() + timeout_s
        for _ in range(3):  # a free port can be taken by another process before postgres binds it
            if self._serve(data, log, deadline):
                return self
            if "could not bind" not in _tail(log):
                break
        tail = _tail(log)
        self.stop()
        raise RuntimeError(f"PostgreSQL did not start (waited up to {timeout_s:.0f} s); its log ends: {tail}")

    def _serve(self, data: str, log: str, deadline: float) -> bool:
        """Start postgres on a free port; True once it answers on its own socket directory. (A
        server answering over TCP could be another test's on a port taken in between; one answering
        in self.root is this one, and it listens on TCP too: postgres binds every socket first.)"""
        import psycopg

        self.port = free_port("127.0.0.1")
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [os.path.join(self.bindir, "postgres"), "-D", data, "-p", str(self.port), "-k", self.root,
                 "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200",
                 "-c", "shared_buffers=64MB"],
                cwd=self.root, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **self._run_as())
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                psycopg.connect(host=self.root, port=self.port, user="fedkeys", dbname="postgres",
                                connect_timeout=2).close()
                return True
            except psycopg.OperationalError:
                time.sleep(0.1)
        return False

    def url(self, database: str) -> str:
        return f"postgresql://fedkeys@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str = "") -> str:
        """A new empty database; its URL."""
        import psycopg

        name = name or "fedkeys_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url("postgres"), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Fast shutdown (SIGINT: roll back open transactions, then exit), then remove the directory."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
        if self.root:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = ""

    def __enter__(self) -> "LocalPostgres":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
