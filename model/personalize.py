"""Personalization evaluation of a global model on held-out users (Wang et al. 2019,
arXiv:1910.10252; TFF's `build_personalization_eval_computation` computes the same per client).

For each held-out user: the messages split in time (`keyboard.personalize.split_in_time`),
each strategy fine-tunes the global weights on the earlier part, and the later part is scored
with the global and with the personalized weights (top-1, top-3, keystroke savings). Strategies:

- `none`: the global model (what every other evaluation reports);
- `bias`: SGD on the output bias alone (`keyboard.personalize.fine_tune_bias`, numpy);
- `all`: SGD on every weight, the phones' own step (`tflite_export.trainable.sgd_step`, the
  function the TFLite `train` signature runs), on a Keras model built once;
- `cache`: no training: the user's own word cache (`keyboard.cache`), counted from the earlier
  part and kept learning as the later part is typed, mixed into the global model's suggestions;
- `bias_cache`: both: the cache mixed into the `bias` fine-tuned model instead of the global one.
  The bias moves the whole distribution towards the words the user types often (smoothly, through
  every context), the cache adds the user's own word pairs and rare words on top; its numbers are
  tuned separately (`tune_cache(base="bias")`).

Both fine-tunes take `epochs` passes over in-order batches of `batch_size` windows at
`learning_rate`. Scoring runs the numpy forward pass (keyboard.forward).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from data.special_ids import EOS_ID
from keyboard.cache import CacheParams, WordCache, cached_log_probs
from keyboard.forward import NWPWeights, logits, softmax
from keyboard.personalize import UserResult, fine_tune_bias, score_logits, score_user, split_in_time, summarise

STRATEGIES = ("none", "bias", "all", "cache", "bias_cache")
CACHE_BASES = ("global", "bias")  # the model a cache is mixed into: `cache`, `bias_cache`


class _AllWeights:
    """Fine-tunes every weight with the phones' SGD step on one reused Keras model."""

    def __init__(self, cfg, vocab_size: int, seq_len: int) -> None:
        import tensorflow as tf

        from model.nwp import build_model
        from tflite_export.trainable import sgd_step

        self.model = build_model(cfg.model, vocab_size, seq_len, unroll=True)
        self.step = tf.function(lambda x, y, lr: sgd_step(self.model, x, y, lr), reduce_retracing=True)
        self.tf = tf

    def __call__(self, weights: Sequence[np.ndarray], x: np.ndarray, y: np.ndarray, learning_rate: float,
                 epochs: int, batch_size: int) -> list[np.ndarray]:
        self.model.set_weights([np.asarray(a, np.float32) for a in weights])
        lr = self.tf.constant(learning_rate, self.tf.float32)
        for _ in range(epochs):
            for start in range(0, len(x), batch_size):
                self.step(self.tf.constant(x[start:start + batch_size]), self.tf.constant(y[start:start + batch_size]), lr)
        return [v.numpy() for v in self.model.trainable_weights]


