"""Score next-word top-1/top-3 and perplexity on held-out users, beside the baselines.

`fedkeys evaluate RUN_DIR --out DIR` scores RUN_DIR/weights.npz (or --weights PATH) on the
held-out users of the run's data, with the most-frequent-word baseline beside it.
"""

from __future__ import annotations

import argparse
import functools
import os
from typing import Any

from fedkeys.commands.common import read_summary, stage_config, start, table, write_summary


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a directory made by `fedkeys train` (or `fedkeys export`)")
    p.add_argument("--weights", help="weights .npz to score (default: RUN_DIR/weights.npz)")
    p.add_argument("--personalize", action="store_true",
                   help="also fine-tune on each held-out user's earlier messages and score the later ones")
    p.add_argument("--strategies", default="none,bias,all,cache",
                   help="personalization strategies (model/personalize.py; also bias_cache)")
    p.add_argument("--min-words", type=int, default=0,
                   help="personalization: score only users with this many words on each side of the split")
    p.add_argument("--epochs", type=int, default=3, help="personalization: local passes over the earlier windows")
    p.add_argument("--lr", type=float, default=None,
                   help="personalization SGD step (default: the run's train.client_learning_rate)")


def heldout(cfg, data) -> tuple[Any, Any]:
    """The held-out examples every evaluation in a run uses."""
    return data.pooled_examples("heldout", cfg.data.seq_len, max_examples=cfg.train.eval_max_examples)


@functools.lru_cache(maxsize=4)
def _eval_model(model_cfg, vocab_size: int, seq_len: int):
    """One Keras model per architecture for the whole process: each evaluation only assigns
    weights, so the model is built (and its forward pass traced) once, not once per round."""
    from model.nwp import build_model

    return build_model(model_cfg, vocab_size, seq_len)


def evaluate_weights(cfg, data, weights, xy=None) -> dict[str, float]:
    """Top-1, top-3 and perplexity of `weights` (canonical order) on held-out users."""
    from model.evaluate import evaluate

    x, y = xy if xy is not None else heldout(cfg, data)
    return evaluate(_eval_model(cfg.model, data.tokenizer.vocab_size, cfg.data.seq_len), weights, x, y)


def keystroke_savings(cfg, data, weights, xy=None, max_rows: int = 200) -> dict[str, float]:
    """Keystroke savings with a three-slot strip (model.metrics.KeystrokeSavings) on the first
    `max_rows` held-out sequences (it ranks the vocabulary per letter, so it is the slow metric)."""
    from model.metrics import KeystrokeSavings

    x, y = xy if xy is not None else heldout(cfg, data)
    model = _eval_model(cfg.model, data.tokenizer.vocab_size, cfg.data.seq_len)
    model.set_weights(list(weights))
    ks = KeystrokeSavings(data.tokenizer.words, slots=3)
    ks.update_logits(model.predict(x[:max_rows], batch_size=64, verbose=0), y[:max_rows])
    return ks.result()


def baseline_keystroke_savings(cfg, data, xy=None, max_rows: int = 200) -> dict[str, float]:
    """Keystroke savings of the most-frequent-word baseline (its strip: the most frequent
    training words that start with the letters typed), on the same rows as `keystroke_savings`."""
    import numpy as np

    from model.evaluate import unigram_log_probs
    from model.metrics import KeystrokeSavings

    x, y = xy if xy is not None else heldout(cfg, data)
    _, train_y = data.pooled_examples("train", cfg.data.seq_len)
    logp = unigram_log_probs(train_y, data.tokenizer.vocab_size)
    ks = KeystrokeSavings(data.tokenizer.words, slots=3)
    y = np.asarray(y[:max_rows])
    ks.update_logits(np.broadcast_to(logp, y.shape + logp.shape), y)
    return ks.result()


def baseline(cfg, data, xy=None) -> dict[str, float]:
    """The most-frequent-word baseline, trained on the training users, scored the same way."""
    from model.evaluate import most_frequent_word_baseline

    x, y = xy if xy is not None else heldout(cfg, data)
    _, train_y = data.pooled_examples("train", cfg.data.seq_len)
    return most_frequent_word_baseline(train_y, x, y)


def run(args: argparse.Namespace) -> int:
    cfg = stage_config(args, args.run_dir)
    data_dir = read_summary(args.run_dir)["data_dir"]
    start(args, cfg)
    from data.dataset import FederatedData
    from model.weights_io import load_weights

    data = FederatedData(data_dir)
    xy = heldout(cfg, data)
    _, weights = load_weights(args.weights or os.path.join(args.run_dir, "weights.npz"))
    scores = {"model": {**evaluate_weights(cfg, data, weights, xy), **keystroke_savings(cfg, data, weights, xy)},
              "most_frequent_word": baseline(cfg, data, xy)}
    print(table([(name, f"{s['top1']:.4f}", f"{s['top3']:.4f}", f"{s.get('perplexity', float('nan')):.1f}",
                  f"{s['keystroke_savings']:.4f}" if "keystroke_savings" in s else "")
                 for name, s in scores.items()], ("model", "top-1", "top-3", "perplexity", "keystroke savings")))
    summary = {"stage": "evaluate", "data_dir": data_dir, "scores": scores}
    if args.personalize:
        summary["personalization"] = personalize(cfg, data, weights, args)
    write_summary(args.out, summary)
    return 0


def personalize(cfg, data, weights, args: argparse.Namespace) -> dict[str, dict]:
    """Global against personalized per held-out user (model.personalize), printed as a table."""
    from model.personalize import evaluate_personalization

    result = evaluate_personalization(cfg, data, weights, args.strategies.split(","), epochs=args.epochs,
                                      learning_rate=args.lr, min_words=args.min_words)
    print(table([(s, str(r["users"]), f"{r['global_top1']:.4f}", f"{r['personalized_top1']:.4f}",
                  f"{r['relative_gain']:+.3f}", f"{r['share_improved']:.2f}",
                  f"{r.get('global_keystroke_savings', float('nan')):.4f}",
                  f"{r.get('personalized_keystroke_savings', float('nan')):.4f}")
                 for s, r in result.items()],
                ("personalization", "users", "top-1 global", "top-1 personal", "relative gain", "improved",
                 "keystrokes global", "keystrokes personal")))
    return result
