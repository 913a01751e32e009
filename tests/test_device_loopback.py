"""Phones with compressed uploads through the in-process collector (device_sim/loopback.py)."""

from __future__ import annotations

import numpy as np
import pytest

from device_sim.fleet import run_devices
from device_sim.loopback import LoopbackCollector
from fedmath import encodings
from tests.test_device_phone import INITIAL, STEP, FakeModel, NoisyModel, _examples, make_bundle

PLAN = {"local_epochs": 1, "batch_size": 2, "learning_rate": 0.5, "clip_norm": 100.0, "noise_std": 0.0,
        "encoding": "float32", "max_examples": 4}


def test_float32_rounds_match_fedavg_by_hand(tmp_path):
    bundle = make_bundle(tmp_path / "b")
    lb = LoopbackCollector(str(bundle), goal_count=2, plan=PLAN)
    # client a: 2 rows -> 1 step; client b: 3 rows -> 2 steps. delta = steps * 0.5 * STEP.
    clients = {"a": _examples(n=2), "b": _examples(n=3)}
    result = run_devices("loopback", clients, rounds=1, transport_factory=lb.transport,
                         model_factory=lambda p: FakeModel(), progress=False)
    assert result.summary()["rounds_completed"] == 1
    # example-weighted mean: (2 * 0.5 + 3 * 1.0) / 5 = 0.8 steps' worth of STEP
    for w, i, s in zip(lb.weights, INITIAL, STEP):
        np.testing.assert_allclose(w, i + 0.8 * s, rtol=1e-6)


@pytest.mark.parametrize("encoding", ["int8", "topk:0.5", "topk_int8:0.5"])
def test_compressed_uploads_complete_rounds_and_cost_fewer_bytes(tmp_path, encoding):
    bundle = make_bundle(tmp_path / "b", shapes=[(64,), (32, 8)],
                         initial=[np.zeros(64, np.float32), np.zeros((32, 8), np.float32)])

    lb = LoopbackCollector(str(bundle), goal_count=2, plan=PLAN)
    clients = {f"c{i}": _examples(n=3 + i) for i in range(3)}
    result = run_devices("loopback", clients, rounds=2, transport_factory=lb.transport, encoding=encoding,
                         model_factory=lambda p: NoisyModel([(64,), (32, 8)]), progress=False)
    s = result.summary()
    assert s["rounds_completed"] == 2 and s["rejected"] == 0
    mean_payload = s["rounds"][0]["payload_bytes_mean"]
    assert mean_payload < 4 * (64 + 256)
    assert len(encodings.encode(encoding, [np.ones(64), np.ones((32, 8))], rng=np.random.default_rng(0))) == mean_payload


@pytest.mark.parametrize("encoding", ["hadamard:1.75", "hadamard_sr:4"])
def test_rotated_uploads_complete_rounds_and_cost_fewer_bytes(tmp_path, encoding):
    shapes = [(64,), (32, 64)]  # the second tensor fills two rotation blocks of 1024
    bundle = make_bundle(tmp_path / "b", shapes=shapes, initial=[np.zeros(s, np.float32) for s in shapes])

    lb = LoopbackCollector(str(bundle), goal_count=2, plan=PLAN)
    clients = {f"c{i}": _examples(n=3 + i) for i in range(3)}
    result = run_devices("loopback", clients, rounds=2, transport_factory=lb.transport, encoding=encoding,
                         model_factory=lambda p: NoisyModel(shapes), progress=False)
    s = result.summary()
    assert s["rounds_completed"] == 2 and s["rejected"] == 0 and s["failed"] == 0
    assert s["rounds"][0]["payload_bytes_mean"] < 4 * (64 + 2048) / 8
    assert all(np.all(np.isfinite(w)) and np.any(w != 0) for w in lb.weights)
