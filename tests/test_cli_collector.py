"""The collector's settings are a section of the run config: `--set collector.FIELD=VALUE` (and
the algorithm's `train` fields) reach a collector started by `fedkeys serve`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import requests

from configs import resolve, write_config
from configs.io import apply_overrides
from server.testing import make_bundle


def test_collector_fields_and_aliases_resolve_into_one_config():
    cfg = resolve("tiny", ["collector.min_reports=2", "collector.server_momentum=0.9",
                           "collector.report_deadline_s=30"])
    assert cfg.collector.min_reports == 2 and cfg.collector.report_deadline_s == 30.0
    assert cfg.train.server_momentum == 0.9  # the collector runs the algorithm's one field
    with pytest.raises(ValueError, match="no field 'nosuch'"):
        apply_overrides(cfg, ["collector.nosuch=1"])


def test_serve_takes_collector_and_algorithm_overrides(tmp_path):
    bundle = tmp_path / "bundle"
    make_bundle(str(bundle))
    write_config(resolve("tiny"), str(bundle))  # as `fedkeys export` leaves it
    out = tmp_path / "serve"
    # port 0: `fedkeys serve` binds a free port itself and hands gunicorn the socket; its summary says where
    cmd = [sys.executable, "-m", "fedkeys.cli", "serve", "--bundle", str(bundle), "--out", str(out),
           "--port", "0", "--set", "server.goal_count=6", "--set", "collector.min_reports=5",
           "--set", "collector.server_momentum=0.9", "--set", "train.algorithm=fedavgm"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        status = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                url = json.loads((out / "summary.json").read_text())["url"]
                status = requests.get(f"{url}/v1/status", timeout=2).json()
                break
            except (OSError, ValueError, requests.RequestException):  # no summary yet, or not serving yet
                time.sleep(0.3)
        assert status is not None, proc.stdout.read().decode() if proc.poll() is not None else "no answer"
        assert status["round"]["min_reports"] == 5 and status["round"]["goal_count"] == 6
        opt = status["algorithm"]["server_optimizer"]
        assert (opt["name"], opt["momentum"]) == ("nesterov", 0.9)
        written = json.loads((out / "server.json").read_text())
        assert written["collector"]["min_reports"] == 5 and written["train"]["server_momentum"] == 0.9
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
