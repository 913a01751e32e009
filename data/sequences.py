"""Token lists to fixed-length training examples, and examples to batches (pure numpy).

Each message is encoded as `BOS w1 .. wn EOS` (data/tokenizer.py) and cut into windows of
`seq_len + 1` tokens that overlap by one token, so every token after BOS is a target exactly
once and no word is truncated away:

    message  [BOS a b c d e EOS], seq_len = 4
    windows  [BOS a b c d]  [d e EOS PAD PAD]
    x        [BOS a b c]    [d e EOS PAD]
    y        [a b c d]      [e EOS PAD PAD]

Windows never cross a message boundary: the model predicts each word from what was typed
before it in the same message, which is what the keyboard metric measures (model/metrics.py).
The TFF Stack Overflow baseline instead truncates each sentence to one window (Reddi et al.
2021, "Adaptive Federated Optimization", arXiv:2003.00295); fedkeys keeps the tail so that
long messages count in full.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from data.special_ids import PAD_ID

Batch = tuple[np.ndarray, np.ndarray]  # (x, y), each int32 [B, seq_len]


def make_windows(token_lists: Sequence[Sequence[int]], seq_len: int) -> np.ndarray:
    """Cut each token list into overlapping windows of `seq_len + 1` tokens, PAD-filled.

    Args:
        token_lists: one id list per message (normally `BOS .. EOS`).
        seq_len: targets per window.

    Returns:
        int32 `[N, seq_len + 1]`; lists with fewer than two tokens (no target) give no window.

    Raises:
        ValueError: if seq_len < 1.
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    width = seq_len + 1
    rows: list[Sequence[int]] = []
    for tokens in token_lists:
        n = len(tokens)
        for start in range(0, n - 1, seq_len):
            rows.append(tokens[start:start + width])
    out = np.full((len(rows), width), PAD_ID, dtype=np.int32)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out


def split_xy(windows: np.ndarray) -> Batch:
    """Inputs and targets of windows: `x = w[:, :-1]`, `y = w[:, 1:]`.

    Raises:
        ValueError: if windows is not 2-D with at least two columns.
    """
    if windows.ndim != 2 or windows.shape[1] < 2:
        raise ValueError(f"expected windows of shape [N, seq_len + 1 >= 2], got {windows.shape}")
    return (np.ascontiguousarray(windows[:, :-1], dtype=np.int32),
            np.ascontiguousarray(windows[:, 1:], dtype=np.int32))


def examples(token_lists: Sequence[Sequence[int]], seq_len: int, max_examples: int = 0) -> Batch:
    """`(x, y)` of a user's messages: the first `max_examples` windows (0 = all), in order."""
    if max_examples < 0:
        raise ValueError(f"max_examples must be >= 0, got {max_examples}")
    w = make_windows(token_lists, seq_len)
    if max_examples:
        w = w[:max_examples]
    return split_xy(w)


def spread_indices(n: int, k: int) -> np.ndarray:
    """`k` indices spread evenly over `range(n)` (all of them when k == 0 or k >= n).

    Deterministic and order-preserving, so a capped evaluation set still draws from every user
    instead of only the first few.
    """
    if n < 0 or k < 0:
        raise ValueError(f"expected n >= 0 and k >= 0, got n={n}, k={k}")
    if k == 0 or k >= n:
        return np.arange(n)
    return (np.arange(k, dtype=np.int64) * n) // k


def check_batching(x: np.ndarray, y: np.ndarray, batch_size: int) -> None:
    """Raise ValueError unless x and y are [N, T] arrays of one shape and batch_size >= 1."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"expected x and y of the same shape [N, T], got {x.shape} and {y.shape}")


def batches(x: np.ndarray, y: np.ndarray, batch_size: int, pad_last: bool = False) -> list[Batch]:
    """Consecutive batches of `(x, y)`, in order (no shuffle).

    Args:
        x: int32 `[N, T]` inputs.
        y: int32 `[N, T]` targets.
        batch_size: rows per batch.
        pad_last: pad the last short batch with all-PAD rows up to `batch_size`, for
            runtimes with a static batch dimension (the phone's TFLite `train` signature).
            All-PAD rows add no loss term (model.nwp.masked_loss), so the step is unchanged.

    Returns:
        A list of `(xb, yb)`; empty when N == 0.

    Raises:
        ValueError: if the shapes differ or batch_size < 1.
    """
    check_batching(x, y, batch_size)
    out: list[Batch] = []
    for start in range(0, x.shape[0], batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        if pad_last and xb.shape[0] < batch_size:
            fill = np.full((batch_size - xb.shape[0], x.shape[1]), PAD_ID, dtype=x.dtype)
            xb, yb = np.concatenate([xb, fill]), np.concatenate([yb, fill])
        out.append((xb, yb))
    return out
