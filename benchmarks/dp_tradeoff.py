"""Top-1 against epsilon: DP-FedAvg in the TFF simulation at several noise multipliers.

Trains the `default` model on the built-in simulator population with TFF's fixed-clip Gaussian
DP aggregator (federated/privacy.py; McMahan et al. 2018) at each noise multiplier z, with the
population N and clients per round m stated, and reports held-out top-1 and the epsilon spent at
delta = 1/N^1.1 (fedmath.accounting: RDP, Poisson sampling q = m/N; docs/privacy.md).

Then the population question: the noise on the averaged update has std z*C/m per coordinate, so
scaling the cohort by k and z by k keeps the update noise, hence (to first order) the accuracy,
while epsilon falls as the population grows (q = k*m/N). From the largest tested z that kept 90%
of the non-DP top-1, it searches the smallest N for which some k gives epsilon <= 8.9 (Gboard's
es-ES launch) over the same number of rounds.

Usage: .venv/bin/python benchmarks/dp_tradeoff.py [--noise 0,0.02,0.1] [--clients 20] [--rounds 10]
Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def population_needed(z_ok: float, m: int, rounds: int, target_eps: float = 8.9) -> dict | None:
    """Smallest N (on a log grid) with some cohort scale k giving epsilon <= target at z = k*z_ok."""
    from fedmath.accounting import dp_epsilon

    if z_ok <= 0:
        return None
    grid = sorted({int(round(10 ** (e / 8))) for e in range(16, 73)})  # 100 .. ~1e9
    scales = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]
    for n in grid:
        best = None
        for k in scales:
            if k * m > n / 10:  # keep cohorts a small fraction of the population
                break
            eps = dp_epsilon([(k * m / n, k * z_ok)] * rounds, 1.0 / n ** 1.1)
            if best is None or eps < best["epsilon"]:
                best = {"population": n, "cohort": k * m, "noise_multiplier": k * z_ok, "epsilon": eps}
        if best is not None and best["epsilon"] <= target_eps:
            return best
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--noise", default="0,0.02,0.1", help="noise multipliers; 0 = the non-DP run")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--clip", type=float, default=0.5)
    ap.add_argument("--client-lr", type=float, default=1.0)
    ap.add_argument("--epochs", type=int, default=2, help="client local epochs")
    ap.add_argument("--out", default="runs/bench/dp_tradeoff")
    ap.add_argument("--data", default="", help="a prepared default data dir (prepared under --out if empty)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)

    from configs.presets import preset
    from data.dataset import FederatedData
    from data.prepare import prepare
    from federated.privacy import default_delta
    from federated.runtime import install_cleanup
    from federated.training import run_federated

    install_cleanup()
    base = preset("default")
    data_dir = args.data or os.path.join(args.out, "data")
    if not os.path.exists(os.path.join(data_dir, "summary.json")):
        prepare(base.data, data_dir, progress=False)
    data = FederatedData(data_dir)
    n = len(data.users("train"))
    delta = default_delta(n)
    rows = []
    for z in [float(v) for v in args.noise.split(",")]:
        cfg = dataclasses.replace(
            base,
            train=dataclasses.replace(base.train, rounds=args.rounds, clients_per_round=args.clients,
                                      client_learning_rate=args.client_lr, local_epochs=args.epochs,
                                      eval_every=args.rounds,
                                      checkpoint_every=0, tensorboard=False),
            privacy=dataclasses.replace(base.privacy, dp="fixed" if z > 0 else "none", clip_norm=args.clip,
                                        noise_multiplier=z))
        s = run_federated(cfg, data, os.path.join(args.out, f"z{z:g}"), progress=not args.quiet)
        eps = s["dp"]["epsilon"] if z > 0 else math.inf
        rows.append({"noise_multiplier": z, "dp": z > 0, "top1": s["final_eval"]["top1"],
                     "top3": s["final_eval"]["top3"], "epsilon": eps, "seconds": s["seconds"]})
        print(f"z={z:<6g} top1 {s['final_eval']['top1']:.4f}  top3 {s['final_eval']['top3']:.4f}  "
              f"epsilon {eps:.3g} at delta {delta:.2e}  (N={n}, m={args.clients}, {args.rounds} rounds, "
              f"clip {args.clip})", flush=True)
    base_top1 = next((r["top1"] for r in rows if not r["dp"]), None)
    kept = [r for r in rows if r["dp"] and base_top1 and r["top1"] >= 0.9 * base_top1]
    z_ok = max((r["noise_multiplier"] for r in kept), default=0.0)
    need = population_needed(z_ok, args.clients, args.rounds) if z_ok else None
    if need:
        print(f"largest tested z keeping 90% of non-DP top-1: {z_ok:g} (noise std on the mean update "
              f"{z_ok * args.clip / args.clients:.2e}); epsilon <= 8.9 needs N >= {need['population']:,} "
              f"with cohorts of {need['cohort']:,} at z={need['noise_multiplier']:g} "
              f"(epsilon {need['epsilon']:.2f}, {args.rounds} rounds)", flush=True)
    else:
        print("no tested DP noise level kept 90% of the non-DP top-1; try smaller --noise values", flush=True)
    print(json.dumps({"benchmark": "dp_tradeoff", "population": n, "clients_per_round": args.clients,
                      "rounds": args.rounds, "clip": args.clip, "delta": delta, "non_dp_top1": base_top1,
                      "results": [{**r, "epsilon": r["epsilon"] if math.isfinite(r["epsilon"]) else None}
                                 for r in rows],
                     "z_keeping_90pct": z_ok or None, "population_for_eps_8_9": need}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
