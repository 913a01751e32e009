"""Personalization of the global model on held-out users: per strategy, mean per-user top-1
and keystroke savings of the global and the personalized model, the share of users improved,
and the quartiles of the per-user gains (Wang et al. 2019, arXiv:1910.10252).

    .venv/bin/python benchmarks/personalization.py [--datasets default,irc] [--small]
        [--strategies none,bias,all,cache] [--epochs 3] [--lr 8] [--train-fraction 0.5]
        [--min-words 100] [--tune-split proxy]
        [--from runs/bench/fl_vs_central] [--out runs/bench/personalization]

Each held-out user's messages are split in time (the earlier half to fine-tune on, the later
half to score); strategies (`model/personalize.py`): `none` (the global model), `bias` (SGD on
the output bias alone), `all` (every weight, the phones' SGD step), `cache` (the user's own word
cache mixed into the global model, `keyboard/cache.py`: no training; its three numbers are chosen
on the proxy users, split in time the same way, never on the held-out users scored here).
Every user with a message on each side is scored once; the table counts users with at least
`--min-words` in-vocabulary words on either side (a user with three later words can only tie or
flip, so "share improved" would count noise), and a line per strategy gives the same figures over
every user (each row's `all_users`). The global model is the
federated model of a `benchmarks/fl_vs_central.py` output folder (`--from DIR`: DIR/<data
set>/data and DIR/<data set>/fl/weights.npz), or trained here with `run_federated` when there is
none. Goal (issue 21): on both data sets, the best strategy raises mean per-user top-1 by at
least 10% relative with at least 70% of users improved. Prints a table and ends with one JSON
line `{"benchmark": "personalization", "rows": [...]}`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._datasets import dataset_config, dataset_label, prepared, run_config  # noqa: E402

GOAL_RELATIVE_GAIN, GOAL_SHARE_IMPROVED = 0.10, 0.70


def global_model(name: str, args):
    """(cfg, data, weights, source) for data set `name`."""
    from configs import read_config
    from data.dataset import FederatedData
    from model.weights_io import load_weights

    if args.from_dir:
        root = os.path.join(args.from_dir, dataset_label(name))
        weights = os.path.join(root, "fl", "weights.npz")
        if not os.path.exists(weights):
            raise FileNotFoundError(f"{weights} not found: run benchmarks/fl_vs_central.py --out {args.from_dir} first")
        return read_config(os.path.join(root, "fl")), FederatedData(os.path.join(root, "data")), \
            load_weights(weights)[1], weights
    from federated.training import run_federated

    cfg = dataset_config(name, run_config(args.preset, [*args.set, "train.checkpoint_every=0",
                                                         "train.tensorboard=false"], small=args.small))
    root = os.path.join(args.out, dataset_label(name))
    data = prepared(cfg, os.path.join(root, "data"))
    fl_dir = os.path.join(root, "fl")
    if not os.path.exists(os.path.join(fl_dir, "weights.npz")):
        run_federated(cfg, data, fl_dir, progress=not args.quiet)
    return cfg, data, load_weights(os.path.join(fl_dir, "weights.npz"))[1], os.path.join(fl_dir, "weights.npz")


def main(argv=None) -> int:
    from benchmarks._datasets import add_arguments

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap, "train.rounds=200", "a quick check: 80 users, 6 rounds of 5 clients, 10 users scored")
    ap.set_defaults(datasets="default,irc")
    ap.add_argument("--strategies", default="none,bias,all,cache")
    ap.add_argument("--min-words", type=int, default=100,
                    help="score users with at least this many words on each side of the split (0 = all)")
    ap.add_argument("--tune-split", default="proxy", help="users the cache's numbers are chosen on (never heldout)")
    ap.add_argument("--cache-grid", default="0.1,0.2,0.3,0.4:0.25:0,50",
                    help="the cache's search grid, LAMS:KAPPAS:N0S (comma lists)")
    ap.add_argument("--epochs", type=int, default=3, help="local passes over each user's earlier windows")
    ap.add_argument("--lr", type=float, default=8.0, help="fine-tuning SGD step (both strategies)")
    ap.add_argument("--all-lr", type=float, default=None, help="step for `all` (default --lr / 16)")
    ap.add_argument("--train-fraction", type=float, default=0.5)
    ap.add_argument("--max-users", type=int, default=0, help="held-out users scored (0 = all)")
    ap.add_argument("--max-examples", type=int, default=64, help="windows per user on each side of the split")
    ap.add_argument("--keystroke-rows", type=int, default=8, help="windows per user scored for keystroke savings")
    ap.add_argument("--from", dest="from_dir", help="a benchmarks/fl_vs_central.py --out folder to take models from")
    ap.add_argument("--out", help="default runs/bench/personalization (…_small with --small)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    args.out = args.out or ("runs/bench/personalization_small" if args.small else "runs/bench/personalization")
    if args.small and not args.max_users:
        args.max_users = 10
    from keyboard.cache import CacheParams
    from model.personalize import evaluate_personalization

    strategies = args.strategies.split(",")
    if args.tune_split == "heldout":
        raise SystemExit("--tune-split must not be heldout: the cache's numbers are chosen on users not scored")
    rows = []
    for name in args.datasets.split(","):
        cfg, data, weights, source = global_model(name, args)
        started = time.time()
        cache = tune(cfg, data, weights, args) if "cache" in strategies else CacheParams()
        for s in strategies:
            lr = (args.all_lr if args.all_lr is not None else args.lr / 16) if s == "all" else args.lr
            r = evaluate_personalization(cfg, data, weights, [s], epochs=args.epochs, learning_rate=lr,
                                         train_fraction=args.train_fraction, max_users=args.max_users,
                                         max_examples=args.max_examples, keystroke_rows=args.keystroke_rows,
                                         min_words=args.min_words, cache=cache,
                                         progress=None if args.quiet else print)[s]
            r.pop("per_user")
            if "all_users" in r:
                r["all_users"] = {k: r["all_users"][k] for k in ("users", "global_top1", "personalized_top1",
                                                                 "relative_gain", "share_improved", "share_worse")}
            rows.append({"dataset": name, **r, "model": source, "cell": cfg.model.cell,
                         "vocab_size": int(data.tokenizer.vocab_size), "seconds": round(time.time() - started, 1)})
            started = time.time()
    for r in rows:
        if "all_users" in r:
            a = r["all_users"]
            print(f"{r['dataset']} {r['strategy']} over every user with a message each side ({a['users']} users): "
                  f"top-1 {a['global_top1']:.4f} -> {a['personalized_top1']:.4f} ({a['relative_gain']:+.3f}), "
                  f"{a['share_improved']:.2f} improved, {a['share_worse']:.2f} worse")
    print(f"{'dataset':<9} {'strategy':<8} {'users':>5} {'top-1 g':>8} {'top-1 p':>8} {'rel gain':>8} {'improved':>8} "
          f"{'KS g':>6} {'KS p':>6}  gain quartiles")
    for r in rows:
        print(f"{r['dataset']:<9} {r['strategy']:<8} {r['users']:>5} {r['global_top1']:>8.4f} {r['personalized_top1']:>8.4f} "
              f"{r['relative_gain']:>+8.3f} {r['share_improved']:>8.2f} {r.get('global_keystroke_savings', float('nan')):>6.3f} "
              f"{r.get('personalized_keystroke_savings', float('nan')):>6.3f}  "
              + " ".join(f"{q:+.4f}" for q in r["gain_quartiles"]))
    met = {}
    for name in args.datasets.split(","):
        best = max((r for r in rows if r["dataset"] == name and r["strategy"] != "none"),
                   key=lambda r: r["relative_gain"], default=None)
        met[name] = bool(best and best["relative_gain"] >= GOAL_RELATIVE_GAIN and best["share_improved"] >= GOAL_SHARE_IMPROVED)
        print(f"goal on {name} (best strategy +{GOAL_RELATIVE_GAIN:.0%} top-1, {GOAL_SHARE_IMPROVED:.0%} of users improved): "
              f"{'met' if met[name] else 'not met'}" + (f" by {best['strategy']}" if best else ""))
    print(json.dumps({"benchmark": "personalization", "goal_met": met, "rows": rows}))
    return 0


def tune(cfg, data, weights, args):
    """The cache's (lam, kappa, n0) with the best mean per-user top-1 on `args.tune_split` users."""
    import itertools

    from keyboard.cache import CacheParams
    from model.personalize import tune_cache

    lams, kappas, n0s = ([float(v) for v in part.split(",")] for part in args.cache_grid.split(":"))
    best, _ = tune_cache(cfg, data, weights, [CacheParams(*p) for p in itertools.product(lams, kappas, n0s)],
                         split=args.tune_split, train_fraction=args.train_fraction, max_examples=args.max_examples,
                         min_words=args.min_words, progress=None if args.quiet else print)
    print(f"cache chosen on {args.tune_split} users: {best}")
    return best


if __name__ == "__main__":
    sys.exit(main())
