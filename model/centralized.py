"""The centralized baseline: the same model trained on the pooled training users' data.

What federated training is compared against (Hard et al. 2018 train the same CIFG on server
logs): same `build_model` and seed, same optimizer family (SGD on `masked_loss`, momentum
optional), the same examples a federated client may use (each training user's first
`max_examples_per_client` examples), shuffled together, and a matched number of examples
processed, so FL/centralized compares methods, not budgets. Scored by `model.evaluate`.
No TFF here: plain Keras and tf.function.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import time
from typing import Any

import numpy as np
import tensorflow as tf

from configs.io import write_config
from configs.schema import RunConfig
from model.evaluate import evaluate
from model.nwp import build_model, count_params, masked_loss
from model.weights_io import save_model_weights


def pooled_training_examples(cfg: RunConfig, data: Any) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Every training user's capped examples, concatenated in user order, and the per-user counts."""
    xs, ys, counts = [], [], {}
    for u in sorted(data.users("train")):
        x, y = data.client_examples(u, cfg.data.seq_len, cfg.train.max_examples_per_client)
        counts[u] = int(x.shape[0])
        if x.shape[0]:
            xs.append(x)
            ys.append(y)
    if not xs:
        raise ValueError("no training examples: every training user is empty")
    return np.concatenate(xs), np.concatenate(ys), counts


def matched_examples(cfg: RunConfig, counts: dict[str, int]) -> int:
    """Examples a uniform-sampling FL run of `cfg` processes in expectation.

    rounds * clients_per_round * mean(capped examples per user) * local_epochs.
    """
    mean = float(np.mean(list(counts.values())))
    return int(round(cfg.train.rounds * cfg.train.clients_per_round * mean * cfg.train.local_epochs))


def _index_stream(n: int, rng: np.random.Generator):
    """Example indices forever: a fresh shuffle of range(n) per epoch."""
    while True:
        yield from rng.permutation(n).tolist()


def train_centralized(cfg: RunConfig, data: Any, out_dir: str, examples: int | None = None,
                      learning_rate: float | None = None, momentum: float = 0.0, evals: int = 5,
                      progress: bool = True) -> dict:
    """Train on pooled data for `examples` examples (default: `matched_examples`); write the run.

    Args:
        cfg: run config (model, data.seq_len, train.batch_size, train.seed, train.eval_max_examples).
        data: a `data.dataset.FederatedData`.
        out_dir: created; receives config.json, metrics.csv, weights.npz, summary.json.
        examples: examples to process (the FL run's `examples_processed` for an exact match).
        learning_rate: SGD step size (default train.client_learning_rate).
        momentum: SGD momentum (0 = plain SGD).
        evals: evaluations on held-out users spread over training (the last at the end).
        progress: tqdm bar.

    Returns:
        The summary (also summary.json), with final_eval like the federated run's.
    """
    t = cfg.train
    lr = t.client_learning_rate if learning_rate is None else learning_rate
    if lr <= 0 or not 0 <= momentum < 1 or evals < 1:
        raise ValueError(f"need learning_rate > 0, momentum in [0, 1), evals >= 1; got {lr}, {momentum}, {evals}")
    os.makedirs(out_dir, exist_ok=True)
    write_config(cfg, out_dir)
    x, y, counts = pooled_training_examples(cfg, data)
    budget = matched_examples(cfg, counts) if examples is None else int(examples)
    if budget < 1:
        raise ValueError(f"examples must be >= 1, got {budget}")
    vocab = int(data.tokenizer.vocab_size)
    tf.random.set_seed(t.seed)
    model = build_model(cfg.model, vocab, cfg.data.seq_len, seed=t.seed)
    opt = tf.keras.optimizers.SGD(learning_rate=lr, momentum=momentum)
    eval_x, eval_y = data.pooled_examples("heldout", cfg.data.seq_len, t.eval_max_examples)

    @tf.function(reduce_retracing=True)
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = masked_loss(yb, model(xb, training=True))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_weights), model.trainable_weights))
        return loss

    rng = np.random.default_rng(t.seed)
    stream = _index_stream(len(x), rng)
    steps = math.ceil(budget / t.batch_size)
    eval_at = {max(1, round(steps * (i + 1) / evals)) for i in range(evals)}
    rows: list[dict] = []
    seen, losses = 0, []
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=steps, desc="centralized", unit="step")
    started = time.perf_counter()
    for s in range(1, steps + 1):
        idx = np.fromiter(itertools.islice(stream, min(t.batch_size, budget - seen)), dtype=np.int64)
        losses.append(float(step(tf.constant(x[idx]), tf.constant(y[idx]))))
        seen += len(idx)
        if bar is not None:
            bar.update(1)
        if s in eval_at:
            res = evaluate(model, None, eval_x, eval_y)
            rows.append({"step": s, "examples": seen, "train_loss": float(np.mean(losses[-50:])),
                         **{k: res[k] for k in ("top1", "top3", "perplexity", "words")}})
            if bar is not None:
                bar.set_postfix(top1=f"{res['top1']:.3f}")
    if bar is not None:
        bar.close()
    with open(os.path.join(out_dir, "metrics.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    save_model_weights(os.path.join(out_dir, "weights.npz"), model)
    final = rows[-1]
    summary = {"stage": "centralized", "examples_processed": seen, "steps": steps, "learning_rate": lr,
               "momentum": momentum, "batch_size": t.batch_size, "pooled_examples": int(len(x)),
               "epochs": seen / len(x), "params": count_params(model),
               "final_eval": {k: final[k] for k in ("top1", "top3", "perplexity", "words")},
               "seconds": round(time.perf_counter() - started, 2), "weights": "weights.npz"}
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    return summary