def evaluate_personalization(cfg, data, weights: Sequence[np.ndarray], strategies: Sequence[str] = STRATEGIES,
                             epochs: int = 2, learning_rate: float | None = None, train_fraction: float = 0.5,
                             max_users: int = 0, max_examples: int = 64, keystroke_rows: int = 8,
                             split: str = "heldout", min_words: int = 0, cache: CacheParams = CacheParams(),
                             bias_cache: CacheParams | None = None, progress=None) -> dict[str, dict]:
    """Per strategy, the summary of global against personalized over the split's users.

    Every user with a message on each side of the split is scored once; the summary counts those
    with at least `min_words` words on each side, and with `min_words` > 0 an `all_users` summary
    over everyone comes beside it from the same scores.

    Args:
        cfg: the run's config (model sizes, seq_len, batch size and client learning rate).
        data: `data.dataset.FederatedData`.
        weights: the global model, canonical order.
        strategies: a subset of STRATEGIES.
        epochs: local passes over the earlier windows.
        learning_rate: SGD step (default the run's `train.client_learning_rate`).
        train_fraction: share of each user's messages (oldest first) to fine-tune on.
        max_users: score at most this many users (0 = all), the first in sorted order.
        max_examples: cap on each side's windows per user (0 = all).
        keystroke_rows: windows per user scored for keystroke savings (0 = skip).
        split: the users' split.
        min_words: summarise only users with at least this many in-vocabulary word targets on each side
            of the split (0 = every user with a message on each side).
        cache: the `cache` strategy's parameters.
        bias_cache: the `bias_cache` strategy's (default: `cache`).
        progress: a callable taking a line of text, or None.

    Returns:
        {strategy: summary (keyboard.personalize.summarise) plus "per_user" [...] (the summarised
        users) and, with `min_words`, "all_users" (the summary over every scored user)}.
    """
    unknown = sorted(set(strategies) - set(STRATEGIES))
    if unknown or not strategies:
        raise ValueError(f"strategies must be a non-empty subset of {STRATEGIES}, got {list(strategies)}")
    lr = cfg.train.client_learning_rate if learning_rate is None else float(learning_rate)
    bias_cache = cache if bias_cache is None else bias_cache
    w = NWPWeights.from_list(cfg.model.cell, weights)
    vocab = data.tokenizer.words
    tune_all = _AllWeights(cfg, data.tokenizer.vocab_size, cfg.data.seq_len) if "all" in strategies else None
    results: dict[str, list[tuple[int, UserResult]]] = {s: [] for s in strategies}
    for user, (ex, ey), (lx, ly), words in _users(cfg, data, split, max_users, train_fraction, max_examples, progress):
        z = logits(w, lx)
        base = score_logits(z, ly, vocab, keystroke_rows)
        tuned_z = None  # the bias-fine-tuned model's logits, computed once for `bias` and `bias_cache`
        for s in strategies:
            if s in ("bias", "bias_cache") and tuned_z is None:
                tuned_z = logits(fine_tune_bias(w, ex, ey, lr, epochs, cfg.train.batch_size), lx)
            if s == "none":
                scores = base
            elif s == "cache":
                scores = score_logits(_cached(softmax(z), ex, ey, lx, ly, w.vocab_size, cache), ly, vocab,
                                      keystroke_rows)
            elif s == "bias":
                scores = score_logits(tuned_z, ly, vocab, keystroke_rows)
            elif s == "bias_cache":
                scores = score_logits(_cached(softmax(tuned_z), ex, ey, lx, ly, w.vocab_size, bias_cache), ly, vocab,
                                      keystroke_rows)
            else:
                tuned = NWPWeights.from_list(cfg.model.cell, tune_all(weights, ex, ey, lr, epochs, cfg.train.batch_size))
                scores = score_user(tuned, lx, ly, vocab, keystroke_rows)
            results[s].append((words, UserResult(user, base, scores)))
    out = {}
    for s, scored in results.items():
        rs = [r for words, r in scored if words >= min_words]
        out[s] = {**summarise(rs), "strategy": s, "epochs": epochs, "learning_rate": lr,
                  "train_fraction": train_fraction, "min_words": min_words,
                  **({"cache": {"lam": cache.lam, "kappa": cache.kappa, "n0": cache.n0}} if s == "cache" else {}),
                  **({"cache": {"lam": bias_cache.lam, "kappa": bias_cache.kappa, "n0": bias_cache.n0}}
                     if s == "bias_cache" else {}),
                  **({"all_users": summarise([r for _, r in scored])} if min_words else {}),
                  "per_user": [_user_row(r, words) for words, r in scored if words >= min_words]}
    return out


def _user_row(r: UserResult, side_words: int) -> dict:
    """One user's figures: top-1 (and keystroke savings when scored) of both models, the later
    part's words and `side_words`, the fewer in-vocabulary words of the two sides."""
    row = {"user": r.user, "global_top1": r.global_scores["top1"], "personalized_top1": r.personalized["top1"],
           "words": r.global_scores["words"], "side_words": side_words}
    if "keystroke_savings" in r.global_scores:
        row.update(global_keystroke_savings=r.global_scores["keystroke_savings"],
                   personalized_keystroke_savings=r.personalized["keystroke_savings"])
    return row


def summarise_users(per_user: Sequence[dict], min_words: int) -> dict:
    """`summarise` again over the rows of a result's "per_user" with `side_words` >= `min_words`:
    one scoring of every user, summarised at several thresholds."""
    def scores(row: dict, side: str) -> dict:
        out = {"top1": row[f"{side}_top1"]}
        if f"{side}_keystroke_savings" in row:
            out["keystroke_savings"] = row[f"{side}_keystroke_savings"]
        return out

    return summarise([UserResult(r["user"], scores(r, "global"), scores(r, "personalized"))
                      for r in per_user if r["side_words"] >= min_words])


