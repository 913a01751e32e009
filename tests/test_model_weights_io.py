"""weights.npz round trip in canonical order."""

from __future__ import annotations

import numpy as np
import pytest

from model.weights_io import load_weights, save_weights


def test_round_trip_keeps_order_and_values(tmp_path):
    names = [f"w{i:03d}_t{i}" for i in range(12)]
    arrays = [np.full((i + 1, 2), i, np.float32) for i in range(12)]
    path = save_weights(str(tmp_path / "w.npz"), names, arrays)
    got_names, got = load_weights(path)
    assert got_names == names
    for a, b in zip(arrays, got):
        assert b.dtype == np.float32 and np.array_equal(a, b)


def test_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="names"):
        save_weights(str(tmp_path / "w.npz"), ["a"], [np.zeros(1), np.zeros(1)])
    with pytest.raises(ValueError, match="non-finite"):
        save_weights(str(tmp_path / "w.npz"), ["a"], [np.array([np.nan])])
