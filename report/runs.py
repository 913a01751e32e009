"""Read a fedkeys run directory into plain data the report can draw.

A run directory is either one stage's output (`fedkeys train`, `devices`, `evaluate`: a folder
with config.json and summary.json, plus metrics.csv for train) or a demo directory whose
subfolders are stages (data/, train/, bundle/, devices/; any other subfolder with a
metrics.csv, e.g. central/ or dp/, is read as one more model trained over rounds).

Everything is read defensively: formats gain fields over time, so a missing file or column
only removes what needed it, and `Run.notes` says what was left out.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Optional

Row = dict[str, float]


@dataclass
class Stage:
    """One stage's output directory."""

    name: str  # folder name relative to the run root ("." for the root itself)
    path: str
    kind: str  # summary["stage"] when present: train, devices, evaluate, export, data, demo, ...
    config: Optional[dict[str, Any]]
    summary: Optional[dict[str, Any]]
    metrics: list[Row] = field(default_factory=list)  # metrics.csv rows (train-like stages)


@dataclass
class Curve:
    """One model trained over rounds (a metrics.csv)."""

    label: str
    stage: Stage

    @property
    def rows(self) -> list[Row]:
        return self.stage.metrics

    def column(self, column: str, x: str = "round") -> tuple[list[float], list[float]]:
        """(x, y) for the rows where both are finite numbers."""
        xs, ys = [], []
        for r in self.rows:
            if _finite(r.get(x)) and _finite(r.get(column)):
                xs.append(r[x])
                ys.append(r[column])
        return xs, ys


@dataclass
class Baseline:
    """A model with no rounds (most-frequent word, n-gram): drawn as horizontal lines."""

    label: str
    scores: dict[str, float]


@dataclass
class Result:
    """One row of the final summary table."""

    model: str
    source: str  # which file the numbers come from, e.g. "train/summary.json"
    version: str
    scores: dict[str, float]


@dataclass
class Run:
    """Everything the report shows, read from one run directory."""

    root: str
    kind: str  # "demo" when the root holds stage folders, else the root stage's kind
    config: Optional[dict[str, Any]]
    stages: list[Stage]
    curves: list[Curve]
    baselines: list[Baseline]
    fleet: Optional[Stage]  # the devices stage, when there is one
    results: list[Result]
    notes: list[str]


def fleet_rounds(stage: Optional[Stage]) -> list[dict[str, Any]]:
    """The per-round records of a devices stage's summary.json (empty when there are none)."""
    rounds = (stage.summary or {}).get("rounds") if stage is not None else None
    return [r for r in rounds if isinstance(r, dict)] if isinstance(rounds, list) else []


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _number(text: str) -> Optional[float]:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def read_json(path: str) -> Optional[dict[str, Any]]:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        try:
            value = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON ({e}); is the stage still writing it?") from e
    return value if isinstance(value, dict) else None


def read_metrics_csv(path: str) -> list[Row]:
    """metrics.csv as numeric rows; empty or non-numeric cells are left out of their row."""
    if not os.path.exists(path):
        return []
    rows = []
    with open(path, newline="") as f:
        for raw in csv.DictReader(f):
            row = {k: v for k, v in ((k, _number(v)) for k, v in raw.items() if k) if v is not None}
            if row:
                rows.append(row)
    return rows


def read_stage(path: str, name: str) -> Optional[Stage]:
    """The stage at `path`, or None when it holds none of config.json, summary.json, metrics.csv."""
    config = read_json(os.path.join(path, "config.json"))
    summary = read_json(os.path.join(path, "summary.json"))
    metrics = read_metrics_csv(os.path.join(path, "metrics.csv"))
    if config is None and summary is None and not metrics:
        return None
    kind = str((summary or {}).get("stage") or "")
    if not kind:
        kind = "train" if metrics else ("devices" if isinstance((summary or {}).get("rounds"), list) else "unknown")
    return Stage(name, path, kind, config, summary, metrics)


def _curve_label(stage: Stage) -> str:
    s = stage.summary or {}
    algorithm = str(s.get("algorithm") or "")
    if "central" in f"{stage.kind} {algorithm} {stage.name}".lower():
        return "centralized"
    dp = s.get("dp") if isinstance(s.get("dp"), dict) else {}
    mode = str(dp.get("mode") or "none")
    if mode != "none" or any("epsilon" in r for r in stage.metrics):
        z = dp.get("noise_multiplier")
        return f"federated + DP ({mode}" + (f", z={z:g})" if _finite(z) else ")")
    return f"federated ({algorithm})" if algorithm else "federated"


