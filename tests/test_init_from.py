"""`fedkeys train --init-from`: start federated training from pretrained weights of the same model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from model.weights_io import init_weights_path, load_init_weights, save_weights


def test_init_from_refuses_weights_of_another_shape_naming_both(tmp_path):
    save_weights(str(tmp_path / "weights.npz"), ["w000_a", "w001_b"], [np.zeros((4, 3)), np.zeros(3)])
    with pytest.raises(ValueError, match=r"shapes \[\(4, 3\), \(3,\)\] do not fit .* shapes are \[\(5, 3\), \(3,\)\]"):
        load_init_weights(str(tmp_path), [(5, 3), (3,)])  # a run directory: its weights.npz
    got = load_init_weights(str(tmp_path / "weights.npz"), [(4, 3), (3,)])
    assert [a.shape for a in got] == [(4, 3), (3,)]
    with pytest.raises(FileNotFoundError, match="no weights"):
        init_weights_path(str(tmp_path / "missing"))


@pytest.mark.slow
def test_federated_run_starts_from_the_given_weights_and_refuses_others(tmp_path):
    from federated.training import run_federated
    from model.nwp import build_model, weight_names
    from model.weights_io import load_weights
    from tests.test_federated_fakes import FakeData
    from tests.test_federated_training import SEQ, _cfg

    data = FakeData(num_users=6, vocab_size=20, seq_len=SEQ, seed=1, messages=(2, 5))
    cfg = _cfg(rounds=1, client_learning_rate=1e-6)
    model = build_model(cfg.model, 20, SEQ, seed=3)
    start = [v.numpy() + 0.5 for v in model.trainable_weights]
    save_weights(str(tmp_path / "pre.npz"), weight_names(model), start)
    run_federated(cfg, data, str(tmp_path / "run"), progress=False, init_from=str(tmp_path / "pre.npz"))
    _, got = load_weights(str(tmp_path / "run" / "weights.npz"))
    for a, b in zip(got, start):
        np.testing.assert_allclose(a, b, atol=1e-4)  # lr 1e-6: one round barely moves them
    wider = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, lstm_units=7))
    with pytest.raises(ValueError, match="do not fit the model being trained"):
        run_federated(wider, data, str(tmp_path / "run2"), progress=False, init_from=str(tmp_path / "pre.npz"))


def test_audit_needs_a_data_directory(tmp_path, capsys):
    from fedkeys.cli import main

    assert main(["audit", "--out", str(tmp_path / "a")]) == 2
    assert "audit needs --data" in capsys.readouterr().err
