"""Corpus statistics: JS divergence by hand, and a small end-to-end run."""

from __future__ import annotations

import json
import os
from collections import Counter

import pytest

from configs.schema import DataConfig
from data.stats import data_stats, js_divergence, top_words


def test_js_hand_computed():
    # P=(1,0), Q=(.5,.5), M=(.75,.25): JS = (log2(4/3) + .5 log2(2/3) + .5) / 2 = 0.3112781
    assert js_divergence(Counter(a=1), Counter(a=1, b=1), 2) == pytest.approx(0.3112781, abs=1e-6)
    assert js_divergence(Counter(a=2, b=2), Counter(a=5, b=5), 10) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="missing"):
        js_divergence(Counter(z=1), Counter(a=1), 1)


def test_top_words_tie_break():
    assert top_words(Counter(b=2, a=2, c=1), 2) == {"a", "b"}


def test_stats_on_jsonl(tmp_path):
    rows = []
    for u in range(10):
        for m in range(u + 1):  # user u has u+1 messages
            rows.append({"user": f"u{u}", "text": f"hello there friend {'abcdefghij'[u] * 2}"})  # a word per user
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    s = data_stats(DataConfig(source=f"jsonl:{path}", vocab_size=7), out_dir=str(tmp_path / "out"), progress=False)
    assert s["users"] == 10 and s["messages"] == 55 and s["words"] == 220
    assert s["messages_per_user"]["p50"] == 5.5 and s["messages_per_user"]["max"] == 10
    assert s["words_per_message"]["mean"] == 4.0
    assert 0.0 <= s["heldout_oov_rate"] <= 1.0
    assert 0.0 < s["js_divergence_mean"] < 1.0
    assert os.path.getsize(tmp_path / "out" / "messages_per_user.png") > 1000
    assert json.load(open(tmp_path / "out" / "stats.json"))["users"] == 10


def test_stats_synthetic_small():
    s = data_stats(DataConfig(num_users=30), progress=False)
    assert s["users"] == 30 and s["words"] > 0
