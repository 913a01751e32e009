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


def init_weights_path(run_or_weights: str) -> str:
    """The weights file of `run_or_weights`: a .npz itself, or a run directory's weights.npz.

    Raises:
        FileNotFoundError: neither exists.
    """
    path = os.path.join(run_or_weights, "weights.npz") if os.path.isdir(run_or_weights) else run_or_weights
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no weights at {run_or_weights!r} (expected a .npz or a run directory "
                                f"holding weights.npz)")
    return path


def load_init_weights(run_or_weights: str, expected_shapes: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
    """Weights to start training from (`fedkeys train --init-from`), checked against the model.

    Raises:
        FileNotFoundError: as `init_weights_path`.
        ValueError: the weights do not fit the model, naming both lists of shapes.
    """
    path = init_weights_path(run_or_weights)
    _, arrays = load_weights(path)
    got = [tuple(np.shape(a)) for a in arrays]
    expected = [tuple(s) for s in expected_shapes]
    if got != expected:
        raise ValueError(f"--init-from {path}: weights of shapes {got} do not fit the model being trained, "
                         f"whose shapes are {expected}")
    for i, a in enumerate(arrays):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"--init-from {path}: tensor {i} holds non-finite values")
    return arrays
