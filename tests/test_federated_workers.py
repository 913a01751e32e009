"""TFF on remote workers and clients in parallel (federated/workers.py).

Fast: address parsing and the thread plan. Slow: the same training on two `fedkeys worker`
processes over loopback equals the local run; an unreachable address is a clear error; no
worker is left behind.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from configs.schema import RuntimeConfig
from federated.workers import ThreadPlan, WorkerUnreachable, parse_workers, thread_plan, wait_reachable

REPO = Path(__file__).resolve().parents[1]


def test_parse_workers_accepts_hosts_ports_and_ipv6():
    assert parse_workers(" a.example:8000, 10.0.0.2:9 ,[::1]:65535") == ["a.example:8000", "10.0.0.2:9", "[::1]:65535"]


@pytest.mark.parametrize("spec", ["", "host", "host:", ":80", "h:0", "h:65536", "h:8x", "a:1,,b:2", "a:1,a:01"])
def test_parse_workers_refuses_malformed_lists(spec):
    with pytest.raises(ValueError, match="runtime.workers"):
        parse_workers(spec)


def test_thread_plan_from_the_machine_and_explicit():
    assert thread_plan(RuntimeConfig(), cpus=2) == ThreadPlan(2, 1)
    assert thread_plan(RuntimeConfig(), cpus=16) == ThreadPlan(16, 1)
    assert thread_plan(RuntimeConfig(client_concurrency=1), cpus=4) == ThreadPlan(1, 4)
    assert thread_plan(RuntimeConfig(client_concurrency=3, intra_op_threads=2), cpus=4) == ThreadPlan(3, 2)


@pytest.mark.parametrize("field", ["client_concurrency", "intra_op_threads"])
def test_thread_plan_refuses_negative_settings(field):
    with pytest.raises(ValueError, match=f"runtime.{field} must be >= 0"):
        thread_plan(RuntimeConfig(**{field: -1}), cpus=2)


def test_unreachable_address_is_a_clear_error():
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(WorkerUnreachable, match=f"127.0.0.1:{port} did not answer.*fedkeys worker --port {port}"):
        wait_reachable(f"127.0.0.1:{port}", timeout_s=1.0)


def _serving(port: int) -> list[int]:
    """Pids of worker_binary processes started for `port`."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                cmd = open(f"/proc/{name}/cmdline", "rb").read().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"worker_binary") and f"--port={port}".encode() in cmd:
                out.append(int(name))
    return out


@pytest.mark.slow
def test_two_remote_workers_give_the_local_runs_weights(tmp_path):
    from configs.presets import preset
    from data.dataset import FederatedData
    from data.prepare import prepare
    from federated.training import run_federated
    from federated.workers import free_port, use_runtime
    from model.weights_io import load_weights

    cfg = preset("tiny")
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, rounds=2, seed=5, tensorboard=False))
    prepare(cfg.data, str(tmp_path / "data"), progress=False)
    data = FederatedData(str(tmp_path / "data"))
    run_federated(cfg, data, str(tmp_path / "local"), progress=False)

    ports = [free_port(), free_port()]
    workers = [subprocess.Popen([sys.executable, "-m", "fedkeys.cli", "worker", "--port", str(p)], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for p in ports]
    try:
        remote = dataclasses.replace(cfg, runtime=RuntimeConfig(workers=",".join(f"127.0.0.1:{p}" for p in ports)))
        for p in ports:
            wait_reachable(f"127.0.0.1:{p}", timeout_s=120)
        assert all(len(_serving(p)) == 1 for p in ports)
        summary = run_federated(remote, data, str(tmp_path / "remote"), progress=False)
        assert summary["rounds_with_clients"] == 2
        # a worker that is gone before the run starts: named, not retried forever
        workers[1].terminate()
        workers[1].wait(30)
        with pytest.raises(WorkerUnreachable, match=f"127.0.0.1:{ports[1]}"):
            bad = dataclasses.replace(cfg, runtime=RuntimeConfig(workers=f"127.0.0.1:{ports[1]}"))
            run_federated(bad, data, str(tmp_path / "bad"), progress=False)
    finally:
        for w in workers:
            w.terminate()
            w.wait(30)
        # The remote run made these workers TFF's default context: put the local one back, or a
        # later test module in this process that calls TFF directly meets the stopped workers.
        use_runtime(cfg.runtime)
    assert [_serving(p) for p in ports] == [[], []]  # stopping `fedkeys worker` leaves nothing running
    a = load_weights(str(tmp_path / "local" / "weights.npz"))[1]
    b = load_weights(str(tmp_path / "remote" / "weights.npz"))[1]
    diff = max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))
    assert diff <= 1e-6, diff
    assert any(float(np.max(np.abs(x))) > 0 for x in a)


def test_fedkeys_worker_refuses_a_port_out_of_range(capsys):
    from fedkeys.cli import main

    assert main(["worker", "--port", "70000"]) == 2
    assert "--port must be in [1, 65535], got 70000" in capsys.readouterr().err
    assert main(["worker", "--port", "9000", "--set", "runtime.client_concurrency=-2"]) == 2
    assert "runtime.client_concurrency must be >= 0" in capsys.readouterr().err
