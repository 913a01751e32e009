"""What a phone runs: the trainable .tflite through its signature runners.

One `TFLiteModel` holds one interpreter and one runner per signature, built once, so a device
simulator can call `set_weights` / `train_step` / `get_weights` many times per process without
re-creating anything. The interpreter's variables persist between calls, as on a phone.

    model = TFLiteModel("bundle/trainable.tflite")
    model.set_weights(server_weights)                # canonical order (manifest "weights")
    for xb, yb in batches(x, y, model.batch_size, pad_last=True):
        loss = model.train_step(xb, yb, lr)
    delta = [a - b for a, b in zip(model.get_weights(), server_weights)]
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import tensorflow as tf

from data.special_ids import PAD_ID

PathOrBytes = str | os.PathLike | bytes


def load_interpreter(path_or_bytes: PathOrBytes, num_threads: int | None = None) -> tf.lite.Interpreter:
    """A `tf.lite.Interpreter` over a .tflite file or its bytes."""
    if isinstance(path_or_bytes, (bytes, bytearray)):
        content = bytes(path_or_bytes)
    else:
        with open(path_or_bytes, "rb") as f:
            content = f.read()
    return tf.lite.Interpreter(model_content=content, num_threads=num_threads)


class TFLiteModel:
    """The trainable model's signatures (`train`, `infer`, `get_weights`, `set_weights`,
    optionally `save`, `restore`) as numpy calls.

    Args:
        path_or_bytes: a .tflite path or its contents.
        num_threads: interpreter threads (None = TFLite's default).

    Raises:
        ValueError: if a required signature is missing.
    """

    REQUIRED = ("train", "infer", "get_weights", "set_weights")

    def __init__(self, path_or_bytes: PathOrBytes, num_threads: int | None = None) -> None:
        # The tensorflow wheel's Interpreter attaches the Flex delegate by itself when the
        # model holds Flex ops (only save/restore do in fedkeys' export).
        self._interpreter = load_interpreter(path_or_bytes, num_threads)
        signatures = self._interpreter.get_signature_list()
        missing = [s for s in self.REQUIRED if s not in signatures]
        if missing:
            raise ValueError(f"expected signatures {list(self.REQUIRED)}, missing {missing}; "
                             f"the model has {sorted(signatures)}")
        self._runners = {name: self._interpreter.get_signature_runner(name) for name in signatures}
        # Canonical order: the names are w000_..., w001_..., so sorting restores it.
        self.weight_names: list[str] = sorted(signatures["get_weights"]["outputs"])
        details = self._runners["get_weights"].get_output_details()
        self.weight_shapes: list[tuple[int, ...]] = [tuple(int(d) for d in details[n]["shape"])
                                                     for n in self.weight_names]
        x_shape = self._runners["infer"].get_input_details()["x"]["shape"]
        self.batch_size, self.seq_len = int(x_shape[0]), int(x_shape[1])
        self.signatures = sorted(signatures)

    # --- weights ----------------------------------------------------------------------------
    def get_weights(self) -> list[np.ndarray]:
        """The current weights, in canonical order (copies)."""
        out = self._runners["get_weights"]()
        return [np.array(out[n], dtype=np.float32, copy=True) for n in self.weight_names]

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        """Replace the weights with `weights` (canonical order, shapes as `weight_shapes`)."""
        if len(weights) != len(self.weight_names):
            raise ValueError(f"expected {len(self.weight_names)} weight arrays, got {len(weights)}")
        feed = {}
        for name, shape, w in zip(self.weight_names, self.weight_shapes, weights):
            w = np.asarray(w, dtype=np.float32)
            if w.shape != shape:
                raise ValueError(f"weight {name}: expected shape {shape}, got {w.shape}")
            feed[name] = w
        self._runners["set_weights"](**feed)

    # --- training and inference ---------------------------------------------------------------
    def _pad(self, a: np.ndarray, what: str) -> tuple[np.ndarray, int]:
        a = np.asarray(a, dtype=np.int32)
        if a.ndim != 2 or a.shape[1] != self.seq_len or not 1 <= a.shape[0] <= self.batch_size:
            raise ValueError(f"{what}: expected int32 [n, {self.seq_len}] with 1 <= n <= "
                             f"{self.batch_size}, got shape {a.shape}")
        n = a.shape[0]
        if n < self.batch_size:
            fill = np.full((self.batch_size - n, self.seq_len), PAD_ID, dtype=np.int32)
            a = np.concatenate([a, fill])
        return a, n

    def train_step(self, x: np.ndarray, y: np.ndarray, lr: float, clip: float = 0.0) -> float:
        """One SGD step on a batch, its gradient clipped to global norm `clip` (0: none);
        returns the batch loss before the step.

        A batch with fewer than `batch_size` rows is padded with PAD rows, which
        `masked_loss` ignores: the step equals Keras' step on the short batch.
        """
        xb, n = self._pad(x, "x")
        yb, m = self._pad(y, "y")
        if n != m:
            raise ValueError(f"x and y differ in rows: {n} vs {m}")
        out = self._runners["train"](x=xb, y=yb, lr=np.asarray(lr, dtype=np.float32),
                                     clip=np.asarray(clip, dtype=np.float32))
        return float(out["loss"])

    def train(self, x: np.ndarray, y: np.ndarray, lr: float, epochs: int = 1, clip: float = 0.0) -> list[float]:
        """`epochs` passes of consecutive batches, in order (no shuffle, as data.tfdata);
        returns the loss of each step."""
        from data.sequences import batches  # train_step pads the short last batch

        x, y = np.asarray(x, dtype=np.int32), np.asarray(y, dtype=np.int32)
        steps = batches(x, y, self.batch_size)
        return [self.train_step(xb, yb, lr, clip) for _ in range(epochs) for xb, yb in steps]

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Logits float32 [n, T, V] for n <= batch_size rows (padded internally)."""
        xb, n = self._pad(x, "x")
        return np.array(self._runners["infer"](x=xb)["logits"][:n], copy=True)

    # --- checkpoints (on-device persistence between training sessions) --------------------
    def save(self, checkpoint_path: str) -> None:
        """Write the weights to a TF checkpoint file (`save` signature, Flex op Save)."""
        self._require("save")
        self._runners["save"](checkpoint_path=np.asarray(str(checkpoint_path).encode()))

    def restore(self, checkpoint_path: str) -> None:
        """Read the weights back from `save`'s file (`restore` signature, Flex op Restore)."""
        self._require("restore")
        self._runners["restore"](checkpoint_path=np.asarray(str(checkpoint_path).encode()))

    def _require(self, name: str) -> None:
        if name not in self._runners:
            raise ValueError(f"this model has no {name!r} signature; it has {self.signatures}")
