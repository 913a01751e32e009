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
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from data.sequences import batches
from fedcore.algorithm import ServerAlgorithm
from fedcore.messages import ClientUpdate
from fedmath.attacks import Attack, Backdoor
from fedmath.privacy import max_plausible_norm
from fedmath.types import Weights

Examples = tuple[np.ndarray, np.ndarray]


class KerasClient:
    """Local SGD on a Keras model from `model.nwp.build_model`, one traced step reused by all clients."""

    def __init__(self, model) -> None:
        import tensorflow as tf

        from model.nwp import masked_loss

        self.model = model
        variables = model.trainable_weights

        @tf.function(reduce_retracing=True)
        def step(xb, yb, lr):
            with tf.GradientTape() as tape:
                loss = masked_loss(yb, model(xb, training=True))
            for v, g in zip(variables, tape.gradient(loss, variables)):
                v.assign_sub(lr * tf.convert_to_tensor(g))
            return loss

        self._step = step

    def set_weights(self, weights: Weights) -> None:
        for v, w in zip(self.model.trainable_weights, weights):
            v.assign(w)

    def get_weights(self) -> list[np.ndarray]:
        return [v.numpy() for v in self.model.trainable_weights]

    def train(self, weights: Weights, x: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int,
              lr: float) -> Weights:
        """The delta of `epochs` passes of SGD over (x, y) in order, from `weights`."""
        import tensorflow as tf

        self.set_weights(weights)
        rate = tf.constant(lr, tf.float32)
        for _ in range(epochs):
            for xb, yb in batches(x, y, batch_size, pad_last=True):
                self._step(tf.constant(xb), tf.constant(yb), rate)
        return [t - np.asarray(w, np.float32) for t, w in zip(self.get_weights(), weights)]


@dataclass
class SimulationResult:
    rounds: list[dict] = field(default_factory=list)  # per round: attackers in the cohort, flagged, seconds
    weights: Optional[Weights] = None


def backdoor_success(model, weights: Weights, backdoor: Backdoor, x: np.ndarray, batch_size: int = 256) -> float:
    """Share of the held-out rows `x`, each with the trigger planted, whose top-1 is the target."""
    import tensorflow as tf

    for v, w in zip(model.trainable_weights, weights):
        v.assign(w)
    px, pos = backdoor.contexts(x)
    hits = []
    for a in range(0, len(px), batch_size):
        logits = model(tf.constant(px[a:a + batch_size]), training=False).numpy()
        rows = np.arange(len(logits))
        hits.append(logits[rows, pos[a:a + batch_size]])
    return backdoor.success(np.concatenate(hits))


def simulate(algorithm: ServerAlgorithm, client: KerasClient, init: Weights, clients: Mapping[str, Examples],
             *, rounds: int, clients_per_round: int, epochs: int, batch_size: int, lr: float,
             max_examples: int, attack: Attack, attackers: Sequence[str], clip_norm: float = 0.0,
             seed: int = 0, first_round: int = 0, on_round: Optional[Callable[[int, Weights], None]] = None) -> SimulationResult:
    """Run `rounds` rounds; see the module docstring.

    Args:
        algorithm: the server algorithm (`fedcore.algorithm.build`), the defence in its aggregator.
        client: the Keras trainer shared by all clients.
        init: the starting weights.
        clients: every training user's (x, y).
        attackers: the malicious users (a subset of `clients`), all running `attack`.
        clip_norm: the plan's clip (0: none). Honest clients clip to it; attackers scale up to it
            (what the collector would accept without noise), as on the phones.
        first_round: the number of the first round (cohorts are drawn per round number, so a run
            continuing another from its weights draws new cohorts).
        on_round: called after each round with (round, weights), e.g. to evaluate.
    """
    from federated.sampling import sample_clients

    bad = set(attackers)
    unknown = bad - set(clients)
    if unknown:
        raise ValueError(f"attackers must be training users; unknown: {sorted(unknown)[:3]}")
    users = sorted(clients)
    weights = [np.asarray(w, np.float32) for w in init]
    state = algorithm.init_state(weights)
    dim = sum(int(np.size(w)) for w in weights)
    max_norm = max_plausible_norm(clip_norm, 0.0, dim, 0.0) if clip_norm > 0 else None
    result = SimulationResult()
    for r in range(first_round, first_round + rounds):
        t0 = time.perf_counter()
        cohort = sample_clients(users, clients_per_round, seed, r)
        updates = []
        for user in cohort:
            x, y = clients[user]
            if max_examples > 0:
                x, y = x[:max_examples], y[:max_examples]
            rng = np.random.default_rng([seed, r, users.index(user)])
            if user in bad:
                x, y = attack.poison_data(x, y, rng)
            delta = client.train(weights, x, y, epochs=epochs, batch_size=batch_size, lr=lr)
            if user in bad:
                delta = attack.poison_update(delta, rng, max_norm)
            elif max_norm is not None:
                from fedmath.privacy import clip_by_global_norm

                delta, _ = clip_by_global_norm(delta, clip_norm)
            updates.append(ClientUpdate(delta, int(len(x)), device_id=user, model_version=r - first_round))
        state, weights, _ = algorithm.round(state, weights, updates)
        flagged = getattr(algorithm.aggregator, "flagged", None)
        result.rounds.append({"round": r, "attackers": sum(u in bad for u in cohort),
                              "flagged": flagged() if flagged is not None else 0,
                              "flagged_attackers": _flagged_attackers(algorithm, bad),
                              "seconds": round(time.perf_counter() - t0, 3)})
        if on_round is not None:
            on_round(r, weights)
    result.weights = weights
    return result


def _flagged_attackers(algorithm: ServerAlgorithm, bad: set) -> int:
    last = getattr(algorithm.aggregator, "last", None)
    if last is None or not hasattr(last, "scores"):
        return 0
    return sum(s.flagged and d in bad for s, d in zip(last.scores, last.device_ids))
