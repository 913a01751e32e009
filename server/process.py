"""The collector under gunicorn as its own process, waited on until it answers.

One launcher for `fedkeys devices`, the demo, the tests and the benchmarks, so every one of
them talks to the same real WSGI server over real HTTP on 127.0.0.1. The process gets its
own process group: `stop()` shuts gunicorn down, `kill()` SIGKILLs master and workers at once
(a crash, for the fault benchmarks).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from typing import Any

import requests

from configs import RunConfig
from server.serve import PortUnavailable, gunicorn_argv, listening_socket

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def server_config_dict(cfg: RunConfig, bundle_dir: str, state_dir: str) -> dict[str, Any]:
    """The JSON object `server.app.create_app` reads: the run's server, collector, privacy, train
    (algorithm) and secagg sections, and the two directories (absolute)."""
    return {"server": asdict(cfg.server), "collector": asdict(cfg.collector), "privacy": asdict(cfg.privacy),
            "train": asdict(cfg.train), "secagg": asdict(cfg.secagg), "bundle_dir": os.path.abspath(bundle_dir),
            "state_dir": os.path.abspath(state_dir)}


def write_server_config(path: str, cfg: RunConfig, bundle_dir: str, state_dir: str) -> str:
    """Write `server_config_dict(...)` as JSON at `path`; return the path."""
    raw = server_config_dict(cfg, bundle_dir, state_dir)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(raw, f, indent=2)
    return path


class ServerProcess:
    """A gunicorn collector process; a context manager that stops it on exit."""

    def __init__(self, config_path: str, host: str = "127.0.0.1", port: int = 0, workers: int = 1,
                 threads: int = 4, log_path: str | None = None, access_log: bool = False,
                 worker_class: str | None = None) -> None:
        self.config_path = os.path.abspath(config_path)
        # port 0: a free port, held from now on (a socket gunicorn inherits), so that no other
        # process (another test's server) can take it before gunicorn serves on it
        self._reserved: socket.socket | None = listening_socket(host) if port == 0 else None
        self.host = host
        self.port = port or self._reserved.getsockname()[1]
        self.workers, self.threads, self.worker_class = workers, threads, worker_class
        self.log_path = log_path or os.path.join(os.path.dirname(self.config_path), "server.log")
        self.access_log = access_log
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def argv(self, fd: int) -> list[str]:
        argv = gunicorn_argv(self.config_path, fd, self.workers, self.threads, sys.executable, self.worker_class)
        if not self.access_log:
            i = argv.index("--access-logfile")
            del argv[i : i + 2]
        return argv

    def start(self, timeout_s: float = 60.0) -> "ServerProcess":
        """Start gunicorn and wait until GET /v1/status answers 200 (RuntimeError otherwise).

        Again after stop() or kill(): the same port, bound anew (refused while nobody serves it)."""
        sock, self._reserved = self._reserved or self._bind_again(), None
        try:
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(self.argv(sock.fileno()), cwd=REPO_ROOT, stdout=log,
                                             stderr=subprocess.STDOUT, start_new_session=True,
                                             pass_fds=(sock.fileno(),))
        finally:
            sock.close()  # gunicorn holds its own copy: once it exits, connections are refused
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if requests.get(self.url + "/v1/status", timeout=5).status_code == 200:
                    return self
            except requests.RequestException:
                time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"the server did not answer on {self.url} within {timeout_s:.0f} s; see {self.log_path}")

    def _bind_again(self, wait_s: float = 10.0) -> socket.socket:
        """The port once more, after a stop or a crash: the dead server's workers may hold it a
        moment longer, so tries half a second apart for `wait_s` (as gunicorn's own bind retries)."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return listening_socket(self.host, self.port)
            except PortUnavailable as e:
                if not e.in_use or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def _release(self) -> None:
        """Let go of the port held since construction (a server never started)."""
        if self._reserved is not None:
            self._reserved.close()
            self._reserved = None

    def kill(self) -> None:
        """SIGKILL the master and every worker at once (a crash, not a shutdown)."""
        self._release()
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def stop(self) -> None:
        """Graceful shutdown (SIGTERM to the group), SIGKILL after 15 s."""
        self._release()
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()
        except ProcessLookupError:
            pass

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
