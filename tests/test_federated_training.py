"""TFF training checked against plain Keras SGD + numpy FedAvg (the parity foundation, issue 7),
plus DP clipping, resume and a tiny run. Slow: imports TensorFlow Federated."""

from __future__ import annotations

import csv
import dataclasses
import json
import math

import numpy as np
import pytest

from configs.presets import preset
from configs.schema import ModelConfig
from data.sequences import batches
from federated.sampling import sample_clients
from fedmath.aggregate import weighted_mean
from model.weights_io import load_weights
from tests.test_federated_fakes import FakeData

pytestmark = pytest.mark.slow

SEQ = 5


def _cfg(**train):
    base = preset("tiny")
    t = dict(rounds=2, clients_per_round=2, batch_size=3, local_epochs=2, client_learning_rate=0.7,
             max_examples_per_client=7, eval_every=1, eval_max_examples=50, seed=3, tensorboard=False,
             checkpoint_every=0)
    t.update(train)
    return dataclasses.replace(base, data=dataclasses.replace(base.data, seq_len=SEQ),
                               model=ModelConfig(embedding_dim=6, lstm_units=5),
                               train=dataclasses.replace(base.train, **t))


def _keras_reference(cfg, data, server_step, clipped_steps=None):
    """Plain Keras SGD on masked_loss per client (each step's gradient clipped to global norm
    train.client_grad_clip when > 0; whether it bound is appended to `clipped_steps`), numpy
    weighted mean, `server_step` on the server."""
    import tensorflow as tf

    from model.nwp import build_model, masked_loss

    t = cfg.train
    vocab = data.tokenizer.vocab_size
    model = build_model(cfg.model, vocab, SEQ, seed=t.seed)
    glob = [v.numpy() for v in model.trainable_weights]
    users = data.users("train")
    server_state: dict = {}
    clipped_steps = [] if clipped_steps is None else clipped_steps
    for r in range(t.rounds):
        deltas, rows = [], []
        for u in sample_clients(users, t.clients_per_round, t.seed, r):
            x, y = data.client_examples(u, SEQ, t.max_examples_per_client)
            for v, w in zip(model.trainable_weights, glob):
                v.assign(w)
            for _ in range(t.local_epochs):
                for xb, yb in batches(x, y, t.batch_size):
                    with tf.GradientTape() as tape:
                        loss = masked_loss(yb, model(xb, training=True))
                    grads = [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, model.trainable_weights)]
                    norm = math.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads))
                    scale = min(1.0, t.client_grad_clip / norm) if t.client_grad_clip > 0 else 1.0
                    clipped_steps.append(scale < 1.0)
                    for v, g in zip(model.trainable_weights, grads):
                        v.assign_sub(t.client_learning_rate * scale * g)
            deltas.append([v.numpy() - w for v, w in zip(model.trainable_weights, glob)])
            rows.append(x.shape[0])
        mean = weighted_mean(deltas, rows)
        glob = server_step(glob, mean, server_state)
    return glob


def _sgd(lr):
    def step(w, d, state):
        return [a + lr * b for a, b in zip(w, d)]
    return step


def _nesterov(lr, m):
    """Nesterov server step; `lr` a number or a list with one rate per round."""
    def step(w, d, state):
        acc = state.setdefault("v", [np.zeros_like(a) for a in w])
        r = state["round"] = state.get("round", -1) + 1
        rate = lr[r] if isinstance(lr, list) else lr
        g = [-b for b in d]  # TFF's server "gradient" is minus the mean delta
        for i in range(len(w)):
            acc[i] = m * acc[i] + g[i]
        return [a - rate * (gi + m * vi) for a, gi, vi in zip(w, g, acc)]
    return step


@pytest.fixture(scope="module")
def data():
    return FakeData(num_users=6, vocab_size=20, seq_len=SEQ, seed=1, messages=(2, 5))


