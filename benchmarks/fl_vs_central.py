"""Federated (FedAvgM) vs centralized vs KN trigram top-1 on held-out users.

For each data set (`default`: the built-in simulator population; `shakespeare`: the Shakespeare
corpus in ../shared/corpora, one user per role): train the `default` model with FedAvgM
(server Nesterov momentum 0.9, server lr 1.0, as Gboard; Hard et al. 2018) through TFF, then the
same model centrally on the pooled training users' data for exactly the FL run's number of
examples (model/centralized.py), and fit the interpolated Kneser-Ney trigram (data/ngram.py) on
the training users. All three are scored by the one metric code on the same held-out windows.
Gboard's figures: FL/centralized 0.994, FL/n-gram 1.26 (docs REFERENCES.md); goals 0.97 and 1.25.

Usage: .venv/bin/python benchmarks/fl_vs_central.py [--datasets default,shakespeare] [--rounds 40]
Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._datasets import dataset_config, prepared, trigram_scores  # noqa: E402


def run_one(name: str, args) -> dict:
    from configs.presets import preset
    from federated.training import run_federated
    from model.centralized import train_centralized

    cfg = dataset_config(name, preset("default"))
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, algorithm="fedavgm", rounds=args.rounds, clients_per_round=args.clients,
        client_learning_rate=args.client_lr, server_learning_rate=1.0, server_momentum=0.9,
        server_lr_schedule=args.server_lr_schedule,
        local_epochs=args.epochs, eval_every=max(1, args.rounds // 4), checkpoint_every=0))
    root = os.path.join(args.out, name)
    data = prepared(cfg, os.path.join(root, "data"))
    fl = run_federated(cfg, data, os.path.join(root, "fl"), progress=not args.quiet)
    central = train_centralized(cfg, data, os.path.join(root, "central"), examples=fl["examples_processed"],
                                learning_rate=args.central_lr, momentum=args.central_momentum,
                                progress=not args.quiet)
    vocab = data.tokenizer.vocab_size
    trigram = trigram_scores(cfg, data)
    f1, c1, t1 = fl["final_eval"]["top1"], central["final_eval"]["top1"], trigram["top1"]
    return {"dataset": name, "train_users": fl["population"], "vocab_size": vocab, "rounds": args.rounds,
            "server_lr_schedule": args.server_lr_schedule, "clients_per_round": args.clients, "examples_processed": fl["examples_processed"],
            "fl_top1": f1, "central_top1": c1, "trigram_top1": t1,
            "fl_top3": fl["final_eval"]["top3"], "central_top3": central["final_eval"]["top3"],
            "trigram_top3": trigram["top3"], "most_frequent_top1": fl["baseline_most_frequent"]["top1"],
            "fl_over_central": f1 / c1 if c1 else None, "fl_over_trigram": f1 / t1 if t1 else None,
            "central_epochs": central["epochs"], "fl_seconds": fl["seconds"], "central_seconds": central["seconds"],
            "eval_words": fl["final_eval"]["words"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="default,shakespeare")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=1, help="client local epochs")
    ap.add_argument("--client-lr", type=float, default=0.5)
    ap.add_argument("--server-lr-schedule", default="constant", choices=["constant", "cosine"],
                    help="FedAvgM server learning rate: constant 1.0, or a half cosine from 1.0 to 0 over the rounds")
    ap.add_argument("--central-lr", type=float, default=0.5)
    ap.add_argument("--central-momentum", type=float, default=0.0)
    ap.add_argument("--out", default="runs/bench/fl_vs_central")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    from federated.runtime import install_cleanup

    install_cleanup()
    rows = []
    for name in args.datasets.split(","):
        r = run_one(name, args)
        rows.append(r)
        print(f"{name:12s} top1  FL(FedAvgM) {r['fl_top1']:.4f}  centralized {r['central_top1']:.4f}  "
              f"KN-trigram {r['trigram_top1']:.4f}  most-frequent {r['most_frequent_top1']:.4f}", flush=True)
        print(f"{'':12s} FL/centralized {r['fl_over_central']:.3f} (goal >= 0.97)  "
              f"FL/trigram {r['fl_over_trigram']:.3f} (goal >= 1.25)  "
              f"[{r['train_users']} train users, {r['rounds']} rounds x {r['clients_per_round']} clients, "
              f"{r['examples_processed']} examples]", flush=True)
    print(json.dumps({"benchmark": "fl_vs_central", "results": rows,
                      "goals": {"fl_over_central": 0.97, "fl_over_trigram": 1.25}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
