"""Run the update collector under gunicorn as its own process, and wait until it answers.

Used by `fedkeys serve` (foreground), the demo, the end-to-end test and the benchmarks, so
every one of them talks to the same real WSGI server over real HTTP on 127.0.0.1.
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

import requests

from configs import PrivacyConfig, ServerConfig


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def write_server_config(path: str, server: ServerConfig, privacy: PrivacyConfig, bundle_dir: str,
                        state_dir: str) -> str:
    """The JSON file `server.app.create_app(config_path=...)` reads."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"server": asdict(server), "privacy": asdict(privacy),
                   "bundle_dir": os.path.abspath(bundle_dir), "state_dir": os.path.abspath(state_dir)},
                  f, indent=2)
    return path


def gunicorn_command(config_path: str, host: str, port: int, workers: int, threads: int) -> list[str]:
    return [sys.executable, "-m", "gunicorn", "--bind", f"{host}:{port}", "--workers", str(workers),
            "--threads", str(threads), "--timeout", "120", "--log-level", "warning",
            f"server.app:create_app(config_path={os.path.abspath(config_path)!r})"]


class ServerProcess:
    """A gunicorn process serving the collector; a context manager that stops it on exit."""

    def __init__(self, config_path: str, host: str = "127.0.0.1", port: int = 0, workers: int = 1,
                 threads: int = 4, log_path: str | None = None) -> None:
        self.host, self.port = host, port or free_port(host)
        self.cmd = gunicorn_command(config_path, self.host, self.port, workers, threads)
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 60.0) -> "ServerProcess":
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with code {self.proc.returncode}; see {self.log_path}")
            try:
                if requests.get(self.url + "/v1/status", timeout=1).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not answer on {self.url} within {timeout_s} s; see {self.log_path}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
