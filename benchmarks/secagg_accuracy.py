"""Secure aggregation's accuracy cost through the real path: TFLite phones (`fedkeys devices`)
against the gunicorn collector, the same rounds from the same bundle with and without secure
aggregation, scored on the same held-out users.

    .venv/bin/python benchmarks/secagg_accuracy.py [--small] [--bundle runs/demo/bundle]
        [--rounds 10] [--devices 10] [--bits 20] [--out DIR]

    --small: 2 rounds of 4 phones.

Both runs are `fedkeys devices --bundle B --rounds R --devices N --concurrency N` with the
bundle's own configuration and seeds, and every phone selected in every round
(`server.goal_count=N`, `server.over_selection=1.0`), so the cohorts, the phones' data and their
local training are the same in both; the secure run adds `secagg.enabled=true secagg.bits=b`
(each update clipped to L2 `privacy.clip_norm`, as the plain phones clip, then quantized with
stochastic rounding into Z_(2^b) and summed under masks). A secure round needs every selected
phone in its stages at once, hence the concurrency of N. The two runs go side by side, each with
its own collector.

Prints both runs' top-1 after each round and ends with one JSON line
{"benchmark": "secagg_accuracy", "bits", "rounds", "devices", "plain_top1", "secure_top1",
 "top1_ratio" (secure / plain), "relative_gap" (|secure - plain| / plain), "within_1pct", ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def devices_command(bundle: str, out: str, rounds: int, devices: int, secure: dict | None) -> list[str]:
    sets = {"server.goal_count": devices, "server.over_selection": 1.0}
    if secure:
        sets.update({f"secagg.{k}": v for k, v in secure.items()})
    cmd = [sys.executable, "-m", "fedkeys.cli", "devices", "--bundle", bundle, "--out", out,
           "--rounds", str(rounds), "--devices", str(devices), "--concurrency", str(devices)]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={str(v).lower() if isinstance(v, bool) else v}"]
    return cmd


def top1_by_round(out: str) -> list[float]:
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    return [r["eval"]["top1"] for r in summary["rounds"] if r.get("eval") is not None]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", action="store_true", help="2 rounds of 4 phones")
    ap.add_argument("--bundle", default=os.path.join(ROOT, "runs", "demo", "bundle"))
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--devices", type=int, default=10)
    ap.add_argument("--bits", type=int, default=20)
    ap.add_argument("--stage-timeout", type=float, default=120.0, help="secagg.stage_timeout_s")
    ap.add_argument("--out", default=None, help="output directory (default: a temporary one, kept)")
    args = ap.parse_args(argv)
    if args.small:
        args.rounds, args.devices = 2, 4
    out = args.out or tempfile.mkdtemp(prefix="fedkeys-secagg-acc-")
    runs = {"plain": None, "secure": {"enabled": True, "bits": args.bits, "stage_timeout_s": args.stage_timeout}}
    procs, started = {}, time.monotonic()
    for name, secure in runs.items():
        os.makedirs(os.path.join(out, name), exist_ok=True)
        log = open(os.path.join(out, f"{name}.log"), "w")
        cmd = devices_command(os.path.abspath(args.bundle), os.path.join(out, name), args.rounds, args.devices, secure)
        print(f"{name}: {' '.join(cmd[1:])}", flush=True)
        procs[name] = (subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT), log)
    failed = []
    for name, (p, log) in procs.items():
        if p.wait() != 0:
            failed.append(name)
        log.close()
    if failed:
        raise SystemExit(f"{', '.join(failed)} failed: see {out}/<run>.log")
    scores = {name: top1_by_round(os.path.join(out, name)) for name in runs}
    print(f"{'round':>5s} {'plain top-1':>12s} {'secure top-1':>13s}")
    for i, (p, s) in enumerate(zip(scores["plain"], scores["secure"]), start=1):
        print(f"{i:5d} {p:12.4f} {s:13.4f}")
    plain, secure = scores["plain"][-1], scores["secure"][-1]
    gap = abs(secure - plain) / plain
    summary = {"benchmark": "secagg_accuracy", "bits": args.bits, "rounds": args.rounds, "devices": args.devices,
               "bundle": os.path.abspath(args.bundle), "plain_top1": plain, "secure_top1": secure,
               "top1_ratio": secure / plain, "relative_gap": gap, "within_1pct": bool(gap <= 0.01),
               "rounds_scored": {k: len(v) for k, v in scores.items()}, "plain_by_round": scores["plain"],
               "secure_by_round": scores["secure"], "wall_s": time.monotonic() - started, "out": out}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
