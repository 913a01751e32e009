"""DP-FTRL through TFF's tree-aggregation DP factory. Slow: imports TensorFlow Federated."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from model.weights_io import load_weights
from tests.test_federated_training import SEQ, _cfg
from tests.test_federated_fakes import FakeData

pytestmark = pytest.mark.slow


def test_ftrl_round_one_carries_one_leafs_noise_and_is_accounted(tmp_path):
    from federated.training import run_federated
    from model.nwp import build_model

    data = FakeData(num_users=6, vocab_size=20, seq_len=SEQ, seed=1, messages=(2, 5))
    cfg = _cfg(rounds=1, selection="epoch", server_learning_rate=1.0)
    # clip 1e-6: the signal is negligible; noise per node z*C = 0.01 on the sum, / cohort 2
    cfg = dataclasses.replace(cfg, privacy=dataclasses.replace(cfg.privacy, dp="ftrl", clip_norm=1e-6,
                                                               noise_multiplier=1e4, delta=1e-3))
    summary = run_federated(cfg, data, str(tmp_path), progress=False)
    _, got = load_weights(str(tmp_path / "weights.npz"))
    w0 = [v.numpy() for v in build_model(cfg.model, 20, SEQ, seed=3).trainable_weights]
    moved = np.concatenate([(a - b).ravel() for a, b in zip(got, w0)])
    assert moved.size > 300
    assert np.std(moved) == pytest.approx(0.01 / 2, rel=0.2)
    # 6 users, cohort 2: 3 rounds per pass, one tree per pass; round 1 alone: depth 1, rho = 1/(2 z^2)
    assert summary["dp"]["restart_every"] == 3
    assert summary["dp"]["rho"] == pytest.approx(1 / (2 * 1e8))
