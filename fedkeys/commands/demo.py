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


def optimizer_label(opt: dict | None) -> str:
    """'nesterov 0.9, lr 1' for a server optimizer's description (fedcore ServerAlgorithm.describe)."""
    if not opt:
        return "unknown"
    extra = f" {opt['momentum']:g}" if "momentum" in opt else ""
    schedule = "" if opt.get("schedule", "constant") == "constant" else f" {opt['schedule']}"
    return f"{opt['name']}{extra}, lr {opt['learning_rate']:g}{schedule}"


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
    tff_opt = trained["server_algorithm"]["server_optimizer"]
    device_alg = fleet.get("server_algorithm") or {}
    device_opt = device_alg.get("server_optimizer")
    ks = lambda scores: f"{scores['keystroke_savings']:.4f}" if "keystroke_savings" in scores else ""  # noqa: E731
    base = trained["baseline_most_frequent"]
    rows = [("most-frequent-word baseline", "", f"{base['top1']:.4f}", f"{base['top3']:.4f}", ks(base))]
    final = trained["final_eval"]
    rows.append((f"TFF {trained['algorithm']} ({optimizer_label(tff_opt)}), {cfg.train.rounds} rounds of "
                 f"{cfg.train.clients_per_round}", "v0", f"{final['top1']:.4f}", f"{final['top3']:.4f}", ks(final)))
    for r in fleet["rounds"]:
        ev = r["eval"]
        if ev is None:
            continue
        rows.append((f"on-device {device_alg.get('algorithm', '?')} ({optimizer_label(device_opt)}), "
                     f"{r['reports']} reports", f"v{r['model_version']}", f"{ev['top1']:.4f}", f"{ev['top3']:.4f}",
                     ks(ev)))
    print("\n" + table(rows, ("model", "version", "top-1", "top-3", "keystroke savings")))
    print("stage seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    write_summary(args.out, {"stage": "demo", "seconds": seconds, "rows": rows,
                             "server_optimizer": {"tff": tff_opt, "devices": device_opt},
                             "same_server_optimizer": tff_opt == device_opt,
                             "beats_baseline": final["top1"] > trained["baseline_most_frequent"]["top1"]})
    from report.html import write_report

    print(f"report: {write_report(args.out)}")
    return 0
