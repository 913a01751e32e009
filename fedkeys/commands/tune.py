"""Search the federated recipe for your own data on validation users; write the best as a preset.

`fedkeys tune --data DATA_DIR --out TUNE_DIR` holds back a seeded share of the **training**
users as validation users (`--validation-fraction`, default 0.1; the held-out users are never
read), then runs a sequential grid search: starting from `--preset` (with `--set` overrides),
it tries each lever's values in turn, one short federated run (TFF) per value on the remaining
training users, scores each on the validation users (top-1, ties broken by perplexity; a run
whose perplexity is not finite has diverged and scores lowest), keeps the best value and moves
on to the next lever. The built-in grid, in search order:

    client-lr          client SGD step 0.5 unclipped | 1.0 | 2.0, each step's gradient
                       clipped to norm 1 (unclipped, 1.0 diverged on real chat text)
    server-optimizer   fedavgm (Nesterov 0.9, server lr 1.0) | fedadam (server lr 0.01)
                       | fedyogi (server lr 0.01)                      Reddi et al. 2021
    local-epochs       1 | 2 | 3
    clients-per-round  10 | 20

(values equal to the current recipe's are not re-run: at most 8 runs of `train.rounds` each,
`--rounds N` to shorten them). `--grid` (repeatable) replaces the built-in grid with the levers
it names, in its order: a built-in lever's name, or `FIELD=V1,V2,...` for any config field,
e.g. `--grid client-lr --grid train.max_examples_per_client=128,256 --grid model.cell=lstm,cifg`
(data fields other than the split and vocabulary ones need another `fedkeys data` run instead).

Writes TUNE_DIR/trials.csv (one row per run), TUNE_DIR/trials/NN/ (each run), and
TUNE_DIR/preset.json: the best recipe with the data directory's data config, which every
`--preset` accepts: `fedkeys train --data DATA_DIR --preset TUNE_DIR/preset.json --out RUN`.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import time
from typing import Any, Sequence

import numpy as np

from fedkeys.commands.common import stage_config, start, write_summary

Lever = tuple[str, list[tuple[str, ...]]]  # (name, candidate override lists)

GRID: list[Lever] = [
    ("client-lr", [("train.client_learning_rate=0.5", "train.client_grad_clip=0"),
                   ("train.client_learning_rate=1.0", "train.client_grad_clip=1.0"),
                   ("train.client_learning_rate=2.0", "train.client_grad_clip=1.0")]),
    ("server-optimizer", [("train.algorithm=fedavgm", "train.server_learning_rate=1.0"),
                          ("train.algorithm=fedadam", "train.server_learning_rate=0.01"),
                          ("train.algorithm=fedyogi", "train.server_learning_rate=0.01")]),
    ("local-epochs", [("train.local_epochs=1",), ("train.local_epochs=2",), ("train.local_epochs=3",)]),
    ("clients-per-round", [("train.clients_per_round=10",), ("train.clients_per_round=20",)]),
]
FIXED_DATA_FIELDS = {"source", "seed", "num_users", "max_users", "min_messages", "max_messages_per_user",
                     "heldout_fraction", "proxy_fraction", "vocab_size"}  # set by the data directory


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="a directory made by `fedkeys data`")
    p.add_argument("--rounds", type=int, help="rounds of each trial run (default: the preset's train.rounds)")
    p.add_argument("--validation-fraction", type=float, default=0.1,
                   help="share of the training users held back to score the trials")
    p.add_argument("--grid", action="append", default=[], metavar="LEVER|FIELD=V1,V2,...",
                   help=f"a lever to search: one of {', '.join(n for n, _ in GRID)}, or e.g. "
                        f"train.local_epochs=1,2 (repeatable; replaces the built-in grid)")


def parse_grid(items: Sequence[str]) -> list[Lever]:
    """Built-in lever names and `FIELD=V1,V2,...` items as levers; the built-in GRID when none.

    Raises:
        ValueError: an unknown lever name, a field that is not SECTION.FIELD, or no values.
    """
    if not items:
        return list(GRID)
    builtin = dict(GRID)
    levers = []
    for item in items:
        if item in builtin:
            levers.append((item, builtin[item]))
            continue
        field, sep, values = item.partition("=")
        section, dot, name = field.partition(".")
        candidates = [v for v in values.split(",") if v]
        if not sep or not dot or not section or not name or not candidates:
            raise ValueError(f"--grid {item!r}: expected one of {', '.join(builtin)} or SECTION.FIELD=V1,V2,..., "
                             f"e.g. train.local_epochs=1,2")
        if section == "data" and name in FIXED_DATA_FIELDS:
            raise ValueError(f"--grid {item!r}: data.{name} is fixed by the data directory; "
                             f"prepare one per value with `fedkeys data` instead")
        levers.append((field, [(f"{field}={v}",) for v in candidates]))
    return levers


class ValidationSplit:
    """A prepared data set seen with some training users as the "heldout" split.

    What a trial run trains and scores on: `users("train")` are the fit users,
    `users("heldout")` the validation users (both from the data's training split). Any other
    user, the real held-out ones included, is refused, so tuning cannot select on them.
    """

    def __init__(self, data: Any, fit_users: Sequence[str], validation_users: Sequence[str]) -> None:
        self._data = data
        self.tokenizer = data.tokenizer
        self._splits = {"train": sorted(fit_users), "heldout": sorted(validation_users), "proxy": []}
        self._allowed = set(fit_users) | set(validation_users)

    def users(self, split: str) -> list[str]:
        if split not in self._splits:
            raise ValueError(f"split must be one of {list(self._splits)}, got {split!r}")
        return list(self._splits[split])

    def client_examples(self, user_id: str, seq_len: int, max_examples: int = 0) -> tuple[np.ndarray, np.ndarray]:
        if user_id not in self._allowed:
            raise ValueError(f"tuning reads only fit and validation users, got {user_id!r}")
        return self._data.client_examples(user_id, seq_len, max_examples)

    def pooled_examples(self, split: str, seq_len: int, max_examples: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """As `FederatedData.pooled_examples`, over this view's split."""
        from data.sequences import spread_indices

        pairs = [self.client_examples(u, seq_len) for u in self.users(split)]
        if not pairs:
            empty = np.zeros((0, seq_len), dtype=np.int32)
            return empty, empty.copy()
        x, y = np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])
        keep = spread_indices(x.shape[0], max_examples)
        return x[keep], y[keep]


