"""The trainable phone model: a `tf.Module` whose tf.function signatures become TFLite signatures.

What a phone runs, as the TFLite on-device training guide lays it out (train / infer / save /
restore, plus get_weights / set_weights so the federated plan can move weights in and out):

    train(x int32[B,T], y int32[B,T], lr float32[], clip float32[])  -> {"loss": float32[]}
        one plain SGD step  w <- w - lr * s * g,  g = d masked_loss / d w,
        s = min(1, clip / ||g||) for clip > 0 and 1 otherwise (the learning rate and the gradient
        clip are inputs, so the server's plan sets them without a re-export)
    infer(x int32[B,T])                               -> {"logits": float32[B,T,V]}
    get_weights()                                     -> {w000_...: tensor, ...}
    set_weights(w000_..., ...)                        -> {w000_...: tensor, ...} (what was set)
    save(checkpoint_path string[])                    -> {"checkpoint_path": string[]}
    restore(checkpoint_path string[])                 -> {"checkpoint_path": string[]}

B is static (ServerConfig.batch_size): TFLite needs a static batch, and a phone pads its last
batch with PAD rows, which `model.nwp.masked_loss` ignores, so the padded step equals the step
TFF takes on the short batch. Weight names and order are `model.nwp.weight_names`, i.e. the
canonical order `model.trainable_weights` used by TFF state, server payloads and weights.npz.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from configs.schema import ModelConfig
from model.nwp import build_model, clip_scale, masked_step_loss, weight_names

TRAIN = "train"
INFER = "infer"
GET_WEIGHTS = "get_weights"
SET_WEIGHTS = "set_weights"
SAVE = "save"
RESTORE = "restore"


def sgd_step(model: tf.keras.Model, x: tf.Tensor, y: tf.Tensor, lr: tf.Tensor,
             clip: tf.Tensor | float = 0.0) -> tf.Tensor:
    """One plain SGD step on `masked_loss`, its gradient clipped to global L2 norm `clip` when
    `clip` > 0 (`clip_scale`); returns the loss before the step.

    The loss goes through `model.nwp.masked_step_loss` (the output layer and the loss with their
    gradient written out; same function and gradient as `masked_loss` on the logits), which
    keeps the TFLite graph to a few [B*T, V] ops. The tied embedding's two gradients (the
    lookup's, scattered densely by `model.nwp.embedding_lookup`, and the output layer's) are
    dense and summed, so every platform applies the same arithmetic.
    """
    with tf.GradientTape() as tape:
        loss = masked_step_loss(model, x, y)
    grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, model.trainable_weights)]
    step = lr * clip_scale(grads, clip)
    for var, grad in zip(model.trainable_weights, grads):
        var.assign_sub(step * grad)
    return loss


class TrainableNWP(tf.Module):
    """The next-word model with fixed-shape signatures for TFLite on-device training.

    Args:
        cfg: model sizes.
        vocab_size: tokenizer vocabulary size, special ids included.
        seq_len: T.
        batch_size: the static on-device batch size B (the plan's ServerConfig.batch_size).
        seed: initializer seed (the weights are normally replaced through `set_weights`).
        unroll: unroll the recurrence over the T steps (`build_model(unroll=True)`), which keeps
            the `train` signature on builtin ops; False keeps Keras' while loop, whose gradient
            needs about ten Select TF ops (TensorList*, BiasAddGrad, AddN, ...), which TFLite only
            has through the Flex delegate (about 23 MB on Android against 0.8 MB for builtins).
    """

    def __init__(self, cfg: ModelConfig, vocab_size: int, seq_len: int, batch_size: int,
                 seed: int = 0, unroll: bool = True) -> None:
        super().__init__(name="trainable_nwp")
        if batch_size < 1:
            raise ValueError(f"batch_size: expected a positive static batch size, got {batch_size}")
        self.vocab_size = int(vocab_size)
        self.seq_len = int(seq_len)
        self.batch_size = int(batch_size)
        self.model = build_model(cfg, vocab_size, seq_len, batch_size=batch_size, seed=seed, unroll=unroll)
        self.names = weight_names(self.model)
        self.shapes = [tuple(int(d) for d in v.shape) for v in self.model.trainable_weights]
        tokens = tf.TensorSpec([batch_size, seq_len], tf.int32)
        weight_specs = [tf.TensorSpec(s, tf.float32, name=n) for n, s in zip(self.names, self.shapes)]

        # Signatures are built here (not as decorated methods) because their input specs
        # depend on the model's sizes and weight names.
        self.train = tf.function(
            self._train, input_signature=[tf.TensorSpec(tokens.shape, tf.int32, name="x"),
                                          tf.TensorSpec(tokens.shape, tf.int32, name="y"),
                                          tf.TensorSpec([], tf.float32, name="lr"),
                                          tf.TensorSpec([], tf.float32, name="clip")])
        self.infer = tf.function(
            self._infer, input_signature=[tf.TensorSpec(tokens.shape, tf.int32, name="x")])
        self.get_weights = tf.function(self._get_weights, input_signature=[])
        self.set_weights = tf.function(self._set_weights, input_signature=weight_specs)
        self.save = tf.function(
            self._save, input_signature=[tf.TensorSpec([], tf.string, name="checkpoint_path")])
        self.restore = tf.function(
            self._restore, input_signature=[tf.TensorSpec([], tf.string, name="checkpoint_path")])

    # --- signature bodies -------------------------------------------------------------------
    def _train(self, x: tf.Tensor, y: tf.Tensor, lr: tf.Tensor, clip: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"loss": sgd_step(self.model, x, y, lr, clip)}

    def _infer(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"logits": self.model(x, training=False)}

    def _get_weights(self) -> dict[str, tf.Tensor]:
        return {n: tf.identity(v) for n, v in zip(self.names, self.model.trainable_weights)}

    def _set_weights(self, *tensors: tf.Tensor) -> dict[str, tf.Tensor]:
        for var, t in zip(self.model.trainable_weights, tensors):
            var.assign(t)
        return {n: tf.identity(v) for n, v in zip(self.names, self.model.trainable_weights)}

    def _save(self, checkpoint_path: tf.Tensor) -> dict[str, tf.Tensor]:
        tf.raw_ops.Save(filename=checkpoint_path, tensor_names=self.names,
                        data=[v.read_value() for v in self.model.trainable_weights])
        return {"checkpoint_path": checkpoint_path}

    def _restore(self, checkpoint_path: tf.Tensor) -> dict[str, tf.Tensor]:
        for name, var in zip(self.names, self.model.trainable_weights):
            var.assign(tf.raw_ops.Restore(file_pattern=checkpoint_path, tensor_name=name,
                                          dt=tf.float32))
        return {"checkpoint_path": checkpoint_path}

    # --- helpers ------------------------------------------------------------------------------
    def signatures(self, names: Sequence[str] = (TRAIN, INFER, GET_WEIGHTS, SET_WEIGHTS, SAVE, RESTORE)
                   ) -> dict[str, tf.types.experimental.ConcreteFunction]:
        """Concrete functions keyed by signature name, for tf.saved_model.save."""
        return {n: getattr(self, n).get_concrete_function() for n in names}

    def assign(self, arrays: Sequence[np.ndarray]) -> None:
        """Set the weights from arrays in canonical order (checking their shapes)."""
        check_weights(self.names, self.shapes, arrays)
        for var, a in zip(self.model.trainable_weights, arrays):
            var.assign(np.asarray(a, dtype=np.float32))


def check_weights(names: Sequence[str], shapes: Sequence[tuple[int, ...]],
                  arrays: Sequence[np.ndarray]) -> None:
    """Raise ValueError unless `arrays` match `shapes` one for one."""
    if len(arrays) != len(shapes):
        raise ValueError(f"expected {len(shapes)} weight arrays ({', '.join(names)}), got {len(arrays)}")
    for n, s, a in zip(names, shapes, arrays):
        if tuple(np.shape(a)) != tuple(s):
            raise ValueError(f"weight {n}: expected shape {tuple(s)}, got {tuple(np.shape(a))}")