@pytest.mark.parametrize("cell", ["lstm", "cifg"])
def test_one_round_equals_keras_sgd_plus_weighted_mean(tmp_path, data, cell):
    from federated.training import run_federated

    cfg = _cfg(rounds=1)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, cell=cell))
    run_federated(cfg, data, str(tmp_path), progress=False)
    _, got = load_weights(str(tmp_path / "weights.npz"))
    want = _keras_reference(cfg, data, _sgd(1.0))
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, atol=1e-5)
    users = sample_clients(data.users("train"), 2, 3, 0)
    sizes = [data.client_examples(u, SEQ, 7)[0].shape[0] for u in users]
    assert sizes[0] != sizes[1]  # so the check also covers weighting by rows


def test_client_grad_clip_clips_every_client_step_as_the_reference(tmp_path, data):
    from federated.training import run_federated

    cfg = _cfg(rounds=2, client_grad_clip=0.3)
    run_federated(cfg, data, str(tmp_path), progress=False)
    _, got = load_weights(str(tmp_path / "weights.npz"))
    clipped: list[bool] = []
    want = _keras_reference(cfg, data, _sgd(1.0), clipped)
    assert any(clipped), clipped  # the clip binds
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, atol=1e-5)
    unclipped = _keras_reference(_cfg(rounds=2), data, _sgd(1.0))
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(want, unclipped)) > 1e-3


def test_attackers_train_on_their_poisoned_examples_in_tff(tmp_path, data):
    """attack.share of the users train on `Attack.poison_data`'s examples: the TFF run equals the
    Keras reference run on the poisoned data, and differs from the clean one."""
    from configs.schema import AttackConfig
    from federated.attackers import poisoned
    from federated.training import run_federated

    cfg = dataclasses.replace(_cfg(rounds=2), attack=AttackConfig(kind="data_poison", share=0.5, seed=1))
    summary = run_federated(cfg, data, str(tmp_path), progress=False)
    _, got = load_weights(str(tmp_path / "weights.npz"))
    want = _keras_reference(cfg, poisoned(cfg.attack, data), _sgd(1.0))
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, atol=1e-5)
    clean = _keras_reference(_cfg(rounds=2), data, _sgd(1.0))
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(want, clean)) > 1e-3  # an attacker was sampled
    assert summary["attack"] == {"kind": "data_poison", "attackers": 3, "share": 0.5, "backdoor_success": None}


def test_client_grad_clip_refuses_client_momentum():
    from federated.algorithms import client_optimizer

    cfg = _cfg(rounds=1, client_grad_clip=1.0, client_momentum=0.9)
    with pytest.raises(ValueError, match="client_grad_clip"):
        client_optimizer(cfg)


def test_iterator_client_loop_gives_the_weights_of_tffs_reduce_loop(tmp_path, data, monkeypatch):
    import tensorflow_federated as tff

    import federated.algorithms
    from federated.training import run_federated

    assert federated.algorithms.CLIENT_LOOP == tff.learning.LoopImplementation.DATASET_ITERATOR
    cfg = _cfg(rounds=1)
    run_federated(cfg, data, str(tmp_path / "iterator"), progress=False)
    monkeypatch.setattr(federated.algorithms, "CLIENT_LOOP", tff.learning.LoopImplementation.DATASET_REDUCE)
    run_federated(cfg, data, str(tmp_path / "reduce"), progress=False)
    _, a = load_weights(str(tmp_path / "iterator" / "weights.npz"))
    _, b = load_weights(str(tmp_path / "reduce" / "weights.npz"))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_fedavgm_matches_nesterov_reference_over_two_rounds(tmp_path, data):
    from federated.training import run_federated

    cfg = _cfg(rounds=2, algorithm="fedavgm", server_learning_rate=0.8, server_momentum=0.9)
    run_federated(cfg, data, str(tmp_path), progress=False)
    _, got = load_weights(str(tmp_path / "weights.npz"))
    want = _keras_reference(cfg, data, _nesterov(0.8, 0.9))
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_cosine_server_schedule_steps_with_the_halved_rate_in_round_two(tmp_path, data):
    from federated.training import run_federated

    # rounds=2: round 0 at the full rate, round 1 at lr * (1 + cos(pi / 2)) / 2 = lr / 2
    cfg = _cfg(rounds=2, algorithm="fedavgm", server_learning_rate=0.8, server_momentum=0.9,
               server_lr_schedule="cosine")
    run_federated(cfg, data, str(tmp_path), progress=False)
    _, got = load_weights(str(tmp_path / "weights.npz"))
    want = _keras_reference(cfg, data, _nesterov([0.8, 0.4], 0.9))
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, atol=1e-5)
    constant = _keras_reference(cfg, data, _nesterov(0.8, 0.9))
    assert max(np.abs(a - b).max() for a, b in zip(got, constant)) > 1e-3  # the schedule did something


