"""User-disjoint, deterministic splits; proxy users never train."""

from __future__ import annotations

import pytest

from data.splits import check_disjoint, read_splits, split_counts, split_users, write_splits

USERS = [f"u{i:03d}" for i in range(100)]


def test_disjoint_and_complete():
    s = split_users(USERS, seed=0, heldout_fraction=0.1, proxy_fraction=0.2)
    assert (len(s["train"]), len(s["heldout"]), len(s["proxy"])) == (70, 10, 20)
    assert sorted(s["train"] + s["heldout"] + s["proxy"]) == USERS
    assert not set(s["proxy"]) & set(s["train"])
    assert not set(s["heldout"]) & set(s["train"])
    assert not set(s["heldout"]) & set(s["proxy"])


def test_deterministic_and_order_free():
    a = split_users(USERS, 3, 0.1, 0.1)
    assert a == split_users(list(reversed(USERS)), 3, 0.1, 0.1)
    assert a != split_users(USERS, 4, 0.1, 0.1)


def test_counts_small_population():
    assert split_counts(3, 0.1, 0.1) == (1, 1, 1)
    assert split_counts(10, 0.0, 0.1) == (9, 0, 1)
    with pytest.raises(ValueError, match="at least 3 users"):
        split_counts(2, 0.1, 0.1)
    with pytest.raises(ValueError, match="< 1"):
        split_counts(10, 0.5, 0.5)


def test_duplicates_rejected():
    with pytest.raises(ValueError, match="distinct"):
        split_users(["a", "a", "b", "c"], 0, 0.1, 0.1)


def test_check_disjoint_names_user(tmp_path):
    with pytest.raises(ValueError, match="'x' is in both 'train' and 'proxy'"):
        check_disjoint({"train": ["x"], "heldout": [], "proxy": ["x"]})
    s = split_users(USERS, 0, 0.1, 0.1)
    write_splits(s, str(tmp_path / "splits.json"))
    assert read_splits(str(tmp_path / "splits.json")) == s
