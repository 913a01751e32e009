"""Audit what a federated run memorizes: canaries planted in users' data, exposure measured.

`fedkeys audit --data DATA_DIR --out RUN_DIR [--set privacy.dp=ftrl ...]` trains like
`fedkeys train` (TFF simulation, the preset and overrides given) on data in which random canary
sentences sit in chosen training users' histories 1, 5 or 25 times (one user) and 25 times over
5 users, then prints each canary group's exposure (Carlini et al. 2019: log2 |R| - log2 rank)
beside the exposures of never-inserted sequences of the same format. Writes audit.json.
"""

from __future__ import annotations

import argparse
import os

from fedkeys.commands.common import stage_config, table, write_summary


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="a directory made by `fedkeys data`")
    p.add_argument("--per-config", type=int, default=3, help="canaries per (repetitions, users) group")


def run(args: argparse.Namespace) -> int:
    if not args.data:
        raise ValueError("audit needs --data DATA_DIR (the output of `fedkeys data`) and --out RUN_DIR")
    cfg = stage_config(args, args.data, whole=False)
    from data.dataset import FederatedData
    from federated.audit import run_audit

    result = run_audit(cfg, FederatedData(args.data), args.out, per_config=args.per_config)
    rows = result["rows"]
    print(table([(str(r["repetitions"]), str(r["users"]), f"{r['exposure']:.2f}", f"{r['exposure_max']:.2f}",
                  f"{r['exposure_extrapolated']:.2f}") for r in rows],
                ("repetitions", "users", "exposure", "max", "extrapolated")))
    print(f"never-inserted sequences: median exposure {rows[0]['reference_median']:.2f}, "
          f"95th percentile {rows[0]['reference_p95']:.2f} bits; |R| = {rows[0]['space']:,}")
    dp = result["summary"]["dp"]
    write_summary(args.out, {"stage": "audit", "data_dir": os.path.abspath(args.data), "rows": rows,
                             **{k: v for k, v in result["summary"].items() if k != "stage"}})
    print(f"audit: dp {dp['mode']}, rho {dp.get('rho')}, epsilon {dp.get('epsilon')} -> {args.out}")
    return 0