def _score(summary: dict) -> tuple[float, float]:
    """Higher is better: validation top-1, then lower perplexity; a diverged run lowest."""
    final = summary["final_eval"]
    perplexity = float(final["perplexity"])
    if not math.isfinite(perplexity):
        return -math.inf, -math.inf
    return float(final["top1"]), -perplexity


def write_trials(out_dir: str, rows: list[dict]) -> None:
    """OUT/trials.csv, one row per trial run."""
    with open(os.path.join(out_dir, "trials.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def search(cfg, view: ValidationSplit, levers: Sequence[Lever], out_dir: str, progress: bool = True):
    """Sequential search: per lever, the best of its values given the levers already chosen.

    Returns:
        (best config, trial rows in run order).
    """
    from configs.io import apply_overrides
    from federated.training import run_federated

    rows: list[dict] = []
    seen: dict[str, dict] = {}  # config -> summary, so a value equal to the current one is not re-run
    runs = 0

    def trial(candidate, lever: str, overrides: tuple[str, ...]):
        nonlocal runs
        key = json.dumps(dataclasses.asdict(candidate), sort_keys=True)
        if key in seen:
            return seen[key]
        runs += 1
        run_dir = os.path.join(out_dir, "trials", f"{runs:02d}")
        tic = time.perf_counter()
        summary = run_federated(candidate, view, run_dir, progress=progress)
        final = summary["final_eval"]
        rows.append({"trial": runs, "lever": lever, "overrides": " ".join(overrides), "val_top1": final["top1"],
                     "val_top3": final["top3"], "val_perplexity": final["perplexity"],
                     "examples": summary["examples_processed"], "seconds": round(time.perf_counter() - tic, 1)})
        write_trials(out_dir, rows)  # after every run, so a stopped search keeps what it measured
        if progress:
            print(f"tune: trial {runs} [{lever}] {' '.join(overrides) or '(start)'}: "
                  f"validation top-1 {final['top1']:.4f}, perplexity {final['perplexity']:.1f}", flush=True)
        seen[key] = summary
        return summary

    best_cfg = cfg
    best = trial(best_cfg, "start", ())
    for lever, candidates in levers:
        for overrides in candidates:
            candidate = apply_overrides(best_cfg, overrides)
            summary = trial(candidate, lever, overrides)
            if _score(summary) > _score(best):
                best_cfg, best = candidate, summary
    return best_cfg, rows


def run(args: argparse.Namespace) -> int:
    from data.dataset import FederatedData
    from model.centralized import split_validation_users

    cfg = stage_config(args, args.data, whole=False)
    if args.rounds is not None:
        if args.rounds < 1:
            raise ValueError(f"--rounds must be >= 1, got {args.rounds}")
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, rounds=args.rounds))
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, checkpoint_every=0, tensorboard=False,
                                                             eval_every=cfg.train.rounds))
    levers = parse_grid(args.grid)
    start(args, cfg)
    data = FederatedData(args.data)
    fit, val = split_validation_users(data.users("train"), args.validation_fraction, cfg.train.seed)
    view = ValidationSplit(data, fit, val)
    best, rows = search(cfg, view, levers, args.out)
    from configs.io import to_dict

    tuned = dataclasses.replace(best, preset="tuned", train=dataclasses.replace(
        best.train, eval_every=max(1, best.train.rounds // 4), checkpoint_every=5, tensorboard=True))
    preset_path = os.path.join(args.out, "preset.json")
    with open(preset_path, "w") as f:
        json.dump(to_dict(tuned), f, indent=2, sort_keys=True)
        f.write("\n")
    top = max(rows, key=lambda r: _score({"final_eval": {"top1": r["val_top1"], "perplexity": r["val_perplexity"]}}))
    write_summary(args.out, {"stage": "tune", "data_dir": os.path.abspath(args.data), "preset": preset_path,
                             "fit_users": len(fit), "validation_users": len(val), "trials": len(rows),
                             "best": top, "levers": [name for name, _ in levers]})
    print(f"tune: best of {len(rows)} trials: trial {top['trial']} ({top['overrides'] or 'start'}), "
          f"validation top-1 {top['val_top1']:.4f}; preset written to {preset_path}")
    return 0
