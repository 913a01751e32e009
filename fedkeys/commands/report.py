"""Write one self-contained HTML report (plots inlined) of a run's outputs.

`fedkeys report RUN_DIR` reads a demo directory (data/, train/, bundle/, devices/) or one
`train`, `devices` or `evaluate` output directory and writes RUN_DIR/report.html (or --out FILE):
top-1/top-3, perplexity and epsilon against rounds beside the baselines, clients per round,
phones and bytes per on-device round, the final summaries and the resolved config.
It reads only config.json, summary.json and metrics.csv, and writes nothing else.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="the --out of `fedkeys demo`, `train`, `devices` or `evaluate`")


def run(args: argparse.Namespace) -> int:
    from report.html import write_report

    print(write_report(args.run_dir, args.out))
    return 0