def test_unknown_server_schedule_is_refused(data):
    from federated.algorithms import server_optimizer

    with pytest.raises(ValueError, match="server_lr_schedule"):
        server_optimizer(_cfg(server_lr_schedule="linear"))


def test_dp_clip_bounds_the_step(tmp_path, data):
    from federated.training import run_federated
    from model.nwp import build_model

    cfg = _cfg(rounds=1, client_learning_rate=2.0)
    cfg = dataclasses.replace(cfg, privacy=dataclasses.replace(cfg.privacy, dp="fixed", clip_norm=0.01,
                                                               noise_multiplier=0.0, delta=1e-3))
    summary = run_federated(cfg, data, str(tmp_path), progress=False)
    _, got = load_weights(str(tmp_path / "weights.npz"))
    w0 = [v.numpy() for v in build_model(cfg.model, 20, SEQ, seed=3).trainable_weights]
    moved = math.sqrt(sum(float(np.sum((a - b) ** 2)) for a, b in zip(got, w0)))
    assert 0 < moved <= 0.01 + 1e-6  # unclipped, plain FedAvg moves far more (lr 2.0)
    assert summary["dp"]["epsilon"] == math.inf  # no noise: no privacy claimed


def _rows(path):
    with open(path) as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def test_resume_after_kill_gives_identical_metrics(tmp_path, data):
    from federated.training import run_federated

    cfg = _cfg(rounds=4, checkpoint_every=2, algorithm="fedadam", server_learning_rate=0.05)
    full = tmp_path / "full"
    run_federated(cfg, data, str(full), progress=False)
    cut = tmp_path / "cut"
    partial = run_federated(cfg, data, str(cut), progress=False, stop_after=3)  # killed after round 3
    assert partial["stopped_after"] == 3
    run_federated(cfg, data, str(cut), progress=False, resume=True)  # replays round 3 from ckpt 2
    assert _rows(cut / "metrics.csv") == _rows(full / "metrics.csv")
    a, b = load_weights(str(full / "weights.npz"))[1], load_weights(str(cut / "weights.npz"))[1]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert json.loads((cut / "summary.json").read_text())["resumed_from"] == 2


def test_tiny_preset_run_writes_metrics(tmp_path):
    from data.dataset import FederatedData
    from data.prepare import prepare
    from federated.training import run_federated

    cfg = preset("tiny")
    prepare(cfg.data, str(tmp_path / "data"), progress=False)
    summary = run_federated(cfg, FederatedData(str(tmp_path / "data")), str(tmp_path / "run"), progress=False)
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert len(rows) == cfg.train.rounds
    assert all(math.isfinite(float(r["top1"])) for r in rows)
    assert 0.0 <= summary["final_eval"]["top1"] <= 1.0
    assert math.isfinite(summary["final_eval"]["perplexity"])
    for name in ("config.json", "weights.npz", "summary.json"):
        assert (tmp_path / "run" / name).exists()
    assert list((tmp_path / "run" / "tensorboard").iterdir())
