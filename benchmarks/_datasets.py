"""Shared by the accuracy benchmarks (not a benchmark itself; `make bench` skips `_*.py`).

The data sets they run on (the simulator's `default` population and the Shakespeare corpus in
../shared/corpora, one user per speaking role), prepared once per folder, and the KN-trigram
baseline scored on them. A prepared folder is reused when its data config matches (delete it
after changing the simulator's code: the config cannot tell).
"""

from __future__ import annotations

import dataclasses
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAKESPEARE = os.path.join(os.path.dirname(REPO), "shared", "corpora", "shakespeare_gutenberg",
                           "shakespeare_gutenberg.jsonl.gz")


def dataset_config(name: str, base):
    """`base` (a RunConfig) pointed at the data set `name`: "default" or "shakespeare"."""
    if name == "default":
        return base
    if name == "shakespeare":
        if not os.path.exists(SHAKESPEARE):
            raise FileNotFoundError(f"Shakespeare corpus not found at {SHAKESPEARE}")
        return dataclasses.replace(base, data=dataclasses.replace(base.data, source=f"jsonl:{SHAKESPEARE}",
                                                                  min_messages=5))
    raise ValueError(f"unknown dataset {name!r}; expected default or shakespeare")


def prepared(cfg, data_dir: str):
    """`data.dataset.FederatedData` for cfg.data in `data_dir`, preparing it unless already there.

    Raises:
        ValueError: `data_dir` holds data prepared with another data config.
    """
    from data.dataset import FederatedData
    from data.prepare import prepare

    if not os.path.exists(os.path.join(data_dir, "summary.json")):
        prepare(cfg.data, data_dir, progress=False)
    data = FederatedData(data_dir)
    if data.config != cfg.data:
        raise ValueError(f"{data_dir} was prepared with {data.config}, not {cfg.data}: delete it or pass "
                         f"another output folder")
    return data


def trigram_scores(cfg, data) -> dict:
    """The interpolated KN trigram fit on every training user's text, scored on held-out windows."""
    from data.ngram import KneserNeyTrigram, score
    from model.metrics import NextWordAccumulator

    tri = KneserNeyTrigram(data.tokenizer.vocab_size).fit(
        [toks for u in data.users("train") for toks in data.tokens(u)])
    ex, ey = data.pooled_examples("heldout", cfg.data.seq_len, cfg.train.eval_max_examples)
    return score(tri, ex, ey, NextWordAccumulator(ks=(1, 3)))
