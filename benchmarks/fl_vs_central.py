"""Federated vs centralized vs KN trigram top-1 on held-out users, per data set.

For each data set (`default`: the preset's own data, the simulator for the built-in presets;
`shakespeare` and `irc`: the corpora in ../shared/corpora; `jsonl:PATH`: any per-user corpus;
benchmarks/_datasets.py): train the preset's model with the preset's federated recipe through
TFF, then the same model centrally on the pooled training users' data for exactly the FL run's
number of examples (model/centralized.py), and fit the interpolated Kneser-Ney trigram
(data/ngram.py) and the most-frequent-word baseline on the training users. All are scored by
the one metric code on the same held-out windows: top-1, top-3, perplexity, and keystroke
savings on the first `--keystroke-rows` windows. Gboard's figures: FL/centralized 0.994,
FL/n-gram 1.26 (Hard et al. 2018); issue 16's goals: FL/trigram >= 1.15 on real corpora and
1.25 on the simulator, FL/centralized >= 0.97.

Usage:
    .venv/bin/python benchmarks/fl_vs_central.py --datasets default,shakespeare,irc
    .venv/bin/python benchmarks/fl_vs_central.py --small          # a quick check, a few minutes
    .venv/bin/python benchmarks/fl_vs_central.py --preset tuned.json --set train.rounds=200
Ends with one JSON line: {"benchmark", "results": [{"dataset", "fl_top1", "central_top1",
"trigram_top1", "fl_over_trigram", "fl_over_central", ...}], "goals"}.
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

GOALS = {"fl_over_central": 0.97, "fl_over_trigram_real": 1.15, "fl_over_trigram_simulator": 1.25}

# Older flags, kept as shorthands for --set: flag -> (config field, conversion).
SHORTHANDS = {"rounds": "train.rounds", "clients": "train.clients_per_round", "epochs": "train.local_epochs",
              "client_lr": "train.client_learning_rate", "server_lr_schedule": "train.server_lr_schedule",
              "algorithm": "train.algorithm"}


def overrides(args) -> list[str]:
    """The shorthand flags given, as `SECTION.FIELD=VALUE`, then every --set (which win)."""
    out = [f"{field}={getattr(args, flag)}" for flag, field in SHORTHANDS.items() if getattr(args, flag) is not None]
    return out + list(args.set)


def run_one(name: str, args) -> dict:
    from federated.training import run_federated
    from model.centralized import train_centralized

    base = run_config(args.preset, [*overrides(args), "train.checkpoint_every=0", "train.tensorboard=false"],
                      small=args.small)
    cfg = dataset_config(name, base)
    root = os.path.join(args.out, dataset_label(name))
    data = prepared(cfg, os.path.join(root, "data"))
    fl_dir, central_dir = os.path.join(root, "fl"), os.path.join(root, "central")
    fl = run_federated(cfg, data, fl_dir, progress=not args.quiet)
    central_lr = args.central_lr if args.central_lr is not None else cfg.train.client_learning_rate
    central = train_centralized(cfg, data, central_dir, examples=fl["examples_processed"],
                                learning_rate=central_lr, momentum=args.central_momentum,
                                progress=not args.quiet)
    trigram = trigram_scores(cfg, data, keystroke_rows=args.keystroke_rows)
    f1, c1, t1 = fl["final_eval"]["top1"], central["final_eval"]["top1"], trigram["top1"]
    row = {"dataset": name, "train_users": fl["population"], "vocab_size": int(data.tokenizer.vocab_size),
           "heldout_oov_rate": data.summary["heldout_oov_rate"],
           "algorithm": cfg.train.algorithm, "rounds": cfg.train.rounds,
           "clients_per_round": cfg.train.clients_per_round, "local_epochs": cfg.train.local_epochs,
           "client_lr": cfg.train.client_learning_rate, "server_lr": cfg.train.server_learning_rate,
           "server_lr_schedule": cfg.train.server_lr_schedule, "examples_processed": fl["examples_processed"],
           "fl_top1": f1, "central_top1": c1, "trigram_top1": t1,
           "most_frequent_top1": fl["baseline_most_frequent"]["top1"],
           "fl_top3": fl["final_eval"]["top3"], "central_top3": central["final_eval"]["top3"],
           "trigram_top3": trigram["top3"], "most_frequent_top3": fl["baseline_most_frequent"]["top3"],
           "fl_perplexity": fl["final_eval"]["perplexity"], "central_perplexity": central["final_eval"]["perplexity"],
           "trigram_perplexity": trigram["perplexity"],
           "fl_over_central": f1 / c1 if c1 else None, "fl_over_trigram": f1 / t1 if t1 else None,
           "central_epochs": central["epochs"], "fl_seconds": fl["seconds"], "central_seconds": central["seconds"],
           "eval_words": fl["final_eval"]["words"]}
    if args.keystroke_rows:
        row["fl_keystroke_savings"] = model_keystroke_savings(cfg, data, os.path.join(fl_dir, "weights.npz"),
                                                              args.keystroke_rows)
        row["central_keystroke_savings"] = model_keystroke_savings(cfg, data, os.path.join(central_dir, "weights.npz"),
                                                                   args.keystroke_rows)
        row["trigram_keystroke_savings"] = trigram["keystroke_savings"]
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap, "train.rounds=200", "a quick check: 80 users, 6 rounds of 5 clients")
    ap.add_argument("--rounds", type=int, help="shorthand for --set train.rounds=N")
    ap.add_argument("--clients", type=int, help="shorthand for --set train.clients_per_round=N")
    ap.add_argument("--epochs", type=int, help="shorthand for --set train.local_epochs=N")
    ap.add_argument("--client-lr", type=float, help="shorthand for --set train.client_learning_rate=X")
    ap.add_argument("--algorithm", help="shorthand for --set train.algorithm=NAME")
    ap.add_argument("--server-lr-schedule", choices=["constant", "cosine"],
                    help="shorthand for --set train.server_lr_schedule=NAME")
    ap.add_argument("--central-lr", type=float, help="centralized SGD step (default: the client learning rate)")
    ap.add_argument("--central-momentum", type=float, default=0.0)
    ap.add_argument("--keystroke-rows", type=int, default=200,
                    help="held-out windows for keystroke savings (the slow metric; 0 = skip)")
    ap.add_argument("--out", help="default runs/bench/fl_vs_central (…_small with --small)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    args.out = args.out or ("runs/bench/fl_vs_central_small" if args.small else "runs/bench/fl_vs_central")
    from federated.runtime import install_cleanup

    install_cleanup()
    rows = []
    for name in args.datasets.split(","):
        r = run_one(name, args)
        rows.append(r)
        goal = GOALS["fl_over_trigram_simulator" if name == "default" else "fl_over_trigram_real"]
        print(f"{name}\n  top1  FL {r['fl_top1']:.4f}  centralized {r['central_top1']:.4f}  "
              f"KN-trigram {r['trigram_top1']:.4f}  most-frequent {r['most_frequent_top1']:.4f}", flush=True)
        print(f"  FL/centralized {r['fl_over_central']:.3f} (goal >= {GOALS['fl_over_central']})  "
              f"FL/trigram {r['fl_over_trigram']:.3f} (goal >= {goal})  "
              f"[{r['train_users']} train users, vocab {r['vocab_size']}, {r['algorithm']} {r['rounds']} rounds x "
              f"{r['clients_per_round']} clients, {r['examples_processed']} examples]", flush=True)
    print(json.dumps({"benchmark": "fl_vs_central", "preset": args.preset, "small": args.small,
                      "results": rows, "goals": GOALS}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
