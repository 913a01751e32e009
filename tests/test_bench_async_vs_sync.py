"""benchmarks/async_vs_sync.py end to end in its `--stub-training` form (zero updates, no top-1)."""

from __future__ import annotations

import os
import sys

import pytest

from benchmarks import async_vs_sync

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


@pytest.fixture(autouse=True)
def _benchmark_siblings_importable(monkeypatch):
    """The script imports its sibling scripts by bare name (`import fleet_day`), as when run from
    benchmarks/. Their folder goes at the end of sys.path, for this test only: at the front, its
    secagg.py would shadow the secagg package for every later import in this process."""
    monkeypatch.setattr(sys, "path", [*sys.path, BENCHMARKS])


@pytest.mark.slow
def test_stub_training_counts_the_fleet_and_the_sync_round_times(tmp_path):
    common = ["--small", "--stub-training", "--sim-hours", "1", "--workdir", str(tmp_path / "w")]
    half = async_vs_sync.main(common + ["--policies", "sync"])  # one half of the day: no comparison yet
    assert half["pending"] == ["fedbuff"] and half["speedup_to_target"] is None and "fedbuff" not in half
    assert half["sync"]["updates_trained"] >= 1
    out = async_vs_sync.main(common + ["--policies", "fedbuff"])  # the other half, sync read from the workdir
    assert out["sync"]["updates_trained"] == half["sync"]["updates_trained"]
    assert out["stub_training"] and out["concurrency"] == 16  # twice the buffer K = 8: two buffers in flight
    sync, fedbuff = out["sync"], out["fedbuff"]
    for s in (sync, fedbuff):
        assert s["updates_trained"] == s["updates_accepted"] + s["updates_wasted"]
        assert s["admitted"] >= s["updates_trained"] + s["dropouts"]
    rt = sync["round_times"]
    assert rt["rounds"] >= sync["versions"] >= 1
    assert rt["never_filled"] < rt["rounds"]  # 200 phones at night fill most rounds
    assert 0 <= rt["mean_fill_s"] <= rt["mean_round_s"] <= 300.0  # the sync deadline
    assert sum(fedbuff["staleness"].values()) == fedbuff["updates_accepted"]
    assert fedbuff["updates_wasted"] == 0  # max staleness 100 refuses nothing in an hour of 200 phones


def test_the_server_step_is_chosen_on_validation_top1_first_of_ties():
    from benchmarks.async_vs_sync import choose_by_validation

    assert choose_by_validation({0.25: 0.10, 0.5: 0.21, 1.0: 0.18}) == 0.5
    assert choose_by_validation({0.5: 0.2, 1.0: 0.2}) == 0.5


def test_a_grid_with_stub_training_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="needs trained runs"):
        async_vs_sync.main(["--small", "--stub-training", "--server-lr-grid", "0.5,1.0",
                            "--workdir", str(tmp_path / "w")])


def test_the_trainer_runs_the_phones_clipped_step_and_skips_pad_rows_exactly():
    import dataclasses

    import numpy as np

    from configs import preset
    from model.nwp import build_model
    from tflite_export.trainable import sgd_step

    cfg = preset("tiny")
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, client_grad_clip=0.05, local_epochs=1))
    rng = np.random.default_rng(3)
    x = rng.integers(4, 40, size=(11, cfg.data.seq_len)).astype(np.int32)  # one full batch of 8, one of 3
    y = np.roll(x, -1, axis=1)
    model = build_model(cfg.model, 40, cfg.data.seq_len, unroll=True)
    start = [w.numpy() for w in model.trainable_weights]
    ticket = type("T", (), {"version": 0, "issued_at": 0})

    deltas = {}
    for pad in (True, False):
        train = async_vs_sync._trainer(cfg, 40, {"u": (x, y)}, 0.0, 0, pad_last=pad)
        deltas[pad] = train("u", start, ticket).delta
    # by hand: the phone's step, clipped at 0.05, on the two batches as they are
    lr = np.float32(cfg.train.client_learning_rate)
    for sl in (slice(0, 8), slice(8, 11)):
        sgd_step(model, x[sl], y[sl], lr, 0.05)
    want = [w.numpy() - s for w, s in zip(model.trainable_weights, start)]
    for a, b, c in zip(deltas[True], deltas[False], want):
        np.testing.assert_allclose(a, b, atol=1e-6)
        np.testing.assert_allclose(b, c, atol=1e-6)
    # each step moved the weights by at most lr * clip: the clip is applied
    assert 0 < np.sqrt(sum(float(np.sum(d * d)) for d in want)) <= 2 * lr * 0.05 + 1e-6


def test_the_goal_is_missed_once_fedbuff_is_not_at_the_target_by_sync_hours_over_2_5():
    from benchmarks.async_vs_sync import goal_missed_at

    # sync reached its target at 4.0 h: FedBuff must be there by 1.6 h
    assert not goal_missed_at(1.5, False, 4.0)  # still time
    assert goal_missed_at(1.6, False, 4.0)  # reaching it later gives at most 4.0 / 1.7 < 2.5
    assert not goal_missed_at(1.6, True, 4.0) and not goal_missed_at(3.9, True, 4.0)
    assert goal_missed_at(1.7, False, 4.0)


def test_each_policy_gets_the_preset_server_step_unless_its_own_flags_replace_it():
    import argparse

    import numpy as np

    from benchmarks.async_vs_sync import server_algorithm
    from configs import preset
    from fedcore.messages import Aggregate

    cfg = preset("default")  # FedAvgM: Nesterov 0.9 at lr 1.0
    args = argparse.Namespace(sync_server_lr=0.0, sync_server_momentum=-1.0,
                              fedbuff_server_lr=0.5, fedbuff_server_momentum=0.0)

    def two_steps(name: str) -> float:  # two server steps along the same mean delta of 1
        alg = server_algorithm(name, cfg, args, dp_noise=True)
        state, w = alg.init_state([np.zeros(1, np.float32)]), [np.zeros(1, np.float32)]
        for _ in range(2):
            state, w = alg.apply(state, w, Aggregate([np.ones(1, np.float32)], 8, 8.0))
        return float(w[0][0])

    # Nesterov: steps g(1 + m) = 1.9, then g + m(m g + g) = 2.71
    assert two_steps("sync") == pytest.approx(1.9 + 2.71, rel=1e-6)
    assert two_steps("fedbuff") == pytest.approx(0.5 + 0.5)  # momentum 0: plain SGD, no accumulation
    d = server_algorithm("fedbuff", cfg, args, dp_noise=True).describe()
    assert d["server_optimizer"]["momentum"] == 0.0 and d["server_optimizer"]["learning_rate"] == 0.5
    assert d["aggregator"] == server_algorithm("sync", cfg, args, dp_noise=True).describe()["aggregator"]


def test_a_saved_run_without_its_server_optimizer_gets_the_one_its_arguments_built():
    from benchmarks.async_vs_sync import recorded_server_optimizer
    from configs import preset

    cfg = preset("default")
    old = {"args": {"sync_server_lr": 0.0, "fedbuff_server_lr": 0.5}}  # saved before momentum flags existed
    assert recorded_server_optimizer("fedbuff", cfg, old)["momentum"] == 0.9  # the preset's Nesterov
    assert recorded_server_optimizer("fedbuff", cfg, old)["learning_rate"] == 0.5
    assert recorded_server_optimizer("sync", cfg, old)["learning_rate"] == 1.0
    assert recorded_server_optimizer("sync", cfg, {"server_optimizer": {"name": "sgd"}}) == {"name": "sgd"}
