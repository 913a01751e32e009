"""benchmarks/_datasets.py: which corpus a --datasets name points at, and the --small recipe."""

from __future__ import annotations

import pytest

from benchmarks._datasets import dataset_config, dataset_label, run_config
from configs.presets import preset


def test_jsonl_dataset_points_at_any_corpus(tmp_path):
    corpus = tmp_path / "my_chats.jsonl.gz"
    corpus.write_bytes(b"")
    base = preset("tiny")
    cfg = dataset_config(f"jsonl:{corpus}", base)
    assert cfg.data.source == f"jsonl:{corpus}" and cfg.data.min_messages == base.data.min_messages
    assert cfg.model == base.model and cfg.train == base.train
    assert dataset_label(f"jsonl:{corpus}") == "my_chats" and dataset_label("default") == "default"
    assert dataset_config("default", base) is base


def test_unknown_or_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="expected default, shakespeare, irc or jsonl:PATH"):
        dataset_config("nope", preset("tiny"))
    with pytest.raises(FileNotFoundError, match="not found"):
        dataset_config(f"jsonl:{tmp_path / 'missing.jsonl'}", preset("tiny"))


def test_small_then_overrides():
    cfg = run_config("default", ["train.rounds=9"], small=True)
    assert cfg.train.rounds == 9 and cfg.train.clients_per_round == 5 and cfg.data.max_users == 80
    assert run_config("default") == preset("default") != run_config("default", small=True)
