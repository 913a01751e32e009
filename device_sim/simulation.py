"""A fast in-process federated simulation with attackers: plain Keras on the clients, the
collector's own server algorithm (fedcore) on the server.

    for each round r:
        cohort  = federated.sampling.sample_clients(train users, K, seed, r)   (as TFF picks them)
        client  = local SGD of the model.nwp Keras model from the round's weights (an attacker:
                  fedmath.attacks poisons its examples first and its delta after)
        server  = fedcore ServerAlgorithm.round(state, weights, updates)    (the collector's code)

What it leaves out against the phones and the collector: TFLite (the Keras model computes the
same function; tests/test_device_parity.py), the wire format, clipping on the device, and the
collector's admission checks. What it keeps: the model, client SGD with the plan's epochs,
batch size, example cap and learning rate, uniform cohorts, and every aggregation rule and
server optimizer as the collector runs them. It exists because benchmarks/poisoning.py needs
60 runs of 30 rounds on two shared cores: TFF costs ~20 s to import and far more per round.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Hashable, Mapping, Optional, Sequence

import numpy as np

from data.sequences import batches
from data.special_ids import PAD_ID
from device_sim.run_cache import RunCache, weights_digest
from fedcore.algorithm import ServerAlgorithm
from fedcore.messages import ClientUpdate
from fedmath.attacks import Attack
from fedmath.privacy import max_plausible_norm
from fedmath.types import Weights

Examples = tuple[np.ndarray, np.ndarray]


class KerasClient:
    """Local SGD on a Keras model from `model.nwp.build_model`: all of a client's epochs and
    batches in one traced function, reused by every client.

    One call per client rather than one per batch: the tiny model's step is shorter than the
    Python round trip around it. The batches are stacked into a fixed-size [capacity, B, T]
    block (all-PAD beyond the client's own, never visited), so the function traces once per
    capacity, not once per client size. With `jit_compile` the loop is compiled by XLA; pair
    it with an `unroll=True` model (a static recurrence). Both compute the same SGD steps as a
    per-batch loop to float32 rounding (tests/test_device_simulation.py).
    """

    def __init__(self, model, jit_compile: bool = False) -> None:
        import tensorflow as tf

        from model.nwp import masked_loss

        self.model = model
        variables = model.trainable_weights

        @tf.function(jit_compile=jit_compile, reduce_retracing=True)
        def run(xs, ys, num_batches, epochs, lr):
            for _ in tf.range(epochs):
                for i in tf.range(num_batches):
                    with tf.GradientTape() as tape:
                        loss = masked_loss(ys[i], model(xs[i], training=True))
                    for v, g in zip(variables, tape.gradient(loss, variables)):
                        v.assign_sub(lr * tf.convert_to_tensor(g))
            return tf.constant(0)

        self._run = run

    def set_weights(self, weights: Weights) -> None:
        for v, w in zip(self.model.trainable_weights, weights):
            v.assign(w)

    def get_weights(self) -> list[np.ndarray]:
        return [v.numpy() for v in self.model.trainable_weights]

    def train(self, weights: Weights, x: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int,
              lr: float) -> Weights:
        """The delta of `epochs` passes of SGD over (x, y) in order (the last batch padded), from `weights`."""
        import tensorflow as tf

        self.set_weights(weights)
        steps = batches(x, y, batch_size, pad_last=True)
        if steps and epochs > 0:
            capacity = 1 << (len(steps) - 1).bit_length()  # a power of two: few distinct traces
            xs = np.full((capacity, batch_size, x.shape[1]), PAD_ID, np.int32)
            ys = np.full_like(xs, PAD_ID)
            for i, (xb, yb) in enumerate(steps):
                xs[i], ys[i] = xb, yb
            self._run(tf.constant(xs), tf.constant(ys), tf.constant(len(steps)), tf.constant(int(epochs)),
                      tf.constant(lr, tf.float32))
        return [t - np.asarray(w, np.float32) for t, w in zip(self.get_weights(), weights)]


@dataclass
class SimulationResult:
    rounds: list[dict] = field(default_factory=list)  # per round: attackers in the cohort, flagged, seconds
    weights: Optional[Weights] = None
    algorithm: Optional[ServerAlgorithm] = None  # the one that ran (a cache may resume a copy)


def simulate(algorithm: ServerAlgorithm, client: KerasClient, init: Weights, clients: Mapping[str, Examples],
             *, rounds: int, clients_per_round: int, epochs: int, batch_size: int, lr: float,
             max_examples: int, attack: Attack, attackers: Sequence[str], clip_norm: float = 0.0,
             seed: int = 0, first_round: int = 0, on_round: Optional[Callable[[int, Weights], None]] = None,
             cache: Optional[RunCache] = None, tag: Hashable = None) -> SimulationResult:
    """Run `rounds` rounds; see the module docstring.

    Args:
        algorithm: the server algorithm (`fedcore.algorithm.build`), the defence in its aggregator.
            With a cache the run may resume from a copy of it; the result's `algorithm` is the one
            that ran.
        client: the Keras trainer shared by all clients.
        init: the starting weights.
        clients: every training user's (x, y).
        attackers: the malicious users (a subset of `clients`), all running `attack`.
        clip_norm: the plan's clip (0: none). Honest clients clip to it; attackers scale up to it
            (what the collector would accept without noise), as on the phones.
        first_round: the number of the first round (cohorts are drawn per round number, so a run
            continuing another from its weights draws new cohorts).
        on_round: called after each round with (round, weights), e.g. to evaluate (not called
            for rounds resumed from the cache).
        cache: shared work with earlier runs (device_sim/run_cache.py), or None.
        tag: with a cache, what else the run depends on (its defence, attack, recipe, starting
            weights): runs share snapshots only under equal tags.
    """
    from federated.sampling import sample_clients
    from fedmath.privacy import clip_by_global_norm

    bad = set(attackers)
    unknown = bad - set(clients)
    if unknown:
        raise ValueError(f"attackers must be training users; unknown: {sorted(unknown)[:3]}")
    users = sorted(clients)
    index = {u: i for i, u in enumerate(users)}
    cohorts = [sample_clients(users, clients_per_round, seed, r) for r in range(first_round, first_round + rounds)]
    histories: list[tuple] = [()]
    for cohort in cohorts:
        histories.append(histories[-1] + (tuple(sorted(u for u in cohort if u in bad)),))
    weights = [np.asarray(w, np.float32) for w in init]
    dim = sum(int(np.size(w)) for w in weights)
    max_norm = max_plausible_norm(clip_norm, 0.0, dim, 0.0) if clip_norm > 0 else None
    result = SimulationResult()
    done, snap = cache.resume(tag, histories) if cache is not None else (0, None)
    if snap is not None:
        algorithm, state, weights, result.rounds = snap.algorithm, snap.state, snap.weights, snap.rounds
    else:
        state = algorithm.init_state(weights)
    recipe = (epochs, batch_size, lr, max_examples, clip_norm, seed)
    for k in range(done, rounds):
        r, cohort = first_round + k, cohorts[k]
        t0 = time.perf_counter()
        digest = weights_digest(weights) if cache is not None else ""
        updates = []
        for user in cohort:
            x, y = clients[user]
            if max_examples > 0:
                x, y = x[:max_examples], y[:max_examples]
            key = (digest, user, r, attack if user in bad else None, recipe)
            delta = cache.delta(key) if cache is not None else None
            if delta is None:
                rng = np.random.default_rng([seed, r, index[user]])
                if user in bad:
                    x, y = attack.poison_data(x, y, rng)
                delta = client.train(weights, x, y, epochs=epochs, batch_size=batch_size, lr=lr)
                if user in bad:
                    delta = attack.poison_update(delta, rng, max_norm)
                elif max_norm is not None:
                    delta, _ = clip_by_global_norm(delta, clip_norm)
                if cache is not None:
                    cache.keep_delta(key, delta)
            updates.append(ClientUpdate(delta, int(len(x)), device_id=user, model_version=k))
        state, weights, _ = algorithm.round(state, weights, updates)
        flagged = getattr(algorithm.aggregator, "flagged", None)
        result.rounds.append({"round": r, "attackers": sum(u in bad for u in cohort),
                              "flagged": flagged() if flagged is not None else 0,
                              "flagged_attackers": _flagged_attackers(algorithm, bad),
                              "seconds": round(time.perf_counter() - t0, 3)})
        if cache is not None:
            cache.save(tag, histories[k + 1], algorithm, state, weights, result.rounds)
        if on_round is not None:
            on_round(r, weights)
    result.weights = weights
    result.algorithm = algorithm
    return result


def _flagged_attackers(algorithm: ServerAlgorithm, bad: set) -> int:
    last = getattr(algorithm.aggregator, "last", None)
    if last is None or not hasattr(last, "scores"):
        return 0
    return sum(s.flagged and d in bad for s, d in zip(last.scores, last.device_ids))
