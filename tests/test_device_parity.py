"""Parity: TFLite phones + the collector over HTTP compute what the TFF simulation computes, for
every server optimizer of the algorithm core and with a clip that binds (device_sim/parity.py).

Same initial weights, the same cohorts from `federated.sampling.sample_clients` in the same
order, the same local epochs, batch size, learning rates and server optimizer (one `train`
section read by both), no noise, float32 uploads: after 3 rounds the two models' weights differ
by at most 1e-4 (max abs). `benchmarks/parity.py` runs the same cases.
"""

from __future__ import annotations

import dataclasses

import pytest

from configs import resolve
from device_sim.parity import CASES, case_config, parity_config


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_devices_over_http_match_tff_after_three_rounds(tmp_path_factory, case):
    from device_sim.parity import run_parity
    from tests.test_device_tflite import tiny_stack

    base, data_dir, _ = tiny_stack(tmp_path_factory.getbasetemp() / "parity_stack", resolve("tiny"))
    cfg = case_config(base, case, rounds=3)
    clip = cfg.privacy.clip_norm if case.endswith("_clipped") else None
    result = run_parity(cfg, data_dir, str(tmp_path_factory.mktemp(case)), rounds=3, clip_norm=clip)
    assert result["fleet"]["rounds_completed"] == 3 and result["fleet"]["accepted"] == 3 * cfg.train.clients_per_round
    assert result["max_abs_change_from_initial"] > 1e-2  # the models did move
    assert result["max_abs_diff"] <= 1e-4, result
    expected = {"fedavg": "sgd", "fedavgm": "nesterov", "fedadam": "adam", "fedyogi": "yogi"}.get(case, "sgd")
    assert result["algorithm"]["server_optimizer"]["name"] == expected
    if clip is not None:
        assert result["clipped_fraction"] >= 0.5, result  # the clip binds on most clients
        assert result["algorithm"]["aggregator"]["name"] == "uniform_mean"


def test_parity_config_sets_both_paths_alike():
    cfg = resolve("tiny")
    with pytest.raises(ValueError, match="fedprox"):
        parity_config(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, algorithm="fedprox")), 3)
    with pytest.raises(ValueError, match="aggregator"):
        parity_config(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, aggregator="median")), 3)
    p = parity_config(cfg, 3)
    assert p.server.goal_count == cfg.train.clients_per_round and p.server.over_selection == 1.0
    assert p.privacy.noise_multiplier == 0.0 and p.train.aggregator == "weighted_mean"
    c = case_config(cfg, "fedavg_clipped", 3)
    assert (c.privacy.mode, c.privacy.dp, c.train.aggregator) == ("device", "fixed", "uniform_mean")
    assert case_config(cfg, "fedadam", 3).train.algorithm == "fedadam"
