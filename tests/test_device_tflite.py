"""Phones running the real TFLite bundle (tiny preset) against the real collector over HTTP."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

from configs import resolve
from configs.schema import RunConfig

pytestmark = pytest.mark.slow

_CACHE: dict[str, tuple] = {}


def tiny_stack(root: Path, cfg: RunConfig | None = None) -> tuple[RunConfig, str, str]:
    """(cfg, data dir, bundle dir) for the tiny preset, built once per test process."""
    cfg = cfg or resolve("tiny")
    key = repr(cfg)
    if key not in _CACHE:
        from data.prepare import prepare
        from tflite_export.bundle import export_bundle

        data_dir, bundle_dir = str(root / "data"), str(root / "bundle")
        prepare(cfg.data, data_dir, progress=False)
        export_bundle(cfg, None, os.path.join(data_dir, "spm.model"), bundle_dir, inference=False)
        _CACHE[key] = (cfg, data_dir, bundle_dir)
    return _CACHE[key]


def collector_config(cfg: RunConfig, bundle_dir: str, state_dir: str, **collector) -> dict:
    from server.process import server_config_dict

    cfg = dataclasses.replace(cfg, collector=dataclasses.replace(cfg.collector, **collector))
    return server_config_dict(cfg, bundle_dir, state_dir)


def attested(cfg: RunConfig):
    """The config with a new attestation issuer's public key, and the phones' transport factory."""
    from device_sim.attestation import issuer_for_run, transports

    cfg, issuer = issuer_for_run(cfg)
    return cfg, transports(issuer)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    return tiny_stack(tmp_path_factory.mktemp("tiny"))


def test_one_round_with_tflite_phones_publishes_a_new_version(stack, tmp_path):
    from data.dataset import FederatedData
    from device_sim.fleet import fetch_published_weights, run_devices
    from model.weights_io import load_weights
    from tests.test_device_phone import LiveServer

    cfg, data_dir, bundle_dir = stack
    cfg, phone_transport = attested(cfg)  # the preset requires device attestation
    srv = LiveServer(collector_config(cfg, bundle_dir, str(tmp_path / "state")))
    try:
        data = FederatedData(data_dir)
        users = data.users("train")[: cfg.devices.num_devices]
        clients = {u: data.client_examples(u, cfg.data.seq_len) for u in users}
        result = run_devices(srv.url, clients, rounds=1, concurrency=cfg.devices.concurrency, progress=False,
                             transport_factory=phone_transport)
        s = result.summary()
        assert s["rounds_completed"] == 1, s
        first = s["rounds"][0]
        assert first["model_version"] == 1 and first["accepted"] >= cfg.server.goal_count
        assert first["mean_loss"] is not None and np.isfinite(first["mean_loss"])

        _, initial = load_weights(os.path.join(bundle_dir, "weights.npz"))
        new = fetch_published_weights(srv.url, 1, [a.shape for a in initial], transport_factory=phone_transport)
        assert all(np.all(np.isfinite(w)) for w in new)
        moved = max(float(np.max(np.abs(a - b))) for a, b in zip(new, initial))
        assert moved > 0
        # every accepted update was clipped to C, so the mean delta is no longer than C
        norm = np.sqrt(sum(float(np.sum((a.astype(np.float64) - b) ** 2)) for a, b in zip(new, initial)))
        assert norm <= cfg.privacy.clip_norm * (1 + 1e-5)
    finally:
        srv.close()
