"""Build a prepared data directory (DATA_DIR) from a DataConfig: the `fedkeys data` stage.

    source ──> users (filtered) ──> splits.json ──> shards/<split>/<user>.jsonl
                                          └─ proxy users only ──> spm.model, spm.vocab
    all of it ──> summary.json (users, messages, words, examples per split; heldout OOV)

Sources (`DataConfig.source`):
- `"synthetic"`: the simulator (data/simulator.py), `num_users` users generated one at a time
  and written straight to their shard, so memory does not grow with the population.
- `"jsonl:PATH"`: a gzip or plain JSONL file of `{"user", "text"}` lines (data/corpus.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any, Iterator

from tqdm import tqdm

from configs.schema import DataConfig
from data import simulator
from data.corpus import Message, load_jsonl
from data.sequences import make_windows
from data.shards import read_texts, shard_path, write_shard
from data.special_ids import EOS_ID, PAD_ID, UNK_ID
from data.splits import SPLITS, split_users, write_splits
from data.tokenizer import Tokenizer, train_tokenizer

SYNTHETIC = "synthetic"
JSONL_PREFIX = "jsonl:"


def parse_source(source: str) -> tuple[str, str]:
    """`("synthetic", "")` or `("jsonl", PATH)`.

    Raises:
        ValueError: for any other source string.
    """
    if source == SYNTHETIC:
        return SYNTHETIC, ""
    if source.startswith(JSONL_PREFIX) and len(source) > len(JSONL_PREFIX):
        return "jsonl", os.path.expanduser(source[len(JSONL_PREFIX):])
    raise ValueError(f"data source must be 'synthetic' or 'jsonl:PATH', got {source!r}")


def _synthetic_users(cfg: DataConfig) -> tuple[list[str], Any]:
    """Eligible user ids and a lazy `(user, messages)` iterator over them."""
    if cfg.num_users < 1:
        raise ValueError(f"num_users must be >= 1 for the synthetic source, got {cfg.num_users}")
    keep: list[int] = []
    for i in range(cfg.num_users):
        if simulator.num_messages(cfg.seed, i, cfg.max_messages_per_user) >= cfg.min_messages:
            keep.append(i)
            if cfg.max_users and len(keep) >= cfg.max_users:
                break

    def generate() -> Iterator[tuple[str, list[Message]]]:
        for i in keep:
            yield simulator.user_id(i), simulator.user_messages(cfg.seed, i, cfg.max_messages_per_user)

    return [simulator.user_id(i) for i in keep], generate()


def load_users(cfg: DataConfig) -> tuple[list[str], Iterator[tuple[str, list[Message]]]]:
    """The user ids a DataConfig selects and a lazy iterator of their messages, in that order."""
    kind, path = parse_source(cfg.source)
    if kind == SYNTHETIC:
        return _synthetic_users(cfg)
    corpus = load_jsonl(path, cfg.min_messages, cfg.max_users, cfg.max_messages_per_user)
    return list(corpus), iter(corpus.items())


def _split_summary(tok: Tokenizer, data_dir: str, split: str, users: list[str], seq_len: int,
                   progress: bool) -> dict[str, Any]:
    msgs = n_words = n_examples = n_targets = n_unk = 0
    for user in tqdm(users, desc=f"summary {split}", disable=not progress, leave=False):
        texts = read_texts(shard_path(data_dir, split, user))
        ids = tok.encode(texts)
        msgs += len(texts)
        n_words += sum(len(t) - 2 for t in ids)
        w = make_windows(ids, seq_len)
        n_examples += w.shape[0]
        y = w[:, 1:]
        target = (y != PAD_ID) & (y != EOS_ID)
        n_targets += int(target.sum())
        n_unk += int((y == UNK_ID).sum())
    return {"users": len(users), "messages": msgs, "words": n_words, "examples": n_examples,
            "oov_rate": n_unk / n_targets if n_targets else 0.0}


def prepare(cfg: DataConfig, out_dir: str, progress: bool = True) -> dict[str, Any]:
    """Build DATA_DIR: shards, splits.json, spm.model/.vocab, config.json, summary.json.

    Args:
        cfg: the data configuration.
        out_dir: the directory to fill (created; an existing `shards/` in it is replaced).
        progress: show tqdm bars on the long steps.

    Returns:
        The summary written to summary.json.

    Raises:
        ValueError: on a bad source, a malformed corpus line, or too few users to split.
    """
    parse_source(cfg.source)
    if cfg.seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {cfg.seq_len}")
    os.makedirs(out_dir, exist_ok=True)
    shutil.rmtree(os.path.join(out_dir, "shards"), ignore_errors=True)
    user_ids, stream = load_users(cfg)
    splits = split_users(user_ids, cfg.seed, cfg.heldout_fraction, cfg.proxy_fraction)
    where = {u: name for name in SPLITS for u in splits[name]}
    write_splits(splits, os.path.join(out_dir, "splits.json"))

    for user, messages in tqdm(stream, total=len(user_ids), desc="shards", disable=not progress):
        write_shard(shard_path(out_dir, where[user], user), user, messages)

    def proxy_texts() -> Iterator[str]:
        for user in splits["proxy"]:
            yield from read_texts(shard_path(out_dir, "proxy", user))

    tok = train_tokenizer(proxy_texts(), os.path.join(out_dir, "spm"), cfg.vocab_size)
    with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as f:
        json.dump({"data": dataclasses.asdict(cfg)}, f, indent=2, sort_keys=True)
        f.write("\n")

    summary: dict[str, Any] = {"source": cfg.source, "vocab_size": tok.vocab_size, "seq_len": cfg.seq_len}
    for name in SPLITS:
        summary[name] = _split_summary(tok, out_dir, name, splits[name], cfg.seq_len, progress)
    summary["users"] = sum(summary[n]["users"] for n in SPLITS)
    summary["messages"] = sum(summary[n]["messages"] for n in SPLITS)
    summary["words"] = sum(summary[n]["words"] for n in SPLITS)
    summary["examples"] = sum(summary[n]["examples"] for n in SPLITS)
    summary["heldout_oov_rate"] = summary["heldout"]["oov_rate"]
    with open(os.path.join(out_dir, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    return summary

