"""IID, Dirichlet and natural-id partitioners."""

from __future__ import annotations

import json

import pytest

from data.corpus import load_jsonl
from data.partition import dirichlet, iid, natural, partition_jsonl


def _all(parts):
    return sorted(i for ix in parts.values() for i in ix)


def test_iid_sizes_and_determinism():
    p = iid(10, 3, seed=0)
    assert sorted(len(v) for v in p.values()) == [3, 3, 4]
    assert _all(p) == list(range(10))
    assert p == iid(10, 3, seed=0) and p != iid(10, 3, seed=1)
    with pytest.raises(ValueError, match="2 records"):
        iid(2, 3, 0)


def test_dirichlet_covers_once_and_concentrates():
    labels = [i % 4 for i in range(400)]
    p = dirichlet(labels, 8, alpha=0.05, seed=0)
    assert _all(p) == list(range(400))
    labels_per_client = [len({labels[i] for i in ix}) for ix in p.values()]
    assert sum(labels_per_client) / len(labels_per_client) < 2.5  # small alpha: few labels each
    spread = dirichlet(labels, 8, alpha=100.0, seed=0)
    assert min(len({labels[i] for i in ix}) for ix in spread.values()) == 4
    with pytest.raises(ValueError, match="alpha"):
        dirichlet(labels, 8, alpha=0.0, seed=0)


def test_natural():
    assert natural(["x", "y", "x"]) == {"x": [0, 2], "y": [1]}
    with pytest.raises(ValueError, match="record 1"):
        natural(["x", ""])


def test_partition_jsonl_feeds_loader(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps({"text": f"t{i}", "author": f"a{i % 3}"}) for i in range(12)) + "\n")
    out = tmp_path / "out.jsonl"
    assert partition_jsonl(str(src), str(out), "natural", field="author") == {"records": 12, "clients": 3}
    users = load_jsonl(str(out))
    assert [t for _, t in users["a1"]] == ["t1", "t4", "t7", "t10"]
    assert partition_jsonl(str(src), str(out), "iid", num_clients=4)["clients"] == 4
    assert partition_jsonl(str(src), str(out), "dirichlet", field="author", num_clients=4)["records"] == 12
    with pytest.raises(ValueError, match="needs field"):
        partition_jsonl(str(src), str(out), "natural")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"txt": 1}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2"):
        partition_jsonl(str(bad), str(out), "iid", num_clients=1)