def tune_cache(cfg, data, weights: Sequence[np.ndarray], grid: Iterable[CacheParams], split: str = "proxy",
               train_fraction: float = 0.5, max_examples: int = 64, min_words: int = 0, base: str = "global",
               learning_rate: float | None = None, epochs: int = 2, progress=None) -> tuple[CacheParams, list[dict]]:
    """The cache's parameters with the best mean per-user top-1 on `split`'s users.

    The distribution the cache is mixed into does not depend on the cache, so it is computed once
    per user and reused at every grid point: the global model's (`base="global"`, the `cache`
    strategy) or the bias fine-tuned on the user's earlier windows with `learning_rate` and
    `epochs` (`base="bias"`, `bias_cache`). The global top-1 of the table stays the global model's.

    Returns:
        (the best CacheParams, one {"params", "global_top1", "personalized_top1", "users", "per_user"}
        per point; "per_user" holds each user's {"side_words", "global_top1", "personalized_top1"}, so
        a caller can choose again over users with more words: `best_for(table, min_words)`).
    """
    if base not in CACHE_BASES:
        raise ValueError(f"base must be one of {CACHE_BASES}, got {base!r}")
    lr = cfg.train.client_learning_rate if learning_rate is None else float(learning_rate)
    w = NWPWeights.from_list(cfg.model.cell, weights)
    users, global_top1, side_words = [], [], []
    for _, (ex, ey), (lx, ly), words in _users(cfg, data, split, 0, train_fraction, max_examples, None):
        if words >= min_words:
            z = logits(w, lx)
            if base == "bias":
                z_mix = logits(fine_tune_bias(w, ex, ey, lr, epochs, cfg.train.batch_size), lx)
            else:
                z_mix = z
            users.append(((ex, ey), (lx, ly), softmax(z_mix)))
            global_top1.append(score_logits(z, ly)["top1"])
            side_words.append(words)
    if not users:
        raise ValueError(f"no {split} user has {min_words} words on each side of the split")
    g = float(np.mean(global_top1))
    table = []
    for params in grid:
        top1 = [score_logits(_cached(p, ex, ey, lx, ly, w.vocab_size, params), ly)["top1"]
                for ((ex, ey), (lx, ly), p) in users]
        table.append({"params": params, "global_top1": g, "personalized_top1": float(np.mean(top1)),
                      "users": len(users),
                      "per_user": [{"side_words": n, "global_top1": gu, "personalized_top1": pu}
                                   for n, gu, pu in zip(side_words, global_top1, top1)]})
        if progress is not None:
            progress(f"cache over the {base} model on {split} users: {params}: "
                     f"top-1 {g:.4f} -> {table[-1]['personalized_top1']:.4f} "
                     f"({len(users)} users)")
    if not table:
        raise ValueError("the cache's search grid is empty")
    return max(table, key=lambda r: r["personalized_top1"])["params"], table


def best_for(table: Sequence[dict], min_words: int) -> CacheParams:
    """The grid point of a `tune_cache` table with the best mean per-user top-1 over its users with
    at least `min_words` words on each side (the first such point on a tie, as `tune_cache`)."""
    def mean(row: dict) -> float:
        top1 = [u["personalized_top1"] for u in row["per_user"] if u["side_words"] >= min_words]
        if not top1:
            raise ValueError(f"no tuning user has {min_words} words on each side of the split")
        return float(np.mean(top1))

    return max(table, key=mean)["params"]


def _users(cfg, data, split: str, max_users: int, train_fraction: float, max_examples: int, progress):
    """(user, earlier (x, y), later (x, y), fewer side's word count) for each user with a message each side."""
    users = sorted(data.users(split))
    if max_users:
        users = users[:max_users]
    for n, user in enumerate(users):
        halves = split_in_time(data.tokens(user), cfg.data.seq_len, train_fraction, max_examples)
        if halves is not None:
            (ex, ey), (lx, ly) = halves
            yield user, (ex, ey), (lx, ly), min(_words(ey), _words(ly))
        if progress is not None and (n + 1) % 10 == 0:
            progress(f"personalization: {n + 1}/{len(users)} users")


def _cached(probs: np.ndarray, ex, ey, lx, ly, vocab_size: int, params: CacheParams) -> np.ndarray:
    """Log-probabilities of the later windows with the user's cache (counted from the earlier ones) mixed in."""
    user_cache = WordCache(vocab_size, params)
    user_cache.add_windows(ex, ey)
    return cached_log_probs(probs, lx, ly, user_cache)


def _words(y: np.ndarray) -> int:
    """In-vocabulary word targets in `y` (not PAD, UNK or the end of a message)."""
    return int(np.sum(np.asarray(y) > EOS_ID))
