"""The centralized baseline processes exactly the matched number of examples and is scored like FL."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from configs.presets import preset
from configs.schema import ModelConfig
from tests.test_federated_fakes import FakeData

pytest.importorskip("tensorflow")


def test_centralized_matches_budget_and_writes_run(tmp_path):
    from model.centralized import matched_examples, pooled_training_examples, train_centralized

    base = preset("tiny")
    cfg = dataclasses.replace(base, data=dataclasses.replace(base.data, seq_len=5),
                              model=ModelConfig(embedding_dim=6, lstm_units=5),
                              train=dataclasses.replace(base.train, rounds=3, clients_per_round=2, batch_size=4,
                                                        max_examples_per_client=5, eval_max_examples=40))
    data = FakeData(num_users=6, vocab_size=20, seq_len=5, seed=2, messages=(2, 5))
    x, _, counts = pooled_training_examples(cfg, data)
    assert x.shape[0] == sum(counts.values()) and max(counts.values()) <= 5
    assert matched_examples(cfg, counts) == round(3 * 2 * sum(counts.values()) / len(counts))
    s = train_centralized(cfg, data, str(tmp_path), examples=37, evals=2, progress=False)
    assert s["examples_processed"] == 37 and s["steps"] == 10  # ceil(37 / 4), last batch of 1
    assert 0 <= s["final_eval"]["top1"] <= 1 and math.isfinite(s["final_eval"]["perplexity"])
    assert json.loads((tmp_path / "summary.json").read_text())["examples_processed"] == 37
    assert (tmp_path / "weights.npz").exists() and (tmp_path / "config.json").exists()
    assert len((tmp_path / "metrics.csv").read_text().strip().splitlines()) == 3  # header + 2 evals
