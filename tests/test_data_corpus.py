"""JSONL corpus loading: filters, and malformed lines reported by line number."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from data.corpus import load_jsonl

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"


def _write(path: Path, lines: list[str], gz: bool = False) -> str:
    data = "\n".join(lines) + "\n"
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(data)
    else:
        path.write_text(data, encoding="utf-8")
    return str(path)


def _rows(pairs):
    return [json.dumps({"user": u, "text": t}) for u, t in pairs]


@pytest.mark.parametrize("gz", [False, True])
def test_groups_by_user_in_order(tmp_path, gz):
    path = _write(tmp_path / "c.jsonl", _rows([("a", "x1"), ("b", "y1"), ("a", "x2")]), gz=gz)
    got = load_jsonl(path)
    assert list(got) == ["a", "b"]
    assert got["a"] == [(0.0, "x1"), (2.0, "x2")]
    assert got["b"] == [(1.0, "y1")]


def test_filters(tmp_path):
    rows = _rows([("a", "1"), ("b", "1"), ("b", "2"), ("c", "1"), ("c", "2"), ("c", "3"), ("d", "1"), ("d", "2")])
    path = _write(tmp_path / "c.jsonl", rows)
    assert list(load_jsonl(path, min_messages=2)) == ["b", "c", "d"]
    assert list(load_jsonl(path, min_messages=2, max_users=2)) == ["b", "c"]
    capped = load_jsonl(path, max_messages_per_user=2)
    assert [t for _, t in capped["c"]] == ["1", "2"]


def test_blank_lines_skipped(tmp_path):
    path = _write(tmp_path / "c.jsonl", [_rows([("a", "x")])[0], "", "   ", _rows([("a", "y")])[0]])
    assert [t for _, t in load_jsonl(path)["a"]] == ["x", "y"]


@pytest.mark.parametrize("bad, needle", [
    ("{not json", "invalid JSON"),
    ('["a", "b"]', "JSON object"),
    ('{"user": "a"}', "'text'"),
    ('{"text": "hi"}', "'user'"),
    ('{"user": 3, "text": "hi"}', "'user'"),
    ('{"user": "a", "text": null}', "'text'"),
])
def test_malformed_line_names_line_number(tmp_path, bad, needle):
    rows = _rows([("a", "x"), ("b", "y")]) + [bad] + _rows([("c", "z")])
    path = _write(tmp_path / "c.jsonl", rows)
    with pytest.raises(ValueError, match=r"c\.jsonl:3: ") as err:
        load_jsonl(path)
    assert needle in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_jsonl(str(tmp_path / "nope.jsonl"))


def test_real_corpus_loads():
    path = CORPORA / "shakespeare_gutenberg" / "shakespeare_gutenberg.jsonl.gz"
    if not path.exists():
        pytest.skip(f"corpus not present: {path}")
    users = load_jsonl(str(path), min_messages=10)
    assert len(users) == 611  # SOURCE.md: 611 users have 10 or more messages
