"""The one TensorFlow test of data/: client_dataset keeps order and the short last batch."""

from __future__ import annotations

import numpy as np


def test_client_dataset_order_and_shapes():
    from data.tfdata import client_dataset

    x = np.arange(10, dtype=np.int32).reshape(5, 2)
    y = x + 100
    got = [(bx.numpy(), by.numpy()) for bx, by in client_dataset(x, y, 2)]
    assert [b[0].shape for b in got] == [(2, 2), (2, 2), (1, 2)]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in got]), x)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in got]), y)
    assert got[0][0].dtype == np.int32
