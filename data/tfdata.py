"""`(x, y)` arrays as a tf.data pipeline: the only TensorFlow import in data/.

No shuffle: TFF clients and the TFLite phones must see the same batches in the same order,
so a parity check between them compares like with like. Shuffling, if wanted, belongs to
the caller (on the arrays, with its own seed).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from data.sequences import check_batching


def client_dataset(x: np.ndarray, y: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """Batches of one client's examples, in order, the last one possibly short.

    Args:
        x: int32 `[N, seq_len]` inputs.
        y: int32 `[N, seq_len]` targets.
        batch_size: rows per batch.

    Returns:
        A dataset of `(x, y)` int32 batches.

    Raises:
        ValueError: if the shapes differ or batch_size < 1.
    """
    check_batching(x, y, batch_size)
    ds = tf.data.Dataset.from_tensor_slices((x.astype(np.int32), y.astype(np.int32)))
    return ds.batch(batch_size)