def _baseline_label(key: str) -> str:
    key = key.removeprefix("baseline_")
    return {"most_frequent": "most-frequent word", "most_frequent_word": "most-frequent word",
            "ngram": "n-gram", "trigram": "trigram (n-gram)"}.get(
        key, key.replace("_", " "))


def _scores(value: Any) -> Optional[dict[str, float]]:
    if isinstance(value, dict) and _finite(value.get("top1")):
        return {k: float(v) for k, v in value.items() if _finite(v)}
    return None


def _baselines(stage: Stage) -> list[Baseline]:
    s = stage.summary or {}
    found = [(k, _scores(v)) for k, v in s.items() if k.startswith("baseline")]
    scores = s.get("scores") if isinstance(s.get("scores"), dict) else {}  # `fedkeys evaluate`
    found += [(k, _scores(v)) for k, v in scores.items() if k != "model"]
    return [Baseline(_baseline_label(k), v) for k, v in found if v is not None]


def _final_scores(stage: Stage) -> Optional[dict[str, float]]:
    final = _scores((stage.summary or {}).get("final_eval"))
    if final is None:
        final = next((_scores(r) for r in reversed(stage.metrics) if _finite(r.get("top1"))), None)
    return final


def load_run(run_dir: str) -> Run:
    """Read `run_dir` (a demo directory or a single stage's output directory)."""
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"{run_dir} is not a directory: pass the --out of a fedkeys run")
    root = read_stage(run_dir, ".")
    subs = [st for name in sorted(os.listdir(run_dir)) if os.path.isdir(os.path.join(run_dir, name))
            for st in [read_stage(os.path.join(run_dir, name), name)] if st is not None]
    if root is None and not subs:
        raise FileNotFoundError(f"{run_dir} has no config.json, summary.json or metrics.csv, nor any stage "
                                "folder that does: pass the --out of a fedkeys run")
    stages = ([root] if root is not None else []) + subs
    notes: list[str] = []

    train_like = [st for st in stages if st.metrics]
    train_like.sort(key=lambda st: (st.name != "train", st.name))  # the demo's own train/ first
    curves = [Curve(_curve_label(st), st) for st in train_like]
    counts: dict[str, int] = {}
    for c in curves:
        counts[c.label] = counts.get(c.label, 0) + 1
    for c in curves:
        if counts[c.label] > 1:
            c.label = f"{c.label} [{c.stage.name}]"

    baselines: list[Baseline] = []
    for st in stages:
        for b in _baselines(st):
            if b.label not in {x.label for x in baselines}:
                baselines.append(b)

    fleet = next((st for st in stages if st.kind == "devices"), None)
    results: list[Result] = []
    for b in baselines:
        results.append(Result(b.label, "baseline", "", b.scores))
    for c in curves:
        final = _final_scores(c.stage)
        rounds = len(c.rows)
        if final is not None:
            where = "summary.json" if _scores((c.stage.summary or {}).get("final_eval")) else "metrics.csv"
            results.append(Result(f"{c.label}, {rounds} rounds", _rel(c.stage, where), "v0" if c.stage.name == "train"
                                  else "", final))
        else:
            notes.append(f"{_rel(c.stage, 'metrics.csv')} has no evaluation (top1) yet")
    for st in stages:
        model = _scores(((st.summary or {}).get("scores") or {}).get("model")) if st.kind == "evaluate" else None
        if model is not None:
            results.append(Result(f"evaluated weights [{st.name}]", _rel(st, "summary.json"), "", model))
    if fleet is not None:
        for r in fleet_rounds(fleet):
            ev = _scores(r.get("eval"))
            if ev is not None:
                reports = r.get("reports", r.get("accepted", "?"))
                results.append(Result(f"on-device round {r.get('round', '?')} ({reports} reports)",
                                      _rel(fleet, "summary.json"), f"v{r.get('model_version', '?')}", ev))

    config = None
    for st in stages:  # the root's config.json, else the first stage's
        if st.config is not None:
            config = st.config
            break
    if config is None:
        notes.append("no config.json found")
    kind = "demo" if subs else (root.kind if root else "unknown")
    return Run(run_dir, kind, config, stages, curves, baselines, fleet, results, notes)


def _rel(stage: Stage, filename: str) -> str:
    return filename if stage.name == "." else f"{stage.name}/{filename}"
