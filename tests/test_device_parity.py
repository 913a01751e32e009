"""Parity: TFLite phones + the collector over HTTP compute what the TFF simulation computes, for
every server optimizer of the algorithm core and with a clip that binds (device_sim/parity.py).

Same initial weights, the same cohorts from `federated.sampling.sample_clients` in the same
order, the same local epochs, batch size, learning rates and server optimizer (one `train`
section read by both), no noise, float32 uploads: after 2 rounds (the second starts from the
server optimizer's state after the first) the two models' weights differ by at most 1e-4 (max
abs). `benchmarks/parity.py` runs the same cases for 3 rounds. The first case's exported bundle
serves the others (the same start; `check_bundle_start` verifies it): a conversion costs seconds.
"""

from __future__ import annotations

import dataclasses

import pytest

from configs import resolve
from device_sim.parity import CASES, case_config, parity_config

ROUNDS = 2
_BUNDLE: dict[str, str] = {}  # the first case's bundle, for the others


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_devices_over_http_match_tff(tmp_path_factory, case):
    from device_sim.parity import run_parity
    from tests.test_device_tflite import tiny_stack

    base, data_dir, _ = tiny_stack(tmp_path_factory.getbasetemp() / "parity_stack", resolve("tiny"))
    cfg = case_config(base, case, rounds=ROUNDS)
    clip = cfg.privacy.clip_norm if case.endswith("_clipped") else None
    out = tmp_path_factory.mktemp(case)
    result = run_parity(cfg, data_dir, str(out), rounds=ROUNDS, clip_norm=clip, bundle_from=_BUNDLE.get("first"))
    _BUNDLE.setdefault("first", str(out / "bundle"))
    assert result["fleet"]["rounds_completed"] == ROUNDS
    assert result["fleet"]["accepted"] == ROUNDS * cfg.train.clients_per_round
    assert result["max_abs_change_from_initial"] > 1e-2  # the models did move
    assert result["max_abs_diff"] <= 1e-4, result
    expected = {"fedavg": "sgd", "fedavgm": "nesterov", "fedadam": "adam", "fedyogi": "yogi"}.get(case, "sgd")
    assert result["algorithm"]["server_optimizer"]["name"] == expected
    if clip is not None:
        assert result["clipped_fraction"] >= 0.5, result  # the clip binds on most clients
        assert result["algorithm"]["aggregator"]["name"] == "uniform_mean"


@pytest.mark.slow
def test_a_bundle_of_another_start_is_refused(tmp_path_factory):
    """`bundle_from` is used only for the very start it was exported for."""
    from data.dataset import FederatedData
    from device_sim.parity import check_bundle_start, parity_config
    from federated.tff_model import initial_weights
    from tests.test_device_tflite import tiny_stack

    base, data_dir, bundle = tiny_stack(tmp_path_factory.getbasetemp() / "parity_stack", resolve("tiny"))
    if "first" in _BUNDLE:
        bundle = _BUNDLE["first"]  # exported from initial_weights: must pass as it is
    cfg = parity_config(base, ROUNDS)
    vocab = int(FederatedData(data_dir).tokenizer.vocab_size)
    init = initial_weights(cfg.model, vocab, cfg.data.seq_len, cfg.train.seed)
    if "first" in _BUNDLE:
        check_bundle_start(bundle, cfg, vocab, init)
    with pytest.raises(ValueError, match="seeded initial weights"):
        check_bundle_start(bundle, cfg, vocab, [w + 1e-3 for w in init])
    other = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, client_learning_rate=0.123))
    with pytest.raises(ValueError, match="learning_rate"):
        check_bundle_start(bundle, other, vocab, init)


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
