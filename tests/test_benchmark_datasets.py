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


def test_trigram_on_validation_users_counts_only_the_fit_users():
    from benchmarks._datasets import trigram_scores
    from data.ngram import KneserNeyTrigram, score
    from model.centralized import pool_users
    from model.metrics import NextWordAccumulator
    from tests.test_federated_fakes import FakeData

    data = FakeData(num_users=12, vocab_size=30, seq_len=5, seed=4)
    fit, val = data.users("train")[:9], data.users("train")[9:]
    windows = pool_users(data, val, 5)
    got = trigram_scores(preset("tiny"), data, fit_users=fit, windows=windows)
    by_hand = KneserNeyTrigram(30).fit([t for u in fit for t in data.tokens(u)])
    assert got == score(by_hand, *windows, NextWordAccumulator(ks=(1, 3)))
    # Counting the validation users' own text as well (what it must not do) scores differently.
    seen = trigram_scores(preset("tiny"), data, windows=windows)
    assert seen["top1"] > got["top1"]
