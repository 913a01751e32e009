"""Personalization evaluation inside the TFF simulation: TFF's own
`build_personalization_eval_computation` (Wang et al. 2019, arXiv:1910.10252) over held-out users.

Each client holds its messages split in time (`keyboard.personalize.split_in_time`): the earlier
windows as `train_data`, the later as `test_data`. The server broadcasts the global weights; each
client scores them on `test_data` (the baseline), then for each strategy fine-tunes a copy on
`train_data` and scores it; the per-client figures come back to the server. The strategies are
model/personalize.py's, written as TFF client functions:

- `all`: plain SGD on every trainable variable over in-order batches, `epochs` passes;
- `bias`: the same on the output bias alone.

A client's figures are its word targets and top-1 hits (`model.metrics`' definition: PAD and EOS
are not targets, UNK is always a miss, the special ids are never suggested), so the summary over
users is `keyboard.personalize.summarise`'s and the numbers can be checked against
model/personalize.py's numpy and Keras paths, user by user (tests/test_federated_personalization.py).
"""

from __future__ import annotations

import collections
from typing import Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from data.special_ids import EOS_ID, PAD_ID, SPECIAL_IDS, UNK_ID
from federated.tff_model import make_model_fn, model_weights
from keyboard.personalize import UserResult, split_in_time, summarise

STRATEGIES = ("bias", "all")


def _top1_counts(model, dataset: tf.data.Dataset) -> collections.OrderedDict:
    """{"words", "hits", "target_sum"} of `model` on an unbatched dataset of (x, y) windows;
    `target_sum` (the sum of the target ids) tells the clients apart when the rows come back."""

    def step(state, batch):
        words, hits, target_sum = state
        x, y = batch
        logits = model.predict_on_batch(x, training=False)
        v = tf.shape(logits)[-1]
        never = tf.reduce_any(tf.equal(tf.range(v)[:, None], tf.constant(SPECIAL_IDS)[None, :]), axis=1)
        logits = tf.where(never[None, None, :], tf.constant(-np.inf, logits.dtype), logits)
        best = tf.argmax(logits, axis=-1, output_type=tf.int32)
        target = tf.logical_and(tf.not_equal(y, PAD_ID), tf.not_equal(y, EOS_ID))
        hit = tf.logical_and(tf.logical_and(target, tf.equal(best, y)), tf.not_equal(y, UNK_ID))
        return (words + tf.reduce_sum(tf.cast(target, tf.int64)), hits + tf.reduce_sum(tf.cast(hit, tf.int64)),
                target_sum + tf.reduce_sum(tf.cast(y, tf.int64)))

    zero = tf.constant(0, tf.int64)
    words, hits, target_sum = dataset.batch(64).reduce((zero, zero, zero), step)
    return collections.OrderedDict(words=words, hits=hits, target_sum=target_sum)


def _fine_tune_fn(which: str, learning_rate: float, epochs: int, batch_size: int):
    """A TFF `personalize_fn`: fine-tune `which` ("all" or "bias") by SGD, then score."""

    def build():
        @tf.function
        def fine_tune_and_score(model, train_data, test_data):
            variables = model.trainable_variables if which == "all" else [model.trainable_variables[-1]]
            for _ in range(epochs):
                for batch in train_data.batch(batch_size):
                    with tf.GradientTape() as tape:
                        loss = model.forward_pass(batch, training=True).loss
                    for var, grad in zip(variables, tape.gradient(loss, variables)):
                        var.assign_sub(learning_rate * tf.convert_to_tensor(grad))
            return _top1_counts(model, test_data)

        return fine_tune_and_score

    return build


def personalization_eval(cfg, data, weights: Sequence[np.ndarray], strategies: Sequence[str] = STRATEGIES,
                         epochs: int = 2, learning_rate: float | None = None, train_fraction: float = 0.5,
                         max_users: int = 0, max_examples: int = 64, split: str = "heldout") -> dict[str, dict]:
    """Per strategy, global against personalized per user, computed by TFF.

    Args: as `model.personalize.evaluate_personalization` (keystroke savings are not computed here).

    Returns:
        {strategy: summarise(...) plus "per_user"}; users with no message on one side are skipped.
    """
    unknown = sorted(set(strategies) - set(STRATEGIES))
    if unknown or not strategies:
        raise ValueError(f"strategies must be a non-empty subset of {STRATEGIES}, got {list(strategies)}")
    lr = cfg.train.client_learning_rate if learning_rate is None else float(learning_rate)
    users, clients, fingerprints = [], [], []
    for user in sorted(data.users(split))[: max_users or None]:
        halves = split_in_time(data.tokens(user), cfg.data.seq_len, train_fraction, max_examples)
        if halves is None:
            continue
        (ex, ey), (lx, ly) = halves
        users.append(user)
        fingerprints.append(int(np.sum(ly, dtype=np.int64)))
        clients.append(collections.OrderedDict(
            train_data=tf.data.Dataset.from_tensor_slices((ex.astype(np.int32), ey.astype(np.int32))),
            test_data=tf.data.Dataset.from_tensor_slices((lx.astype(np.int32), ly.astype(np.int32)))))
    if not clients:
        raise ValueError(f"no {split} user has a message on each side of the split")
    model_fn = make_model_fn(cfg.model, data.tokenizer.vocab_size, cfg.data.seq_len)
    computation = tff.learning.algorithms.build_personalization_eval_computation(
        model_fn, collections.OrderedDict((s, _fine_tune_fn(s, lr, epochs, cfg.train.batch_size)) for s in strategies),
        baseline_evaluate_fn=tf.function(_top1_counts), max_num_clients=len(clients))
    out = computation(model_weights(list(weights)), clients)
    # Per-client figures come back in TFF's sampled order as parallel lists: each row is matched
    # to its user by the sum of its later targets' ids.
    baseline = out["baseline_metrics"]
    words = np.asarray(baseline["words"])
    order = _match_users(np.asarray(baseline["target_sum"]), fingerprints)
    result = {}
    for s in strategies:
        rs = []
        for k, i in enumerate(order):
            g = {"top1": float(baseline["hits"][k]) / max(1.0, float(words[k])), "words": float(words[k])}
            p = {"top1": float(out[s]["hits"][k]) / max(1.0, float(out[s]["words"][k])), "words": float(words[k])}
            rs.append(UserResult(users[i], g, p))
        result[s] = {**summarise(rs), "strategy": s, "epochs": epochs, "learning_rate": lr, "path": "tff",
                     "per_user": [{"user": r.user, "global_top1": r.global_scores["top1"],
                                   "personalized_top1": r.personalized["top1"]} for r in rs]}
    return result


def _match_users(returned: np.ndarray, fingerprints: list[int]) -> list[int]:
    """Indices into the clients for each returned row (by fingerprint; equal ones taken in order)."""
    free = list(range(len(fingerprints)))
    order = []
    for w in returned:
        i = next((j for j in free if fingerprints[j] == int(w)), None)
        if i is None:
            raise RuntimeError(f"TFF returned a client with fingerprint {int(w)} that no client has")
        free.remove(i)
        order.append(i)
    return order
