"""Train the next-word LSTM with TFF federated averaging over the training users.

`fedkeys train --data DATA_DIR --out RUN_DIR` writes metrics.csv, weights.npz and summary.json.
`--dry-run` prints the model's parameter count for the preset and trains nothing.
"""

from __future__ import annotations

import argparse
import os

from fedkeys.commands.common import run_config, stage_config, start, write_summary


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="a directory made by `fedkeys data`")
    p.add_argument("--dry-run", action="store_true", help="print the model size and exit")


def dry_run(cfg) -> int:
    from model.nwp import build_model, count_params

    model = build_model(cfg.model, cfg.data.vocab_size, cfg.data.seq_len)
    print(f"preset {cfg.preset}: {cfg.model.cell} model, vocab {cfg.data.vocab_size}, "
          f"embedding {cfg.model.embedding_dim}, units {cfg.model.lstm_units}: "
          f"{count_params(model):,} trainable parameters")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.dry_run:
        return dry_run(run_config(args))
    if not args.data:
        raise ValueError("train needs --data DATA_DIR (the output of `fedkeys data`)")
    cfg = stage_config(args, args.data, whole=False)
    start(args, cfg)
    from data.dataset import FederatedData
    from federated.training import run_federated

    result = run_federated(cfg, FederatedData(args.data), args.out)
    write_summary(args.out, {"stage": "train", "data_dir": os.path.abspath(args.data), **result})
    final = result.get("final_eval", {})
    print(f"train: held-out top-1 {final.get('top1', float('nan')):.4f}, "
          f"top-3 {final.get('top3', float('nan')):.4f} -> {args.out}")
    return 0
