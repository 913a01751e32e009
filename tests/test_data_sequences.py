"""Windows, (x, y) and batching, checked against hand-written arrays."""

from __future__ import annotations

import numpy as np
import pytest

from data.sequences import batches, examples, make_windows, split_xy, spread_indices


def test_windows_overlap_by_one_and_pad():
    # BOS=2 a=10 b=11 c=12 d=13 e=14 EOS=3, seq_len 4
    w = make_windows([[2, 10, 11, 12, 13, 14, 3]], 4)
    np.testing.assert_array_equal(w, [[2, 10, 11, 12, 13], [13, 14, 3, 0, 0]])
    x, y = split_xy(w)
    np.testing.assert_array_equal(x, [[2, 10, 11, 12], [13, 14, 3, 0]])
    np.testing.assert_array_equal(y, [[10, 11, 12, 13], [14, 3, 0, 0]])
    assert x.dtype == np.int32 and y.dtype == np.int32


def test_every_target_once_and_messages_not_joined():
    msgs = [[2, 10, 3], [2, 11, 12, 3], [2], []]
    w = make_windows(msgs, 2)
    np.testing.assert_array_equal(w, [[2, 10, 3], [2, 11, 12], [12, 3, 0]])
    _, y = split_xy(w)
    assert int((y != 0).sum()) == sum(max(len(m) - 1, 0) for m in msgs)


def test_exact_fit_has_no_extra_window():
    np.testing.assert_array_equal(make_windows([[2, 10, 11, 3]], 3), [[2, 10, 11, 3]])


def test_examples_takes_first_n():
    msgs = [[2, i, 3] for i in range(10, 20)]
    x, y = examples(msgs, 2, max_examples=3)
    np.testing.assert_array_equal(x, [[2, 10], [2, 11], [2, 12]])
    assert examples(msgs, 2)[0].shape == (10, 2)


def test_batches_and_pad_last():
    x = np.arange(10, dtype=np.int32).reshape(5, 2) + 4
    y = x + 1
    plain = batches(x, y, 2)
    assert [b[0].shape[0] for b in plain] == [2, 2, 1]
    padded = batches(x, y, 2, pad_last=True)
    assert [b[0].shape for b in padded] == [(2, 2)] * 3
    np.testing.assert_array_equal(padded[-1][0], [[12, 13], [0, 0]])
    np.testing.assert_array_equal(padded[-1][1], [[13, 14], [0, 0]])
    np.testing.assert_array_equal(np.concatenate([b[0] for b in plain]), x)
    assert batches(x[:0], y[:0], 4, pad_last=True) == []


def test_spread_indices():
    np.testing.assert_array_equal(spread_indices(10, 4), [0, 2, 5, 7])
    np.testing.assert_array_equal(spread_indices(3, 0), [0, 1, 2])
    np.testing.assert_array_equal(spread_indices(3, 5), [0, 1, 2])


def test_bad_arguments():
    with pytest.raises(ValueError, match="seq_len"):
        make_windows([[2, 3]], 0)
    with pytest.raises(ValueError, match="batch_size"):
        batches(np.zeros((1, 2)), np.zeros((1, 2)), 0)
    with pytest.raises(ValueError, match="same shape"):
        batches(np.zeros((1, 2)), np.zeros((1, 3)), 1)
