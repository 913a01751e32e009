"""Train the next-word LSTM with TFF federated averaging over the training users.

`fedkeys train --data DATA_DIR --out RUN_DIR` writes metrics.csv, weights.npz and summary.json.
`--centralized` trains the same model on the pooled training users instead (the baseline),
`--centralized --users proxy` pretrains on the proxy users (never training users), and
`--init-from RUN_OR_WEIGHTS` starts federated training from such weights;
`--resume` continues a killed run from its last checkpoint, `--dp fixed|adaptive` turns on
TFF's DP aggregator with privacy accounting, `--workers HOST:PORT,...` runs the rounds on
`fedkeys worker` processes (other machines), and `--dry-run` prints the model's size.
"""

from __future__ import annotations

import argparse
import dataclasses
import os

from fedkeys.commands.common import run_config, stage_config, write_summary


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="a directory made by `fedkeys data`")
    p.add_argument("--dry-run", action="store_true", help="print the model size and exit")
    p.add_argument("--centralized", action="store_true", help="train on the pooled training users (baseline)")
    p.add_argument("--examples", type=int, help="--centralized: examples to process (default: matched to FL)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    p.add_argument("--users", choices=("train", "proxy"), default="train",
                   help="--centralized: pool these users' text (proxy: public pretraining, never training users)")
    p.add_argument("--init-from", metavar="RUN_OR_WEIGHTS",
                   help="start federated training from these weights (a run directory or a .npz of the same model)")
    p.add_argument("--dp", choices=("none", "fixed", "adaptive", "ftrl"), help="same as --set privacy.dp=...")
    p.add_argument("--algorithm", help="fedavg, fedavgm, fedadam, fedyogi or fedprox (train.algorithm)")
    p.add_argument("--workers", metavar="HOST:PORT,...",
                   help="run the TFF rounds on these `fedkeys worker` processes (same as --set runtime.workers=...)")


def dry_run(cfg) -> int:
    from model.nwp import param_report

    r = param_report(cfg.model, cfg.data.vocab_size, cfg.data.seq_len)
    print(f"preset {cfg.preset}: {r['cell']} model, vocab {r['vocab_size']}, embedding {r['embedding_dim']}, "
          f"units {r['units']}: {r['params']:,} trainable parameters")
    return 0


def add_keystroke_savings(cfg, data, out: str, result: dict) -> None:
    """Keystroke savings beside top-1 and top-3 (keyboard teams quote both) in the final
    evaluation and the most-frequent-word baseline, on the evaluation's first held-out rows."""
    path = os.path.join(out, "weights.npz")
    if not os.path.exists(path) or not isinstance(result.get("final_eval"), dict):
        return
    from fedkeys.commands.evaluate import baseline_keystroke_savings, heldout, keystroke_savings
    from model.weights_io import load_weights

    xy = heldout(cfg, data)
    result["final_eval"] = {**result["final_eval"], **keystroke_savings(cfg, data, load_weights(path)[1], xy)}
    if isinstance(result.get("baseline_most_frequent"), dict):
        result["baseline_most_frequent"] = {**result["baseline_most_frequent"], **baseline_keystroke_savings(cfg, data, xy)}


def run(args: argparse.Namespace) -> int:
    if args.dry_run:
        return dry_run(run_config(args))
    if not args.data or not args.out:
        raise ValueError("train needs --data DATA_DIR (the output of `fedkeys data`) and --out RUN_DIR")
    cfg = stage_config(args, args.data, whole=False)
    if args.dp:
        cfg = dataclasses.replace(cfg, privacy=dataclasses.replace(cfg.privacy, dp=args.dp))
    if args.algorithm:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, algorithm=args.algorithm))
    if args.workers:
        cfg = dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, workers=args.workers))
    from data.dataset import FederatedData

    data = FederatedData(args.data)
    if args.centralized:
        from model.centralized import train_centralized

        result = train_centralized(cfg, data, args.out, examples=args.examples, split=args.users)
    else:
        from federated.training import run_federated

        result = run_federated(cfg, data, args.out, resume=args.resume, init_from=args.init_from)
    add_keystroke_savings(cfg, data, args.out, result)
    write_summary(args.out, {"stage": "train", "data_dir": os.path.abspath(args.data), **result})
    final = result.get("final_eval", {})
    print(f"train: held-out top-1 {final.get('top1', float('nan')):.4f}, "
          f"top-3 {final.get('top3', float('nan')):.4f}, "
          f"keystroke savings {final.get('keystroke_savings', float('nan')):.4f} -> {args.out}")
    return 0
