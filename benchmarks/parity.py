"""Parity of the deployment path with the TFF simulation, for every server optimizer.

For each case of `device_sim.parity.CASES` (fedavg, fedavgm, fedadam, fedyogi, fedavg with an
update clip that binds on most clients, and fedavg with each client step's gradient clipped),
trains R rounds in TFF and R rounds with TFLite phones against
a gunicorn collector over HTTP, from the same initial weights with the same cohorts, and prints
the largest absolute weight difference. The goal is <= 1e-4 for every case.

    .venv/bin/python benchmarks/parity.py [--preset tiny] [--rounds 3] [--cases fedavg,fedadam]

Ends with one JSON line:
{"benchmark": "parity", "max_abs_diff": {"fedavg": x, "fedavgm": x, "fedadam": x, "fedyogi": x,
 "fedavg_clipped": x, "fedavg_gradclip": x}, "ok": bool, ...}
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TOLERANCE = 1e-4


def main(argv: list[str] | None = None) -> dict:
    from configs import resolve
    from device_sim.parity import CASES, case_config, run_parity

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {sorted(CASES)}")
    p.add_argument("--workdir", default="runs/bench/parity")
    args = p.parse_args(argv)
    cases = [c for c in args.cases.split(",") if c]

    from data.prepare import prepare

    base = resolve(args.preset, args.set)
    data_dir = os.path.join(args.workdir, "data")
    if not os.path.exists(os.path.join(data_dir, "splits.json")):
        prepare(base.data, data_dir, progress=False)
    diffs, details = {}, {}
    bundle = None  # the first case's export serves the others (the same start)
    for case in cases:
        cfg = case_config(base, case, args.rounds)
        t0 = time.perf_counter()
        r = run_parity(cfg, data_dir, os.path.join(args.workdir, case), rounds=args.rounds,
                       clip_norm=cfg.privacy.clip_norm if cfg.privacy.dp == "fixed" else None, bundle_from=bundle)
        bundle = bundle or os.path.join(args.workdir, case, "bundle")
        diffs[case] = r["max_abs_diff"]
        details[case] = {"max_abs_change_from_initial": r["max_abs_change_from_initial"],
                         "clipped_fraction": r["clipped_fraction"],
                         "server_optimizer": (r["algorithm"] or {}).get("server_optimizer"),
                         "aggregator": (r["algorithm"] or {}).get("aggregator", {}).get("name"),
                         "seconds": round(time.perf_counter() - t0, 1)}
        print(f"{case:15s} max |phones - TFF| {r['max_abs_diff']:.3g}  (models moved up to "
              f"{r['max_abs_change_from_initial']:.3g}; clipped {r['clipped_fraction']:.0%} of updates; "
              f"{details[case]['seconds']} s)", flush=True)
    ok = all(v <= TOLERANCE for v in diffs.values())
    line = {"benchmark": "parity", "preset": args.preset, "rounds": args.rounds, "tolerance": TOLERANCE,
            "max_abs_diff": diffs, "cases": details, "ok": ok}
    print(json.dumps(line))
    return line


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
