"""The whole path on the `tiny` preset: data, TFF, TFLite, a real gunicorn server, phones, evaluation."""

import json
import math

import pytest

from fedkeys.cli import main

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_demo_tiny_runs_every_stage(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--preset", "tiny", "--out", str(out)]) == 0

    for stage in ("data", "train", "bundle", "devices"):
        assert (out / stage / "config.json").exists(), stage
        assert (out / stage / "summary.json").exists(), stage

    train = json.loads((out / "train" / "summary.json").read_text())
    assert 0.0 <= train["final_eval"]["top1"] <= 1.0
    assert math.isfinite(train["final_eval"]["perplexity"])

    bundle = json.loads((out / "bundle" / "summary.json").read_text())
    assert bundle["verify"]["ok"] is True

    fleet = json.loads((out / "devices" / "summary.json").read_text())
    assert len(fleet["rounds"]) == 1
    first = fleet["rounds"][0]
    assert first["model_version"] == 1  # the server published the next version
    assert first["accepted"] >= 3  # the tiny preset's goal count
    assert 0.0 <= first["eval"]["top1"] <= 1.0

    demo = json.loads((out / "summary.json").read_text())
    assert set(demo["seconds"]) == {"data", "train", "export", "devices"}
