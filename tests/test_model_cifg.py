"""The Gboard CIFG cell: parameter count, determinism, and one step checked by hand in numpy."""

from __future__ import annotations

import numpy as np
import pytest

from configs.schema import ModelConfig

tf = pytest.importorskip("tensorflow")

from model.nwp import build_model, count_params, param_report  # noqa: E402


def test_gboard_sizes_give_about_1_4m_params():
    rep = param_report(ModelConfig(embedding_dim=96, lstm_units=670, cell="cifg"), 10_000, 20)
    # V*E + 3U*2E + 3U + U*E + V  (embedding, kernel, recurrent kernel, bias, projection, output bias)
    assert rep["params"] == 10_000 * 96 + 3 * 670 * 192 + 3 * 670 + 670 * 96 + 10_000 == 1_422_250
    assert [w["shape"] for w in rep["weights"]] == [[10000, 96], [96, 2010], [96, 2010], [2010], [670, 96], [10000]]


def test_same_seed_same_weights_and_lstm_path_unchanged():
    cfg = ModelConfig(embedding_dim=4, lstm_units=6, cell="cifg")
    a, b = build_model(cfg, 12, 3, seed=5), build_model(cfg, 12, 3, seed=5)
    for v, w in zip(a.trainable_weights, b.trainable_weights):
        np.testing.assert_array_equal(v.numpy(), w.numpy())
    lstm = build_model(ModelConfig(embedding_dim=4, lstm_units=6), 12, 3)
    assert lstm.name == "nwp_lstm" and len(lstm.trainable_weights) == 7
    with pytest.raises(ValueError, match="cell"):
        build_model(ModelConfig(cell="gru"), 12, 3)


def test_cifg_forward_matches_numpy():
    cfg = ModelConfig(embedding_dim=3, lstm_units=4, cell="cifg")
    m = build_model(cfg, 7, 2, seed=1)
    rng = np.random.default_rng(0)
    weights = [rng.normal(0, 0.5, v.shape).astype(np.float32) for v in m.trainable_weights]
    for v, w in zip(m.trainable_weights, weights):
        v.assign(w)
    emb, kernel, rec, bias, proj, out_b = weights
    x = np.array([[2, 5]], np.int32)
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    h, c, logits = np.zeros(3), np.zeros(4), []
    for t in range(2):
        z = emb[x[0, t]] @ kernel + h @ rec + bias
        f, cc, o = z[:4], z[4:8], z[8:]
        c = sig(f) * c + (1 - sig(f)) * np.tanh(cc)
        h = (sig(o) * np.tanh(c)) @ proj
        logits.append(h @ emb.T + out_b)
    np.testing.assert_allclose(m(x).numpy()[0], np.array(logits), atol=1e-5)
    assert count_params(m) == 7 * 3 + 2 * 3 * 4 * 3 + 12 + 4 * 3 + 7
