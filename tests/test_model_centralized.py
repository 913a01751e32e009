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


def test_validation_users_are_a_seeded_disjoint_slice():
    from model.centralized import split_validation_users

    users = [f"u{i}" for i in range(20)]
    fit, val = split_validation_users(users, 0.1, seed=3)
    assert len(val) == 2 and not set(fit) & set(val) and sorted(fit + val) == sorted(users)
    assert split_validation_users(list(reversed(users)), 0.1, seed=3) == (fit, val)
    with pytest.raises(ValueError, match="at least 2 training users"):
        split_validation_users(["only"], 0.5, seed=0)
    with pytest.raises(ValueError, match="fraction"):
        split_validation_users(users, 1.0, seed=0)


@pytest.mark.parametrize("optimizer, lr", [("sgd", 1.0), ("adam", 0.01)])
def test_converged_training_keeps_the_best_validation_epoch(tmp_path, optimizer, lr):
    import csv

    from model.centralized import train_converged
    from model.weights_io import load_weights

    base = preset("tiny")
    cfg = dataclasses.replace(base, data=dataclasses.replace(base.data, seq_len=5),
                              model=ModelConfig(embedding_dim=6, lstm_units=5),
                              train=dataclasses.replace(base.train, batch_size=4, eval_max_examples=40))
    data = FakeData(num_users=12, vocab_size=20, seq_len=5, seed=2, messages=(2, 5))
    s = train_converged(cfg, data, str(tmp_path), learning_rate=lr, max_epochs=6, patience=2, optimizer=optimizer,
                        progress=False)
    assert s["optimizer"] == optimizer
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert len(rows) == s["epochs_run"] <= 6
    assert s["val_top1_by_epoch"] == [float(r["val_top1"]) for r in rows]
    elapsed = [float(r["seconds"]) for r in rows]
    assert elapsed == sorted(elapsed) and elapsed[-1] <= s["seconds"]
    score = [(float(r["val_top1"]), -float(r["val_perplexity"])) for r in rows]
    assert s["best_epoch"] == 1 + max(range(len(rows)), key=score.__getitem__)
    lrs = [float(r["learning_rate"]) for r in rows]
    best = [max(score[:i + 1]) for i in range(len(score))]
    for i in range(1, len(rows) - 1):  # halved exactly after an epoch with no validation gain
        assert lrs[i + 1] == (lrs[i] / 2 if score[i] <= best[i - 1] else lrs[i])
    assert s["fit_users"] + s["validation_users"] == len(data.users("train"))
    assert 0 <= s["final_eval"]["top1"] <= 1 and math.isfinite(s["final_eval"]["perplexity"])
    # The saved weights are the best epoch's, the ones scored on the held-out users.
    from model.evaluate import evaluate
    from model.nwp import build_model

    _, arrays = load_weights(str(tmp_path / "weights.npz"))
    hx, hy = data.pooled_examples("heldout", 5, 40)
    again = evaluate(build_model(cfg.model, 20, 5), arrays, hx, hy)
    assert again["top1"] == pytest.approx(s["final_eval"]["top1"]) and again["perplexity"] == pytest.approx(
        s["final_eval"]["perplexity"], rel=1e-5)


def test_converged_training_refuses_an_unknown_optimizer(tmp_path):
    from model.centralized import train_converged

    with pytest.raises(ValueError, match="optimizer must be one of"):
        train_converged(preset("tiny"), FakeData(), str(tmp_path), optimizer="rmsprop", progress=False)
