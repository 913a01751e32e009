"""`fedkeys tune`: the grid, the validation view that keeps held-out users out, preset files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from configs.io import to_dict
from configs.presets import preset
from fedkeys.cli import main
from fedkeys.commands.tune import GRID, ValidationSplit, _score, parse_grid


class _FakeData:
    """Three training users and one held-out user, each with windows of its own id."""

    tokenizer = object()

    def __init__(self) -> None:
        self.read: list[str] = []

    def client_examples(self, user_id, seq_len, max_examples=0):
        self.read.append(user_id)
        n = {"a": 2, "b": 3, "c": 1, "h": 4}[user_id]
        x = np.full((n, seq_len), ord(user_id), np.int32)
        return x, x + 1


def test_validation_split_pools_only_its_users_and_refuses_heldout():
    data = _FakeData()
    view = ValidationSplit(data, fit_users=["b", "a"], validation_users=["c"])
    assert view.users("train") == ["a", "b"] and view.users("heldout") == ["c"] and view.users("proxy") == []
    x, y = view.pooled_examples("train", 3)
    assert x.shape == (5, 3) and list(x[:, 0]) == [97, 97, 98, 98, 98] and (y == x + 1).all()
    x, _ = view.pooled_examples("heldout", 3)
    assert x.shape == (1, 3) and x[0, 0] == ord("c")
    with pytest.raises(ValueError, match="only fit and validation users"):
        view.client_examples("h", 3)
    assert "h" not in data.read
    with pytest.raises(ValueError, match="split must be one of"):
        view.users("test")


def test_parse_grid():
    assert parse_grid([]) == GRID
    assert parse_grid(["train.local_epochs=1,3", "client-lr"]) == [
        ("train.local_epochs", [("train.local_epochs=1",), ("train.local_epochs=3",)]), GRID[0]]
    for bad in ("train.local_epochs", "local_epochs=1", "train.local_epochs=", "data.vocab_size=10,20", "lr"):
        with pytest.raises(ValueError, match="--grid"):
            parse_grid([bad])


def test_score_prefers_top1_then_perplexity_and_ranks_a_diverged_run_last():
    def run(top1, perplexity):
        return {"final_eval": {"top1": top1, "perplexity": perplexity}}

    assert _score(run(0.2, 90.0)) > _score(run(0.1, 50.0)) > _score(run(0.1, 60.0))
    assert _score(run(0.01, 1e4)) > _score(run(0.3, float("nan"))) == _score(run(0.3, float("inf")))


def test_preset_file_round_trip(tmp_path):
    cfg = preset("tiny")
    path = tmp_path / "p.json"
    path.write_text(json.dumps(to_dict(cfg)))
    assert preset(str(path)) == cfg
    (tmp_path / "bad.json").write_text(json.dumps({"train": {"nosuch": 1}}))
    with pytest.raises(ValueError, match="unknown keys"):
        preset(str(tmp_path / "bad.json"))
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(ValueError, match="expected a JSON object, got list"):
        preset(str(tmp_path / "list.json"))
    with pytest.raises(FileNotFoundError):
        preset(str(tmp_path / "missing.json"))


@pytest.mark.slow
def test_tune_tiny_writes_a_preset_that_train_accepts(tmp_path):
    data, out = str(tmp_path / "data"), str(tmp_path / "tune")
    assert main(["data", "--preset", "tiny", "--out", data]) == 0
    assert main(["tune", "--preset", "tiny", "--data", data, "--out", out, "--rounds", "2",
                 "--grid", "train.client_learning_rate=0.5,2.0"]) == 0
    with open(f"{out}/trials.csv") as f:
        rows = f.read().splitlines()
    # the start (tiny's lr is 0.5) and lr 2.0: lr 0.5 is the start again, not re-run
    assert len(rows) == 1 + 2
    summary = json.load(open(f"{out}/summary.json"))
    tuned = preset(f"{out}/preset.json")
    assert tuned.preset == "tuned" and tuned.train.rounds == 2
    train_users = json.load(open(f"{data}/splits.json"))["train"]
    assert summary["fit_users"] + summary["validation_users"] == len(train_users) and summary["validation_users"] >= 1
    best = summary["best"]["overrides"].split()
    for item in best:
        field, value = item.split("=")
        assert str(getattr(tuned.train, field.split(".")[1])) == value
    run = str(tmp_path / "run")
    assert main(["train", "--data", data, "--preset", f"{out}/preset.json", "--out", run]) == 0
    assert json.load(open(f"{run}/config.json"))["train"] == json.load(open(f"{out}/preset.json"))["train"]
