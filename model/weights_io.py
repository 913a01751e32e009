"""Model weights on disk: one .npz whose keys are `model.nwp.weight_names`, in canonical order.

The canonical order is `model.trainable_weights` (docs/architecture.md); the names carry a
three-digit index (`w000_embedding_embeddings`, ...), so the order survives any tool that
sorts keys, and `np.savez` also keeps it as the order of the archive members.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np


def save_weights(path: str, names: Sequence[str], arrays: Sequence[np.ndarray]) -> str:
    """Write `arrays` to `path` (.npz) under `names`, in order; return the path.

    Raises:
        ValueError: lengths differ, a name repeats, or an array is not finite.
    """
    if len(names) != len(arrays):
        raise ValueError(f"got {len(names)} names but {len(arrays)} arrays")
    if len(set(names)) != len(names):
        raise ValueError(f"weight names must be unique, got {list(names)}")
    for name, a in zip(names, arrays):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"weight {name!r} holds non-finite values")
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez(tmp, **{n: np.asarray(a, dtype=np.float32) for n, a in zip(names, arrays)})
    os.replace(tmp, path)  # a reader never sees a half-written file
    return path


def load_weights(path: str) -> tuple[list[str], list[np.ndarray]]:
    """Read a .npz written by `save_weights`: (names, float32 arrays) in canonical order."""
    with np.load(path) as z:
        names = list(z.files)
        if all(len(n) > 4 and n[0] == "w" and n[1:4].isdigit() for n in names):
            names.sort(key=lambda n: int(n[1:4]))
        arrays = [np.asarray(z[n], dtype=np.float32) for n in names]
    return names, arrays


def save_model_weights(path: str, model, arrays: Sequence[np.ndarray] | None = None) -> str:
    """Save `arrays` (default: the model's current trainable weights) named after `model`."""
    from model.nwp import weight_names  # TensorFlow only when a Keras model is involved

    if arrays is None:
        arrays = [v.numpy() for v in model.trainable_weights]
    return save_weights(path, weight_names(model), arrays)


def check_shapes(model, arrays: Sequence[np.ndarray]) -> None:
    """Raise ValueError unless `arrays` match `model.trainable_weights` one to one."""
    expected = [tuple(v.shape) for v in model.trainable_weights]
    got = [tuple(np.shape(a)) for a in arrays]
    if expected != got:
        raise ValueError(f"weights do not fit the model: expected shapes {expected}, got {got}")
