"""Parity (issue 7): TFLite phones + the collector over HTTP compute what the TFF simulation computes.

Same initial weights, the same cohorts from `federated.sampling.sample_clients` in the same
order, the same local epochs, batch size and learning rates, no clipping that binds, no noise,
float32 uploads: after 3 rounds the two models' weights differ by at most 1e-4 (max abs).
"""

from __future__ import annotations

import pytest

from configs import resolve

pytestmark = pytest.mark.slow


def test_devices_over_http_match_tff_after_three_rounds(tmp_path):
    from device_sim.parity import run_parity
    from tests.test_device_tflite import tiny_stack

    cfg, data_dir, _ = tiny_stack(tmp_path / "stack", resolve("tiny"))
    result = run_parity(cfg, data_dir, str(tmp_path / "parity"), rounds=3)
    assert result["fleet"]["rounds_completed"] == 3 and result["fleet"]["accepted"] == 3 * cfg.train.clients_per_round
    assert result["max_abs_change_from_initial"] > 1e-2  # the models did move
    assert result["max_abs_diff"] <= 1e-4, result


def test_parity_config_refuses_other_algorithms():
    import dataclasses

    from device_sim.parity import parity_config

    cfg = resolve("tiny")
    with pytest.raises(ValueError, match="fedavg"):
        parity_config(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, algorithm="fedadam")), 3)
    p = parity_config(cfg, 3)
    assert p.server.goal_count == cfg.train.clients_per_round and p.server.over_selection == 1.0
    assert p.privacy.noise_multiplier == 0.0 and p.server.batch_size == cfg.train.batch_size
