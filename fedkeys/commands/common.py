"""What every subcommand shares: resolving the config, writing config.json and summary.json."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from typing import Any

from configs import RunConfig, apply_overrides, read_config, resolve, write_config


def run_config(args: argparse.Namespace) -> RunConfig:
    """The preset named by --preset with the --set overrides applied."""
    return resolve(args.preset, args.overrides)


def stage_config(args: argparse.Namespace, input_dir: str, whole: bool = True) -> RunConfig:
    """The config an earlier stage's output directory was made with, plus --set overrides.

    With whole=False only its data section is kept and the rest comes from --preset (`train`
    reads a data directory but chooses its own model and training settings).
    """
    if not os.path.exists(os.path.join(input_dir, "config.json")):
        raise FileNotFoundError(f"{input_dir} has no config.json: pass the output directory of an earlier fedkeys stage")
    earlier = read_config(input_dir)
    if whole:
        return apply_overrides(earlier, args.overrides)
    return apply_overrides(dataclasses.replace(resolve(args.preset), data=earlier.data), args.overrides)


def write_summary(out_dir: str, summary: dict[str, Any]) -> str:
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "summary.json")
    with open(path, "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True, default=float)
        f.write("\n")
    return path


def read_summary(run_dir: str) -> dict[str, Any]:
    path = os.path.join(run_dir, "summary.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{run_dir} has no summary.json: is it the output of an earlier fedkeys stage?")
    with open(path) as f:
        return json.load(f)


def start(args: argparse.Namespace, cfg: RunConfig) -> None:
    write_config(cfg, args.out)


def table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    """A plain-text table (the demo's summary)."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(header), line(tuple("-" * w for w in widths)), *map(line, rows)])
