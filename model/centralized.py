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


def pooled_training_examples(cfg: RunConfig, data: Any,
                             split: str = "train") -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Every `split` user's capped examples, concatenated in user order, and the per-user counts."""
    xs, ys, counts = [], [], {}
    for u in sorted(data.users(split)):
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


def _train_step(model: tf.keras.Model, opt: tf.keras.optimizers.Optimizer):
    """One traced optimizer step on `masked_loss` (training=True, so dropout is on if built)."""

    @tf.function(reduce_retracing=True)
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = masked_loss(yb, model(xb, training=True))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_weights), model.trainable_weights))
        return loss

    return step


def _write_metrics(out_dir: str, rows: list[dict]) -> None:
    """metrics.csv: one row per evaluation (rewritten after each, so a stopped run keeps its curve)."""
    with open(os.path.join(out_dir, "metrics.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _write_run(out_dir: str, model: tf.keras.Model, rows: list[dict], summary: dict) -> dict:
    """metrics.csv (one row per evaluation), weights.npz and summary.json; returns the summary."""
    _write_metrics(out_dir, rows)
    save_model_weights(os.path.join(out_dir, "weights.npz"), model)
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    return summary


def train_centralized(cfg: RunConfig, data: Any, out_dir: str, examples: int | None = None,
                      learning_rate: float | None = None, momentum: float = 0.0, evals: int = 5,
                      progress: bool = True, split: str = "train") -> dict:
    """Train on pooled data for `examples` examples (default: `matched_examples`); write the run.

    Args:
        cfg: run config (model, data.seq_len, train.batch_size, train.seed, train.eval_max_examples).
        data: a `data.dataset.FederatedData`.
        out_dir: created; receives config.json, metrics.csv, weights.npz, summary.json.
        examples: examples to process (the FL run's `examples_processed` for an exact match).
        learning_rate: SGD step size (default train.client_learning_rate).
        momentum: SGD momentum (0 = plain SGD).
        (Each step's gradient is clipped to global norm train.client_grad_clip when that is > 0,
        as the federated clients' steps are.)
        evals: evaluations on held-out users spread over training (the last at the end).
        progress: tqdm bar.
        split: whose text to pool: "train" (the baseline), or "proxy" to pretrain on users that
            are never training users (public pretraining before private federated training,
            `fedkeys train --init-from`; the pretrained weights then owe nothing to the
            training users, so the DP accounting of the federated run covers the model).

    Returns:
        The summary (also summary.json), with final_eval like the federated run's.
    """
    t = cfg.train
    lr = t.client_learning_rate if learning_rate is None else learning_rate
    if split not in ("train", "proxy"):
        raise ValueError(f"centralized training pools 'train' or 'proxy' users, got {split!r}")
    if lr <= 0 or not 0 <= momentum < 1 or evals < 1:
        raise ValueError(f"need learning_rate > 0, momentum in [0, 1), evals >= 1; got {lr}, {momentum}, {evals}")
    os.makedirs(out_dir, exist_ok=True)
    write_config(cfg, out_dir)
    x, y, counts = pooled_training_examples(cfg, data, split)
    budget = matched_examples(cfg, counts) if examples is None else int(examples)
    if budget < 1:
        raise ValueError(f"examples must be >= 1, got {budget}")
    vocab = int(data.tokenizer.vocab_size)
    tf.random.set_seed(t.seed)
    model = build_model(cfg.model, vocab, cfg.data.seq_len, seed=t.seed)
    opt = tf.keras.optimizers.SGD(learning_rate=lr, momentum=momentum, global_clipnorm=t.client_grad_clip or None)
    eval_x, eval_y = data.pooled_examples("heldout", cfg.data.seq_len, t.eval_max_examples)
    step = _train_step(model, opt)

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
    final = rows[-1]
    summary = {"stage": "centralized", "users": split, "examples_processed": seen, "steps": steps, "learning_rate": lr,
               "momentum": momentum, "batch_size": t.batch_size, "pooled_examples": int(len(x)),
               "epochs": seen / len(x), "params": count_params(model),
               "final_eval": {k: final[k] for k in ("top1", "top3", "perplexity", "words")},
               "seconds": round(time.perf_counter() - started, 2), "weights": "weights.npz"}
    return _write_run(out_dir, model, rows, summary)


def split_validation_users(users: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(fit users, validation users): a seeded `fraction` of `users` held back for early stopping."""
    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    order = sorted(users)
    np.random.default_rng(seed).shuffle(order)
    n_val = max(1, int(round(fraction * len(order))))
    if n_val >= len(order):
        raise ValueError(f"need at least 2 training users to hold some back for validation, got {len(order)}")
    return sorted(order[n_val:]), sorted(order[:n_val])


def pool_users(data: Any, users: list[str], seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Every window of `users`, concatenated in the users' order: (x, y), int32 [N, seq_len]."""
    xs, ys = zip(*(data.client_examples(u, seq_len) for u in users))
    return np.concatenate(xs), np.concatenate(ys)


def train_converged(cfg: RunConfig, data: Any, out_dir: str, learning_rate: float = 1.0, max_epochs: int = 30,
                    patience: int = 3, decay: float = 0.5, validation_fraction: float = 0.1,
                    clip_norm: float = 5.0, dropout: float = 0.0, optimizer: str = "sgd",
                    progress: bool = True) -> dict:
    """Train centrally to convergence: the best the model does on this data, no budget matched.

    What "structure beyond trigrams" is measured with (issue 3) and what Gboard's server-trained
    baseline was (Hard et al. 2018 train to convergence): plain SGD over every window of the
    training users (no per-client cap, as the n-gram sees all their text), gradients clipped to
    global norm `clip_norm` (without it an LSTM's occasional exploding step undoes epochs of
    training; Zaremba et al. 2014 clip at 5), optional `dropout` (`build_model`), learning rate times
    `decay` after each epoch that does not improve validation perplexity, stop after `patience`
    such epochs, keep the best epoch's weights (Zaremba et al. 2014's schedule, with early
    stopping). Validation users are a seeded `validation_fraction` of the training users held
    back from fitting, so the held-out users are scored once, at the end, never selected on.
    `optimizer="adam"` swaps plain SGD for Adam at `learning_rate` (same clip, schedule and
    stopping): the ceiling in fewer epochs where SGD's take hours (issue 16).

    Returns:
        The summary (also summary.json): final_eval on held-out users, best_epoch, epochs run,
        and per-epoch validation figures in metrics.csv.
    """
    t = cfg.train
    if learning_rate <= 0 or max_epochs < 1 or patience < 1 or not 0 < decay <= 1 or clip_norm <= 0:
        raise ValueError(f"need learning_rate > 0, max_epochs >= 1, patience >= 1, decay in (0, 1], clip_norm > 0;"
                         f" got {learning_rate}, {max_epochs}, {patience}, {decay}, {clip_norm}")
    optimizers = {"sgd": tf.keras.optimizers.SGD, "adam": tf.keras.optimizers.Adam}
    if optimizer not in optimizers:
        raise ValueError(f"optimizer must be one of {sorted(optimizers)}, got {optimizer!r}")
    os.makedirs(out_dir, exist_ok=True)
    write_config(cfg, out_dir)
    fit_users, val_users = split_validation_users(data.users("train"), validation_fraction, t.seed)
    x, y = pool_users(data, fit_users, cfg.data.seq_len)
    vx, vy = pool_users(data, val_users, cfg.data.seq_len)
    hx, hy = data.pooled_examples("heldout", cfg.data.seq_len, t.eval_max_examples)
    tf.random.set_seed(t.seed)
    model = build_model(cfg.model, int(data.tokenizer.vocab_size), cfg.data.seq_len, seed=t.seed, dropout=dropout)
    lr = tf.Variable(learning_rate, dtype=tf.float32, trainable=False)
    opt = optimizers[optimizer](learning_rate=lambda: lr, global_clipnorm=clip_norm)
    step = _train_step(model, opt)

    rng = np.random.default_rng(t.seed)
    rows: list[dict] = []
    best, best_weights, bad = (-1.0, 0.0), None, 0
    started = time.perf_counter()
    epochs = range(1, max_epochs + 1)
    if progress:
        from tqdm.auto import tqdm
        epochs = tqdm(epochs, desc="centralized (to convergence)", unit="epoch")
    for epoch in epochs:
        order, losses = rng.permutation(len(x)), []
        for i in range(0, len(order), t.batch_size):
            idx = order[i:i + t.batch_size]
            losses.append(float(step(tf.constant(x[idx]), tf.constant(y[idx]))))
        val = evaluate(model, None, vx, vy)
        rows.append({"epoch": epoch, "learning_rate": float(lr.numpy()), "train_loss": float(np.mean(losses)),
                     **{f"val_{k}": val[k] for k in ("top1", "top3", "perplexity")},
                     "seconds": round(time.perf_counter() - started, 2)})
        _write_metrics(out_dir, rows)
        if progress:
            epochs.set_postfix(val_top1=f"{val['top1']:.3f}", lr=f"{float(lr.numpy()):.3g}")
        score = (val["top1"], -val["perplexity"])
        if score > best:
            best, best_weights, bad = score, model.get_weights(), 0  # what set_weights takes back
        else:
            bad += 1
            if bad >= patience:
                break
            lr.assign(lr * decay)
    best_epoch = max(rows, key=lambda r: (r["val_top1"], -r["val_perplexity"]))["epoch"]
    model.set_weights(best_weights)
    final = evaluate(model, None, hx, hy)
    summary = {"stage": "centralized_converged", "optimizer": optimizer, "learning_rate": learning_rate, "decay": decay,
               "patience": patience, "clip_norm": clip_norm, "dropout": dropout, "epochs_run": len(rows),
               "best_epoch": best_epoch,
               "fit_users": len(fit_users), "validation_users": len(val_users), "fit_examples": int(len(x)),
               "batch_size": t.batch_size, "params": count_params(model),
               "val_top1_by_epoch": [r["val_top1"] for r in rows],
               "final_eval": {k: final[k] for k in ("top1", "top3", "perplexity", "words")},
               "seconds": round(time.perf_counter() - started, 2), "weights": "weights.npz"}
    return _write_run(out_dir, model, rows, summary)
