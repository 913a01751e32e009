"""prepare() end to end on a small population and on a JSONL file; FederatedData reads it."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from configs.schema import DataConfig
from data.dataset import FederatedData
from data.prepare import parse_source, prepare
from data.shards import read_shard, user_filename
from data.special_ids import BOS_ID, PAD_ID

SMALL = DataConfig(num_users=40, vocab_size=200, seq_len=8, max_messages_per_user=30)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("data"))
    return out, prepare(SMALL, out, progress=False)


def test_layout_and_summary(prepared):
    out, summary = prepared
    for name in ("splits.json", "spm.model", "spm.vocab", "config.json", "summary.json"):
        assert os.path.exists(os.path.join(out, name)), name
    splits = json.load(open(os.path.join(out, "splits.json")))
    assert summary["users"] == 40
    assert {k: summary[k]["users"] for k in splits} == {k: len(v) for k, v in splits.items()}
    assert not set(splits["proxy"]) & set(splits["train"])
    for split, users in splits.items():
        assert sorted(os.listdir(os.path.join(out, "shards", split))) == sorted(user_filename(u) for u in users)
    assert summary["messages"] == sum(summary[s]["messages"] for s in splits)


def test_deterministic(prepared, tmp_path):
    out, summary = prepared
    again = prepare(SMALL, str(tmp_path), progress=False)
    assert again == summary
    u = json.load(open(os.path.join(out, "splits.json")))["train"][0]
    assert read_shard(os.path.join(out, "shards", "train", u + ".jsonl")) == \
        read_shard(os.path.join(tmp_path, "shards", "train", u + ".jsonl"))


def test_federated_data(prepared):
    out, summary = prepared
    fd = FederatedData(out)
    assert fd.config == SMALL
    user = fd.users("train")[0]
    assert len(fd.messages(user)) <= 30
    x, y = fd.client_examples(user, 8)
    assert x.dtype == np.int32 and x.shape == y.shape and x.shape[1] == 8
    assert x[0, 0] == BOS_ID
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
    x3, _ = fd.client_examples(user, 8, max_examples=3)
    np.testing.assert_array_equal(x3, x[:3])
    px, py = fd.pooled_examples("heldout", 8)
    assert px.shape[0] == summary["heldout"]["examples"]
    cx, _ = fd.pooled_examples("heldout", 8, max_examples=5)
    assert cx.shape == (5, 8)
    assert (py == PAD_ID).any()
    with pytest.raises(ValueError, match="split must be one of"):
        fd.users("test")
    with pytest.raises(ValueError, match="unknown user"):
        fd.messages("nobody")


def test_jsonl_source(tmp_path):
    rows = [{"user": f"nick|{i % 9}", "text": f"hello number {i} from user {i % 9}!"} for i in range(90)]
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cfg = DataConfig(source=f"jsonl:{path}", vocab_size=50, seq_len=5, min_messages=2)
    summary = prepare(cfg, str(tmp_path / "out"), progress=False)
    assert summary["users"] == 9 and summary["messages"] == 90
    fd = FederatedData(str(tmp_path / "out"))
    assert fd.messages("nick|0")[0] == "hello number 0 from user 0!"


def test_bad_source():
    with pytest.raises(ValueError, match="'synthetic' or 'jsonl:PATH', got 'tff:x'"):
        parse_source("tff:x")
