"""Shared fixtures: paths to the real corpora (skipped cleanly when ../shared is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPORA = REPO.parent / "shared" / "corpora"


def corpus_path(name: str) -> Path:
    """The gzip JSONL of a shared corpus, or skip the test when it is not beside the repo."""
    path = CORPORA / name / f"{name}.jsonl.gz"
    if not path.exists():
        pytest.skip(f"shared corpus {name} not found at {path}")
    return path
