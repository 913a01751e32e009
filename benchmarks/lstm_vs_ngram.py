"""Structure beyond trigrams: a centrally trained LSTM against the KN trigram on held-out users.

Issue 3 asks whether the data holds anything a recurrent model can learn that an n-gram cannot.
For each data set (`default`: the preset's own data, the simulator for the built-in presets;
`shakespeare` and `irc`: the corpora in ../shared/corpora; `jsonl:PATH`: any per-user corpus;
benchmarks/_datasets.py) this fits the interpolated Kneser-Ney trigram (data/ngram.py) and the
most-frequent-word baseline on every training user's text, and trains the preset's model
centrally to convergence on the same users (model/centralized.py `train_converged`: SGD,
learning rate halved after each epoch without a validation gain, early stopping on validation
users held back from the training users). All are scored once by the one metric code on the
held-out users: top-1, top-3, perplexity, and keystroke savings on the first
`--keystroke-rows` windows.
Before training it prints the trigram fit on the LSTM's fit users and scored on its validation
users, the line to read each epoch's validation top-1 against (progress bar; metrics.csv, written
after every epoch with its elapsed seconds, so a run stopped early keeps its curve).

Goals (simulator only): LSTM top-1 >= 1.15x the trigram's, and the trigram's top-1 within
[0.08, 0.35]. The corpora's figures are reported beside them, with no goal.

Usage:
    .venv/bin/python benchmarks/lstm_vs_ngram.py [--datasets default,shakespeare,irc] [--max-epochs 30]
    .venv/bin/python benchmarks/lstm_vs_ngram.py --small      # a quick check: 80 users, 2 epochs
Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._datasets import (  # noqa: E402
    add_arguments,
    dataset_config,
    dataset_label,
    model_keystroke_savings,
    prepared,
    run_config,
    trigram_scores,
)

GOAL_RATIO, TRIGRAM_RANGE = 1.15, (0.08, 0.35)
VALIDATION_FRACTION = 0.1  # of the training users, held back for the LSTM's early stopping


def run_one(name: str, args) -> dict:
    from fedkeys.commands.evaluate import baseline
    from model.centralized import pool_users, split_validation_users, train_converged

    cfg = dataset_config(name, run_config(args.preset, args.set, small=args.small))
    root = os.path.join(args.out, dataset_label(name))
    data = prepared(cfg, os.path.join(root, "data"))
    trigram = trigram_scores(cfg, data, keystroke_rows=args.keystroke_rows)
    frequent = baseline(cfg, data)
    # The trigram on the LSTM's validation users, fit on its fit users: the line each epoch's
    # validation top-1 (the progress bar, metrics.csv) is read against while the run goes on.
    fit, val = split_validation_users(data.users("train"), VALIDATION_FRACTION, cfg.train.seed)
    val_windows = pool_users(data, val, cfg.data.seq_len)
    val_trigram = trigram_scores(cfg, data, fit_users=fit, windows=val_windows)["top1"]
    print(f"{name}: KN trigram top-1 on the LSTM's {len(val)} validation users ({len(val_windows[1])} windows),"
          f" fit on its {len(fit)} fit users: {val_trigram:.4f}", flush=True)
    max_epochs = min(args.max_epochs, 2) if args.small else args.max_epochs
    lstm = train_converged(cfg, data, os.path.join(root, "central"), learning_rate=args.lr,
                           max_epochs=max_epochs, patience=args.patience, dropout=args.dropout,
                           validation_fraction=VALIDATION_FRACTION, optimizer=args.optimizer,
                           progress=not args.quiet)
    val_lstm = max(lstm["val_top1_by_epoch"])
    l1, t1 = lstm["final_eval"]["top1"], trigram["top1"]
    row = {"dataset": name, "train_users": len(data.users("train")), "heldout_users": len(data.users("heldout")),
           "vocab_size": int(data.tokenizer.vocab_size), "heldout_oov_rate": data.summary["heldout_oov_rate"],
           "lstm_top1": l1, "lstm_top3": lstm["final_eval"]["top3"],
           "lstm_perplexity": lstm["final_eval"]["perplexity"], "trigram_top1": t1, "trigram_top3": trigram["top3"],
           "trigram_perplexity": trigram["perplexity"], "most_frequent_top1": frequent["top1"],
           "most_frequent_top3": frequent["top3"], "lstm_over_trigram": l1 / t1 if t1 else None,
           "best_epoch": lstm["best_epoch"], "epochs_run": lstm["epochs_run"], "params": lstm["params"],
           "eval_words": lstm["final_eval"]["words"], "lstm_seconds": lstm["seconds"], "dropout": args.dropout,
           "optimizer": args.optimizer, "learning_rate": args.lr,
           "val_top1_by_epoch": lstm["val_top1_by_epoch"], "val_lstm_top1": val_lstm,
           "val_trigram_top1": val_trigram, "val_lstm_over_trigram": val_lstm / val_trigram if val_trigram else None}
    if args.keystroke_rows:
        row["lstm_keystroke_savings"] = model_keystroke_savings(
            cfg, data, os.path.join(root, "central", "weights.npz"), args.keystroke_rows)
        row["trigram_keystroke_savings"] = trigram["keystroke_savings"]
    if name == "default":
        row["goals"] = {"lstm_over_trigram>=1.15": bool(t1 and l1 / t1 >= GOAL_RATIO),
                        "trigram_top1_in_[0.08,0.35]": TRIGRAM_RANGE[0] <= t1 <= TRIGRAM_RANGE[1]}
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap, "model.lstm_units=512", "a quick check: 80 users, at most 2 epochs")
    ap.add_argument("--keystroke-rows", type=int, default=200,
                    help="held-out windows for keystroke savings (the slow metric; 0 = skip)")
    ap.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    ap.add_argument("--lr", type=float, default=1.0, help="initial learning rate (SGD 1.0; Adam about 2e-3)")
    ap.add_argument("--max-epochs", type=int, default=30)
    ap.add_argument("--patience", type=int, default=4, help="epochs without a validation gain before stopping")
    ap.add_argument("--dropout", type=float, default=0.0, help="dropout on the LSTM's input and output")
    ap.add_argument("--out", help="default runs/bench/lstm_vs_ngram (..._small with --small)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    args.out = args.out or ("runs/bench/lstm_vs_ngram_small" if args.small else "runs/bench/lstm_vs_ngram")
    rows = []
    for name in args.datasets.split(","):
        r = run_one(name, args)
        rows.append(r)
        print(f"{name} top1  LSTM (central, best of {r['epochs_run']} epochs: {r['best_epoch']}) "
              f"{r['lstm_top1']:.4f}  KN-trigram {r['trigram_top1']:.4f}  most-frequent {r['most_frequent_top1']:.4f}"
              f"  LSTM/trigram {r['lstm_over_trigram']:.3f}"
              f"  [{r['train_users']} train users, {r['heldout_users']} held out, {r['eval_words']:.0f} words]",
              flush=True)
        if "goals" in r:
            print(f"{'':12s} goals: {r['goals']}", flush=True)
    print(json.dumps({"benchmark": "lstm_vs_ngram", "preset": args.preset, "small": args.small, "results": rows,
                      "goals": {"lstm_over_trigram": GOAL_RATIO, "trigram_top1_range": TRIGRAM_RANGE}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
