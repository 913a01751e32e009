"""Non-DP, DP-FedAvg and DP-FTRL on one large simulated population, with and without pretraining.

Gboard's production recipe (Xu et al. 2023): DP-FTRL with tree aggregation (Kairouz et al. 2021)
needs no sampling assumption; the model is pretrained on public data first; the privacy is
reported as rho-zCDP and as epsilon at delta = 1e-10. Here, all in the TFF simulation:

- population: synthetic users holding tens of messages (`data.max_messages_per_user`), so a
  cohort of thousands trains in a reasonable time; N training users, cohort m, T = N / m
  rounds = one pass: `train.selection = "epoch"` takes each user at most once, so the accounting
  claims no sampling amplification (fedmath.accounting).
- noise: each DP mechanism gets the noise multiplier that spends exactly `--rho` over the run:
  DP-FedAvg rho = passes / (2 z^2), DP-FTRL rho = ceil(log2(T + 1)) / (2 z^2) per pass.
- pretraining: centralized training on the proxy users (never training users:
  `model.centralized.train_centralized(split="proxy")`), then `init_from` its weights.

Prints top-1, rho, epsilon at 1e-10 and at 1/N^1.1, and the rounds to reach `--target` times the
non-pretrained non-DP final top-1, one line per run; ends with one JSON line
{"benchmark": "dp_production", "rows": [...]}.

Each client takes one step on at most 32 windows (`--batch-size`, `--max-examples`): the TFF
runtime's fixed per-client cost is about half of a phone-sized client's (docs/decisions.md), so
the budget goes to the cohort, which is what shrinks the noise (z C / m). `--rows` runs a subset;
a finished run with the same config is read back from disk, so rows run in parallel processes are
joined by a last call that names them all.

Usage: .venv/bin/python benchmarks/dp_production.py [--small] [--users 40000 --cohort 2000]
       [--rows none:pre,dp_ftrl:pre] [--pretrain-examples 15000 --pretrain-momentum 0.9]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MECHANISMS = {"none": "none", "dp_fedavg": "fixed", "dp_ftrl": "ftrl"}  # row name -> privacy.dp


def arguments(ap: argparse.ArgumentParser) -> None:
    """The population and training options (canary_exposure.py shares them)."""
    ap.add_argument("--small", action="store_true", help="quick form: 300 users, cohorts of 30 (8 rounds)")
    ap.add_argument("--users", type=int, default=40_000, help="simulated users (80%% train, 10%% held out, 10%% proxy)")
    ap.add_argument("--messages", type=int, default=30, help="messages per user at most (phones hold tens)")
    ap.add_argument("--cohort", type=int, default=2_000, help="clients per round")
    ap.add_argument("--passes", type=int, default=1, help="passes over the training users (rounds = passes * N / cohort)")
    ap.add_argument("--rho", type=float, default=2.0, help="zCDP every DP run spends")
    ap.add_argument("--clip", type=float, default=0.5)
    ap.add_argument("--client-lr", type=float, default=0.5)
    ap.add_argument("--server-lr", type=float, default=1.0)
    ap.add_argument("--pretrain-examples", type=int, default=0, help="proxy examples to pretrain on (0 = 3 epochs)")
    ap.add_argument("--pretrain-lr", type=float, default=0.5, help="pretraining SGD step size")
    ap.add_argument("--pretrain-momentum", type=float, default=0.0, help="pretraining SGD momentum")
    # one client step on a phone-sized history: a client costs the C++ runtime ~0.1 CPU s whatever
    # its size, so each client does a single batch of up to 32 windows (docs/decisions.md)
    ap.add_argument("--batch-size", type=int, default=32, help="client batch size")
    ap.add_argument("--max-examples", type=int, default=32, help="windows per client per round at most")
    ap.add_argument("--rows", default="all", help="'all' or a comma list of MECHANISM:pre|scratch (e.g. "
                    "none:pre,dp_ftrl:pre) to run only those rows")
    ap.add_argument("--out", default="runs/bench/dp_production")
    ap.add_argument("--quiet", action="store_true")


def small(args: argparse.Namespace) -> argparse.Namespace:
    if args.small:
        args.users, args.cohort = 300, 30
    return args


def population(args: argparse.Namespace):
    """The prepared population (cached under --out) and its training-user count."""
    from configs.presets import preset
    from data.dataset import FederatedData
    from data.prepare import prepare

    base = preset("default")
    data_dir = os.path.join(args.out, f"data_u{args.users}_m{args.messages}")
    if not os.path.exists(os.path.join(data_dir, "summary.json")):
        prepare(dataclasses.replace(base.data, num_users=args.users, max_messages_per_user=args.messages),
                data_dir, progress=False)
    data = FederatedData(data_dir)
    return data, len(data.users("train"))


def run_config(args: argparse.Namespace, n_train: int, mechanism: str, z: float):
    """The `default` preset with epoch selection over one population, for one mechanism."""
    from configs.presets import preset

    base = preset("default")
    per_pass = n_train // args.cohort
    rounds = per_pass * args.passes
    return dataclasses.replace(
        base,
        train=dataclasses.replace(base.train, rounds=rounds, clients_per_round=args.cohort, selection="epoch",
                                  local_epochs=1, client_learning_rate=args.client_lr, batch_size=args.batch_size,
                                  server_learning_rate=args.server_lr, max_examples_per_client=args.max_examples,
                                  eval_every=max(1, rounds // 8), checkpoint_every=0, tensorboard=False),
        privacy=dataclasses.replace(base.privacy, dp=MECHANISMS[mechanism], clip_norm=args.clip,
                                    noise_multiplier=z, delta=1e-10))


def noise_for_rho(mechanism: str, rho: float, rounds: int, per_pass: int) -> float:
    """The noise multiplier at which the whole run spends exactly `rho` (0 without DP)."""
    from fedmath.accounting import tree_depth

    passes = -(-rounds // per_pass)
    if mechanism == "none":
        return 0.0
    if mechanism == "dp_fedavg":
        return math.sqrt(passes / (2 * rho))
    return math.sqrt(passes * tree_depth(per_pass) / (2 * rho))


def selected_rows(spec: str) -> list[tuple[str, bool]]:
    """(mechanism, pretrained) pairs of `--rows`, non-DP rows first so each ratio has its base.

    Rows run in separate processes can be joined afterwards: a finished run with the same config
    is read back rather than trained again (`train_row`), so a last call naming all rows prints the
    whole table from the runs on disk.

    Raises:
        ValueError: an unknown mechanism or form.
    """
    every = [(m, p) for p in (False, True) for m in MECHANISMS]
    if spec == "all":
        return every
    wanted = []
    for item in spec.split(","):
        mechanism, _, form = item.partition(":")
        if mechanism not in MECHANISMS or form not in ("pre", "scratch"):
            raise ValueError(f"--rows items are MECHANISM:pre|scratch with MECHANISM in {list(MECHANISMS)}, "
                             f"got {item!r}")
        wanted.append((mechanism, form == "pre"))
    return [r for r in every if r in wanted]


def pretrain(args: argparse.Namespace, data, n_train: int) -> str:
    """Centralized training on the proxy users; the run directory (cached)."""
    from model.centralized import train_centralized

    cfg = run_config(args, n_train, "none", 0.0)
    proxy = sum(data.client_examples(u, cfg.data.seq_len, args.max_examples)[0].shape[0] for u in data.users("proxy"))
    examples = args.pretrain_examples or 3 * proxy
    out = os.path.join(args.out, f"pretrain_proxy_u{args.users}_m{args.messages}_e{examples}_lr{args.pretrain_lr}"
                                 f"_mom{args.pretrain_momentum}")
    if not os.path.exists(os.path.join(out, "weights.npz")):
        s = train_centralized(cfg, data, out, examples=examples, split="proxy", learning_rate=args.pretrain_lr,
                              momentum=args.pretrain_momentum, progress=not args.quiet)
        print(f"pretrained on {len(data.users('proxy'))} proxy users ({s['examples_processed']} examples): "
              f"held-out top-1 {s['final_eval']['top1']:.4f}", flush=True)
    return out


def train_row(args: argparse.Namespace, data, n_train: int, mechanism: str, init_from: str | None):
    """One federated run; its summary and its (round, top1) evaluations."""
    from configs.io import finished_result
    from federated.training import run_federated

    per_pass = n_train // args.cohort
    z = noise_for_rho(mechanism, args.rho, per_pass * args.passes, per_pass)
    cfg = run_config(args, n_train, mechanism, z)
    out = os.path.join(args.out, f"u{args.users}_c{args.cohort}_p{args.passes}_{mechanism}_"
                                 f"{'pre' if init_from else 'scratch'}")
    s = finished_result(out, cfg, "summary.json")  # the same run, finished: reused
    if s is None:
        s = run_federated(cfg, data, out, progress=not args.quiet, init_from=init_from)
    with open(os.path.join(out, "metrics.csv")) as f:
        evals = [(int(r["round"]), float(r["top1"])) for r in csv.DictReader(f) if r["top1"]]
    return cfg, s, evals, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments(ap)
    ap.add_argument("--target", type=float, default=0.9, help="rounds to this share of the non-DP scratch top-1")
    args = small(ap.parse_args(argv))

    from federated.privacy import default_delta
    from federated.runtime import install_cleanup
    from fedmath.accounting import GBOARD_DELTA, zcdp_epsilon

    install_cleanup()
    data, n = population(args)
    wanted = selected_rows(args.rows)
    pre = pretrain(args, data, n) if any(p for _, p in wanted) else None
    pre_top1 = None
    if pre:  # the pretrained start's own held-out top-1: what federated fine-tuning adds to it
        with open(os.path.join(pre, "summary.json")) as f:
            pre_top1 = json.load(f)["final_eval"]["top1"]
    rows, nondp = [], {}
    for pretrained in (False, True):
        for mechanism in MECHANISMS:
            if (mechanism, pretrained) not in wanted:
                continue
            cfg, s, evals, _ = train_row(args, data, n, mechanism, pre if pretrained else None)
            top1 = s["final_eval"]["top1"]
            if mechanism == "none":
                nondp[pretrained] = top1
            rho = s["dp"]["rho"]
            base = nondp.get(pretrained)
            target = args.target * nondp.get(False, base or 0.0)
            reached = next((r for r, t in evals if t >= target), None)
            row = {"mechanism": mechanism, "pretrained": pretrained, "population": n,
                   "cohort": cfg.train.clients_per_round, "rounds": cfg.train.rounds,
                   "noise_multiplier": cfg.privacy.noise_multiplier if rho is not None else 0.0,
                   "clip": cfg.privacy.clip_norm, "rho": rho,
                   "epsilon_1e10": zcdp_epsilon(rho, GBOARD_DELTA) if rho is not None else None,
                   "epsilon_n11": zcdp_epsilon(rho, default_delta(n)) if rho is not None else None,
                   "top1": top1, "top1_over_nondp": top1 / base if base else None,
                   "rounds_to_target": reached, "target_top1": target,
                   "baseline_top1": s["baseline_most_frequent"]["top1"],
                   "start_top1": pre_top1 if pretrained else None, "seconds": s["seconds"]}
            rows.append(row)
            eps = "-" if rho is None else f"{row['epsilon_1e10']:.2f} (1e-10), {row['epsilon_n11']:.2f} (1/N^1.1)"
            print(f"{mechanism:9s} pretrained={pretrained!s:5s} N={n} m={row['cohort']} T={row['rounds']} "
                  f"z={row['noise_multiplier']:.3f} C={args.clip} rho={rho if rho is None else round(rho, 3)} "
                  f"eps {eps}  top1 {top1:.4f} ({row['top1_over_nondp'] or float('nan'):.3f} of non-DP)  "
                  f"rounds to {target:.4f}: {reached}  [{s['seconds']:.0f} s]"
                  + (f" (start {pre_top1:.4f})" if pretrained else ""), flush=True)
    ftrl = [r for r in rows if r["mechanism"] == "dp_ftrl" and r["rho"] <= 2 + 1e-9 and r["top1_over_nondp"] is not None]
    if not ftrl:
        print(json.dumps({"benchmark": "dp_production", "small": args.small, "target_share": args.target,
                          "rows": rows}))
        return 0
    best = max(ftrl, key=lambda r: r["top1_over_nondp"] or 0)
    # a non-DP model no better than always suggesting the commonest word makes any ratio vacuous
    learned = nondp[best["pretrained"]] > best["baseline_top1"]
    verdict = ("met" if best["top1_over_nondp"] >= 0.9 else "NOT met") if learned else \
        "not shown (non-DP top-1 is the most-frequent-word baseline)"
    print(f"goal (DP-FTRL, rho <= 2, top-1 >= 0.90 of non-DP): best {best['top1_over_nondp']:.3f} "
          f"(pretrained={best['pretrained']}): {verdict}", flush=True)
    print(json.dumps({"benchmark": "dp_production", "small": args.small, "target_share": args.target,
                      "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
