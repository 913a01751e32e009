"""A model update as one flat vector and back, inside TFF computations (the robust rules of
federated/robust.py and the ring of federated/secure_sum.py work on the flat vector)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff


def unflatten(flat: tf.Tensor, shapes: Sequence[Sequence[int]], dtypes: Sequence[Any], value_type: Any) -> Any:
    """`flat` cut into tensors of `shapes`, cast to `dtypes`, in the value's own containers (a list
    of weights): TFF checks a computation's result type against them."""
    parts, at = [], 0
    for shape, dtype in zip(shapes, dtypes):
        size = int(np.prod(shape))
        parts.append(tf.cast(tf.reshape(flat[at:at + size], shape), dtype))
        at += size
    return tff.types.type_to_py_container(tff.structure.pack_sequence_as(value_type, parts), value_type)
