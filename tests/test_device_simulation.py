"""device_sim/simulation.py and device_sim/run_cache.py: the compiled client loop computes the
per-batch SGD steps, and runs that share work through a RunCache end exactly where they would
have ended alone."""

from __future__ import annotations

import numpy as np
import pytest

from configs.schema import ModelConfig
from data.sequences import batches
from device_sim.run_cache import RunCache, weights_digest
from fedmath.attacks import Attack

pytestmark = pytest.mark.slow

VOCAB, SEQ, MODEL = 40, 6, ModelConfig(embedding_dim=4, lstm_units=6)


def _data(n_users: int = 8, rows: int = 11) -> dict:
    rng = np.random.default_rng(0)
    out = {}
    for i in range(n_users):
        x = rng.integers(4, VOCAB, size=(rows, SEQ)).astype(np.int32)
        out[f"u{i:02d}"] = (x, np.roll(x, -1, axis=1))
    return out


def _per_batch_delta(model, weights, x, y, epochs, batch_size, lr):
    """Local SGD one batch at a time in eager mode: the reference the compiled loop must match."""
    import tensorflow as tf

    from model.nwp import masked_loss

    for v, w in zip(model.trainable_weights, weights):
        v.assign(w)
    for _ in range(epochs):
        for xb, yb in batches(x, y, batch_size, pad_last=True):
            with tf.GradientTape() as tape:
                loss = masked_loss(tf.constant(yb), model(tf.constant(xb), training=True))
            for v, g in zip(model.trainable_weights, tape.gradient(loss, model.trainable_weights)):
                v.assign_sub(lr * tf.convert_to_tensor(g))
    return [v.numpy() - w for v, w in zip(model.trainable_weights, weights)]


@pytest.mark.parametrize("jit", [False, True])
def test_compiled_client_loop_takes_the_per_batch_steps(jit):
    from device_sim.simulation import KerasClient
    from model.nwp import build_model

    reference = build_model(MODEL, VOCAB, SEQ, seed=0)
    client = KerasClient(build_model(MODEL, VOCAB, SEQ, seed=0, unroll=jit), jit_compile=jit)
    init = [v.numpy() for v in reference.trainable_weights]
    for x, y in list(_data().values())[:2]:  # 11 rows, batch 4: a padded last batch, capacity 4 > 3 batches
        got = client.train(init, x, y, epochs=2, batch_size=4, lr=0.5)
        want = _per_batch_delta(reference, init, x, y, 2, 4, 0.5)
        assert max(float(np.max(np.abs(g - w))) for g, w in zip(got, want)) < 1e-5
        assert max(float(np.max(np.abs(w))) for w in want) > 1e-3  # it did train


def _run(client, init, clients, share_attackers, cache, defense="screened:inner=norm_bound"):
    import dataclasses

    from configs.schema import TrainConfig
    from device_sim.simulation import simulate
    from fedcore.algorithm import build

    algorithm = build(dataclasses.replace(TrainConfig(), algorithm="fedavg", server_learning_rate=1.0,
                                          aggregator=defense))
    attack = Attack(kind="sign_flip", boost=10.0, vocab_size=VOCAB)
    return simulate(algorithm, client, init, clients, rounds=4, clients_per_round=4, epochs=1, batch_size=4,
                    lr=0.5, max_examples=8, attack=attack, attackers=share_attackers, seed=3, first_round=0,
                    cache=cache, tag=(defense, attack))


def test_runs_resumed_from_the_cache_end_where_they_would_alone():
    from device_sim.simulation import KerasClient
    from federated.sampling import sample_clients
    from model.nwp import build_model

    clients = _data(n_users=24)
    users = sorted(clients)
    cohorts = [sample_clients(users, 4, 3, r) for r in range(4)]
    early = cohorts[0][0]  # an attacker in round 0, and one more first drawn in round 3
    late = next(u for u in cohorts[3] if all(u not in c for c in cohorts[:3]))
    small, large = [early], [early, late]
    client = KerasClient(build_model(MODEL, VOCAB, SEQ, seed=0))
    init = [v.numpy() for v in client.model.trainable_weights]
    alone = _run(client, init, clients, large, None)
    cache = RunCache()
    first = _run(client, init, clients, small, cache)
    shared = _run(client, init, clients, large, cache)
    assert cache.hits["rounds"] == 3  # the large run resumed before round 3, where `late` first appears
    assert weights_digest(shared.weights) == weights_digest(alone.weights)
    assert [r["flagged"] for r in shared.rounds] == [r["flagged"] for r in alone.rounds]
    assert weights_digest(first.weights) != weights_digest(alone.weights)
    # a run under another tag shares no snapshot, only client updates trained from equal weights
    before = dict(cache.hits)
    _run(client, init, clients, large, cache, defense="median")
    assert cache.hits["rounds"] == before["rounds"] and cache.hits["deltas"] > before["deltas"]
