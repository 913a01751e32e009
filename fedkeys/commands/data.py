"""Prepare per-user data: simulate or load users, split them, train the vocabulary on proxy users.

`fedkeys data --out DIR` writes per-user shards, splits.json and spm.model into DIR.
`--source jsonl:PATH` reads a gzip or plain JSONL file of {"user","text"} lines instead.
`fedkeys data stats --out DIR` streams any source and writes stats.json and a histogram of
messages per user (100,000 synthetic users never sit in memory at once).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

from fedkeys.commands.common import run_config, start, write_summary


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", nargs="?", choices=("prepare", "stats"), default="prepare",
                   help="prepare (default): shards and vocabulary; stats: population statistics")
    p.add_argument("--source", help="synthetic (default), jsonl:PATH, tff:stackoverflow or tff:shakespeare")
    p.add_argument("--cache-dir", default=os.path.join(os.path.expanduser("~"), ".cache", "fedkeys", "tff"),
                   help="tff: sources: where TFF's download is cached")
    p.add_argument("--users", type=int, help="synthetic population size; same as --set data.num_users=N")


def with_cli_data_options(cfg, args):
    changes = {}
    if args.source:
        changes["source"] = args.source
    if args.users:
        changes["num_users"] = args.users
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **changes)) if changes else cfg


def resolve_tff_source(cfg, args):
    """A tff:NAME source becomes the JSONL that federated.datasets writes from TFF's loader."""
    if not cfg.data.source.startswith("tff:"):
        return cfg
    from federated.datasets import export_tff_source

    name = cfg.data.source.split(":", 1)[1]
    path = export_tff_source(name, args.cache_dir, os.path.join(args.out, f"tff_{name}.jsonl.gz"), cfg.data.max_users)
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, source=f"jsonl:{path}"))


def run(args: argparse.Namespace) -> int:
    cfg = resolve_tff_source(with_cli_data_options(run_config(args), args), args)
    start(args, cfg)
    if args.action == "stats":
        from data.stats import data_stats

        stats = data_stats(cfg.data, args.out)
        write_summary(args.out, {"stage": "data stats", **stats})
        print(json.dumps(stats, indent=2, default=float))
        return 0
    from data.prepare import prepare

    summary = prepare(cfg.data, args.out)
    write_summary(args.out, {"stage": "data", **summary})
    splits = {k: summary[k]["users"] for k in ("train", "heldout", "proxy") if isinstance(summary.get(k), dict)}
    print(f"data: {summary.get('users')} users ({', '.join(f'{k} {v}' for k, v in splits.items())}), "
          f"{summary.get('messages')} messages -> {args.out}")
    return 0
