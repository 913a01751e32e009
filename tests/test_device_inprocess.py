"""Phones through the in-process transport (device_sim/inprocess.py): the real collector app,
no socket. Fake models make every number checkable by hand."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from configs import preset
from device_sim.fleet import run_devices
from device_sim.inprocess import InProcessCollector
from fedmath import encodings
from tests.test_device_phone import (
    INITIAL,
    STEP,
    FakeModel,
    NoisyModel,
    _examples,
    make_bundle,
)


def _cfg(**train):
    base = preset("tiny")
    return dataclasses.replace(
        base,
        server=dataclasses.replace(base.server, goal_count=2, over_selection=1.0),
        privacy=dataclasses.replace(base.privacy, mode="none", clip_norm=100.0, noise_multiplier=0.0),
        train=dataclasses.replace(base.train, local_epochs=1, batch_size=2, client_learning_rate=0.5,
                                  max_examples_per_client=4, **train))


def _latest(col: InProcessCollector, shapes):
    version = col.collector.model_info()["version"]
    payload, _ = col.collector.weights_payload(version)
    return version, encodings.decode("float32", payload, shapes)


def test_float32_rounds_match_fedavg_by_hand(tmp_path):
    with InProcessCollector(_cfg(), str(make_bundle(tmp_path / "b"))) as col:
        # client a: 2 rows -> 1 step; client b: 3 rows -> 2 steps. delta = steps * 0.5 * STEP.
        clients = {"a": _examples(n=2), "b": _examples(n=3)}
        result = run_devices(col.url, clients, rounds=1, transport_factory=col.transport,
                             model_factory=lambda p: FakeModel(), progress=False)
        assert result.summary()["rounds_completed"] == 1
        version, weights = _latest(col, [w.shape for w in INITIAL])
    assert version == 1
    # example-weighted mean: (2 * 0.5 + 3 * 1.0) / 5 = 0.8 steps' worth of STEP
    for w, i, s in zip(weights, INITIAL, STEP):
        np.testing.assert_allclose(w, i + 0.8 * s, rtol=1e-6)


def test_server_momentum_runs_on_the_collector(tmp_path):
    """fedavg with server momentum 0.5 (TFF's heavy ball): two rounds of the same mean delta d
    move the model by d + (0.5 d + d) = 2.5 d."""
    with InProcessCollector(_cfg(server_momentum=0.5), str(make_bundle(tmp_path / "b"))) as col:
        clients = {"a": _examples(n=2), "b": _examples(n=2)}  # one step each: d = 0.5 * STEP
        run_devices(col.url, clients, rounds=2, transport_factory=col.transport,
                    model_factory=lambda p: FakeModel(), progress=False)
        version, weights = _latest(col, [w.shape for w in INITIAL])
        meta = col.collector.model_meta(2)
    assert version == 2
    assert meta["algorithm"]["server_optimizer"]["name"] == "momentum"
    for w, i, s in zip(weights, INITIAL, STEP):
        np.testing.assert_allclose(w, i + 2.5 * 0.5 * s, rtol=1e-6)


@pytest.mark.parametrize("encoding", ["int8", "topk:0.5", "topk_int8:0.5"])
def test_compressed_uploads_complete_rounds_and_cost_fewer_bytes(tmp_path, encoding):
    bundle = make_bundle(tmp_path / "b", shapes=[(64,), (32, 8)],
                         initial=[np.zeros(64, np.float32), np.zeros((32, 8), np.float32)])
    with InProcessCollector(_cfg(), str(bundle)) as col:
        clients = {f"c{i}": _examples(n=3 + i) for i in range(3)}
        result = run_devices(col.url, clients, rounds=2, transport_factory=col.transport, encoding=encoding,
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
    with InProcessCollector(_cfg(), str(bundle)) as col:
        clients = {f"c{i}": _examples(n=3 + i) for i in range(3)}
        result = run_devices(col.url, clients, rounds=2, transport_factory=col.transport, encoding=encoding,
                             model_factory=lambda p: NoisyModel(shapes), progress=False)
        _, weights = _latest(col, shapes)
    s = result.summary()
    assert s["rounds_completed"] == 2 and s["rejected"] == 0 and s["failed"] == 0
    assert s["rounds"][0]["payload_bytes_mean"] < 4 * (64 + 2048) / 8
    assert all(np.all(np.isfinite(w)) and np.any(w != 0) for w in weights)
