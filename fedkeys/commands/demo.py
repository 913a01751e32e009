"""Run the whole path: data, TFF training, TFLite export, a real server, phones, evaluation.

`fedkeys demo --preset default --out runs/demo` runs each stage exactly as its own subcommand
would (into OUT/data, OUT/train, OUT/bundle, OUT/devices) and prints one summary table.
"""

from __future__ import annotations

import argparse
import os
import time

from fedkeys.commands.common import read_summary, run_config, start, table, write_summary


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", help="synthetic (default) or jsonl:PATH")


def _stage(argv: list[str]) -> float:
    from fedkeys.cli import main

    t0 = time.monotonic()
    print(f"\n== fedkeys {' '.join(argv)}", flush=True)
    if main(argv) != 0:
        raise RuntimeError(f"stage failed: fedkeys {' '.join(argv)}")
    return time.monotonic() - t0


def run(args: argparse.Namespace) -> int:
    cfg = run_config(args)
    start(args, cfg)
    dirs = {s: os.path.join(args.out, s) for s in ("data", "train", "bundle", "devices")}
    common = ["--preset", args.preset, *[a for o in args.overrides for a in ("--set", o)]]
    source = ["--source", args.source] if args.source else []
    seconds = {
        "data": _stage(["data", *common, *source, "--out", dirs["data"]]),
        "train": _stage(["train", *common, "--data", dirs["data"], "--out", dirs["train"]]),
        "export": _stage(["export", dirs["train"], *common, "--verify", "--out", dirs["bundle"]]),
        "devices": _stage(["devices", *common, "--bundle", dirs["bundle"], "--out", dirs["devices"]]),
    }
    trained, fleet = read_summary(dirs["train"]), read_summary(dirs["devices"])
    rows = [("most-frequent-word baseline", "", f"{trained['baseline_most_frequent']['top1']:.4f}",
             f"{trained['baseline_most_frequent']['top3']:.4f}")]
    final = trained["final_eval"]
    rows.append((f"TFF FedAvg, {cfg.train.rounds} rounds", "v0", f"{final['top1']:.4f}", f"{final['top3']:.4f}"))
    for r in fleet["rounds"]:
        ev = r["eval"]
        rows.append((f"after on-device round {r['round']} ({r['accepted']} updates)", f"v{r['model_version']}",
                     f"{ev['top1']:.4f}", f"{ev['top3']:.4f}"))
    print("\n" + table(rows, ("model", "version", "top-1", "top-3")))
    print("stage seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    write_summary(args.out, {"stage": "demo", "seconds": seconds, "rows": rows,
                             "beats_baseline": final["top1"] > trained["baseline_most_frequent"]["top1"]})
    from report.html import write_report

    print(f"report: {write_report(args.out)}")
    return 0
