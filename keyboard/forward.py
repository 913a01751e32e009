"""The next-word model's forward pass in numpy: token ids in, next-token logits out.

The same function as `model.nwp.build_model` (embedding -> LSTM or CIFG -> projection -> output
tied to the embedding; Hard et al. 2018, arXiv:1811.03604), written without TensorFlow so the
collector (which imports no TensorFlow) and a start-up-sensitive CLI can run it. The weights are
the canonical list (`model.trainable_weights` order, as in weights.npz and the bundle manifest):

    lstm: embedding [V, E], kernel [E, 4U], recurrent_kernel [U, 4U], bias [4U],
          projection kernel [U, E], projection bias [E], output bias [V]
    cifg: embedding [V, E], kernel [E, 3U], recurrent_kernel [E, 3U], bias [3U],
          projection [U, E], output bias [V]

Gate order and arithmetic follow Keras' LSTMCell ([i, f, c, o], sigmoid and tanh) and
`model.nwp.CIFGCell` ([f, c, o], input gate 1 - f, projection inside the recurrence; Greff et
al. 2017, Sak et al. 2014). Inputs past a message's end do not change earlier outputs (the
recurrence is causal), so the logits at position t depend only on ids[:t + 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

CELLS = ("lstm", "cifg")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # The logistic function as one tanh (no overflow for any x, one pass instead of exp, add,
    # divide and a select; equal to 1 / (1 + exp(-x)) to float rounding).
    return 0.5 * np.tanh(0.5 * x) + 0.5


@dataclass(frozen=True)
class NWPWeights:
    """The model's weights by role (float32). `projection_bias` is None for `cifg`."""

    cell: str
    embedding: np.ndarray
    kernel: np.ndarray
    recurrent_kernel: np.ndarray
    bias: np.ndarray
    projection: np.ndarray
    projection_bias: np.ndarray | None
    output_bias: np.ndarray

    @classmethod
    def from_list(cls, cell: str, arrays: Sequence[np.ndarray]) -> "NWPWeights":
        """Name the canonical weight list; raises ValueError when it does not fit `cell`.

        Args:
            cell: "lstm" or "cifg" (ModelConfig.cell, the manifest's model.cell).
            arrays: the weights in canonical order (see the module docstring).
        """
        if cell not in CELLS:
            raise ValueError(f"cell: expected one of {CELLS}, got {cell!r}")
        a = [np.asarray(w, np.float32) for w in arrays]
        want = 7 if cell == "lstm" else 6
        if len(a) != want:
            raise ValueError(f"a {cell} model has {want} weight arrays, got {len(a)}")
        emb = a[0]
        if emb.ndim != 2:
            raise ValueError(f"embedding must be [V, E], got shape {emb.shape}")
        vocab, width = emb.shape
        gates = 4 if cell == "lstm" else 3
        kernel, recurrent, bias = a[1], a[2], a[3]
        if kernel.ndim != 2 or kernel.shape[0] != width or kernel.shape[1] % gates:
            raise ValueError(f"kernel must be [{width}, {gates}U], got {kernel.shape}")
        units = kernel.shape[1] // gates
        state = units if cell == "lstm" else width
        expected = [(vocab, width), (width, gates * units), (state, gates * units), (gates * units,), (units, width)]
        expected += [(width,), (vocab,)] if cell == "lstm" else [(vocab,)]
        got = [tuple(w.shape) for w in a]
        if got != expected:
            raise ValueError(f"{cell} weights: expected shapes {expected}, got {got}")
        return cls(cell, emb, kernel, recurrent, bias, a[4], a[5] if cell == "lstm" else None, a[-1])

    @property
    def vocab_size(self) -> int:
        return int(self.embedding.shape[0])

    def replace_output_bias(self, bias: np.ndarray) -> "NWPWeights":
        """A copy with another output bias (personalization of the bias alone)."""
        return NWPWeights(self.cell, self.embedding, self.kernel, self.recurrent_kernel, self.bias,
                          self.projection, self.projection_bias, np.asarray(bias, np.float32))


def hidden_states(w: NWPWeights, ids: np.ndarray) -> np.ndarray:
    """The [B, T, E] states the tied output layer turns into logits (zero initial state).

    Args:
        w: the weights.
        ids: int [B, T] token ids (or [T]).

    Returns:
        float32 [B, T, E] ([T, E] for 1-D ids).
    """
    ids = np.asarray(ids)
    squeeze = ids.ndim == 1
    if squeeze:
        ids = ids[None, :]
    if ids.size and (ids.min() < 0 or ids.max() >= w.vocab_size):
        raise ValueError(f"token ids must be in [0, {w.vocab_size}), got range [{ids.min()}, {ids.max()}]")
    batch, steps = ids.shape
    x = w.embedding[ids]                                             # [B, T, E]
    zx = x.reshape(batch * steps, -1) @ w.kernel + w.bias            # input share of all steps at once
    zx = zx.reshape(batch, steps, -1)
    units = w.projection.shape[0]
    h = np.zeros((batch, w.recurrent_kernel.shape[0]), np.float32)
    c = np.zeros((batch, units), np.float32)
    out = np.empty((batch, steps, w.embedding.shape[1]), np.float32)
    for t in range(steps):
        z = zx[:, t] + h @ w.recurrent_kernel
        if w.cell == "lstm":
            i, f = _sigmoid(z[:, :units]), _sigmoid(z[:, units:2 * units])
            g, o = np.tanh(z[:, 2 * units:3 * units]), _sigmoid(z[:, 3 * units:])
            c = f * c + i * g
            h = o * np.tanh(c)
            out[:, t] = h @ w.projection + w.projection_bias
        else:
            f, g, o = _sigmoid(z[:, :units]), np.tanh(z[:, units:2 * units]), _sigmoid(z[:, 2 * units:])
            c = g + f * (c - g)  # f * c + (1 - f) * g, as CIFGCell writes it
            h = (o * np.tanh(c)) @ w.projection
            out[:, t] = h
    return out[0] if squeeze else out


def logits(w: NWPWeights, ids: np.ndarray) -> np.ndarray:
    """Next-token logits [B, T, V] (or [T, V]) for int ids [B, T] (or [T])."""
    h = hidden_states(w, ids)
    return h @ w.embedding.T + w.output_bias


def next_logits(w: NWPWeights, context: Sequence[int]) -> np.ndarray:
    """The logits [V] after the last id of one context (no padding: only its own steps run)."""
    h = hidden_states(w, np.asarray(context, np.int64))
    if h.shape[0] == 0:
        raise ValueError("a context needs at least one id (BOS)")
    return h[-1] @ w.embedding.T + w.output_bias


def softmax(z: np.ndarray) -> np.ndarray:
    """Softmax along the last axis, in float64 (probabilities shown to people sum to 1)."""
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
