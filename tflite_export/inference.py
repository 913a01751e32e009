"""The suggestion-strip model: context ids in, the top-k next words and their probabilities out.

A separate, builtins-only .tflite (no Flex delegate, so an app ships the ~0.8 MB builtin runtime
instead of the ~23 MB TF-ops one), in float32 and int8:

    suggest(x int32[1,T]) -> {"ids": int32[1,k], "probs": float32[1,k]}

`x` is the message typed so far, as token ids starting with BOS, right-padded with PAD to T
(when longer than T, its last T ids). The model runs the LSTM over the T positions, takes the output at the last non-PAD position (the LSTM is
causal, so trailing PADs change nothing there), and returns the k most probable next tokens
best first, never PAD/UNK/BOS/EOS (model.metrics.NEVER_SUGGESTED). `probs` are full-softmax
probabilities (not renormalised over the k).

The LSTM is unrolled (plain FULLY_CONNECTED / LOGISTIC / TANH ops) rather than converted to
TFLite's fused UNIDIRECTIONAL_SEQUENCE_LSTM: the fused op keeps its hidden and cell state in
variable tensors that persist across invocations, so a second suggest() call would start from
the first call's final state unless the app remembered `reset_all_variables()` before every
call (measured: the second call's probabilities then differ from Keras). Unrolled, every call
starts from zeros, as the Keras model does.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import numpy as np
import tensorflow as tf

from configs.schema import ModelConfig
from data.special_ids import PAD_ID
from model.metrics import NEVER_SUGGESTED
from model.nwp import build_model, hidden_states
from tflite_export.runtime import load_interpreter

SUGGEST = "suggest"


class SuggestNWP(tf.Module):
    """The next-word model with a batch-1 `suggest` signature.

    Args:
        cfg: model sizes.
        vocab_size: V.
        seq_len: T, the context length.
        top_k: k suggestions.
        weights: arrays in canonical order (model.trainable_weights).
        unroll: unroll the LSTM (stateless between calls, see the module docstring); False
            gives the fused, stateful TFLite LSTM op (for comparison only).
    """

    def __init__(self, cfg: ModelConfig, vocab_size: int, seq_len: int, top_k: int,
                 weights: Sequence[np.ndarray], unroll: bool = True) -> None:
        super().__init__(name="suggest_nwp")
        if not 1 <= top_k <= vocab_size - len(NEVER_SUGGESTED):
            raise ValueError(f"top_k must be in [1, {vocab_size - len(NEVER_SUGGESTED)}], got {top_k}")
        self.top_k = int(top_k)
        self.seq_len = int(seq_len)
        self.model = build_model(cfg, vocab_size, seq_len, batch_size=1, unroll=unroll)
        self.model.set_weights([np.asarray(w, np.float32) for w in weights])
        mask = np.ones([vocab_size], np.float32)
        mask[list(NEVER_SUGGESTED)] = 0.0
        self.suggestible = tf.constant(mask)
        self.suggest = tf.function(
            self._suggest, input_signature=[tf.TensorSpec([1, seq_len], tf.int32, name="x")])

    def _suggest(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        m = self.model
        h = hidden_states(m, x)                                            # [1, T, D]
        length = tf.reduce_sum(tf.cast(tf.not_equal(x, PAD_ID), tf.int32), axis=1)
        last = tf.maximum(length - 1, 0)                                   # [1]
        h_last = tf.gather(h, last, axis=1, batch_dims=1)                  # [1, D]
        probs = tf.nn.softmax(m.get_layer("tied_output")(h_last))          # [1, V]
        # Specials get probability 0 for ranking; real words keep their softmax probability.
        top_probs, top_ids = tf.math.top_k(probs * self.suggestible, k=self.top_k)
        return {"ids": top_ids, "probs": top_probs}

    def signatures(self) -> dict:
        return {SUGGEST: self.suggest.get_concrete_function()}


def context_batch(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every prefix of every row as a suggest() input: ([M, T] right-padded contexts, [M] targets).

    Prefix t of row i is x[i, :t+1] followed by PADs; its target is y[i, t]. Only positions
    whose input is not PAD are kept (a PAD input is past the end of the message).
    """
    rows, targets = [], []
    for xi, yi in zip(np.asarray(x), np.asarray(y)):
        for t in range(xi.shape[0]):
            if xi[t] == PAD_ID:
                break
            ctx = np.full_like(xi, PAD_ID)
            ctx[:t + 1] = xi[:t + 1]
            rows.append(ctx)
            targets.append(yi[t])
    if not rows:
        return np.zeros((0, np.shape(x)[1]), np.int32), np.zeros((0,), np.int32)
    return np.stack(rows).astype(np.int32), np.asarray(targets, np.int32)


class Suggester:
    """Runs a suggest .tflite in a plain `tf.lite.Interpreter` (builtin ops only, as on a phone).

    Args:
        path_or_bytes: the .tflite file or its contents.
        num_threads: interpreter threads (1 = what the latency figure uses).
    """

    def __init__(self, path_or_bytes: str | bytes, num_threads: int | None = 1) -> None:
        # No Flex delegate: the tensorflow wheel's Interpreter only loads it for Flex ops,
        # and convert_builtins has already refused any custom op.
        self.interpreter = load_interpreter(path_or_bytes, num_threads)
        self.runner = self.interpreter.get_signature_runner(SUGGEST)
        self.seq_len = int(self.runner.get_input_details()["x"]["shape"][1])
        self.top_k = int(self.runner.get_output_details()["ids"]["shape"][1])

    def __call__(self, context: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids int32[k], probs float32[k]) for one right-padded context int32[T]."""
        out = self.runner(x=np.asarray(context, np.int32).reshape(1, self.seq_len))
        return np.array(out["ids"][0], copy=True), np.array(out["probs"][0], copy=True)

    def rank(self, contexts: np.ndarray) -> np.ndarray:
        """Suggested ids [M, k] for M contexts (one interpreter call each)."""
        return np.stack([self(c)[0] for c in contexts]) if len(contexts) else np.zeros((0, self.top_k), np.int32)


def top1_accuracy(suggester: Suggester, contexts: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """top-1 / top-k recall over word targets, with model.metrics' definition (UNK = miss)."""
    from model.metrics import NextWordAccumulator

    acc = NextWordAccumulator(ks=(1, suggester.top_k))
    acc.update_ranked(suggester.rank(contexts), targets)
    return acc.result()


def representative_contexts(x: np.ndarray, n: int = 200, seed: int = 0
                            ) -> Callable[[], Iterable[dict[str, np.ndarray]]]:
    """A representative dataset for full-integer quantization: n prefixes of proxy-user rows."""
    contexts, _ = context_batch(x, np.zeros_like(x))
    rng = np.random.default_rng(seed)
    pick = contexts[rng.permutation(len(contexts))[:n]]

    def gen() -> Iterable[dict[str, np.ndarray]]:
        for c in pick:
            yield {"x": c.reshape(1, -1)}
    return gen
