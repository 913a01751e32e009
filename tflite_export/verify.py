"""Proof that a bundle computes what the Keras model computes.

Checks (thresholds from issue 5):
- infer:      TFLite `infer` logits vs Keras logits on the same batches, max abs diff <= 1e-4;
- train:      one TFLite `train` step vs one Keras SGD step (tf.keras.optimizers.SGD, the
              optimizer TFF's clients use) from the same weights, max abs weight diff <= 1e-5;
- padded:     the same with a short batch, which the phone pads with PAD rows and Keras takes
              as it is (a phone's last batch vs TFF's), max abs weight diff <= 1e-5;
- round_trip: `get_weights` after `set_weights` returns exactly what was set.
- suggest:    the float32 suggestion model (infer.tflite) on every prefix of x: its k
              probabilities equal Keras' softmax for those ids (max abs diff <= 1e-5) and its
              first suggestion is Keras' most probable suggestible word (up to that tolerance);
- int8:       top-1 of infer_int8.tflite minus top-1 of infer.tflite on the same prefixes (a
              figure with a goal of losing at most 0.2 points, reported, not a pass/fail check).

The Keras side is `model.nwp.build_model` exactly as federated training builds it (dynamic
batch, Keras' own LSTM loop), so these are checks against the model TFF trains.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from configs.schema import ModelConfig
from data.special_ids import PAD_ID
from model.nwp import build_model, masked_loss
from model.weights_io import load_weights
from tflite_export.bundle import read_manifest
from tflite_export.runtime import TFLiteModel

INFER_TOL = 1e-4
TRAIN_TOL = 1e-5
PROB_TOL = 1e-5
INT8_TOP1_GOAL = 0.002  # at most 0.2 points of top-1 lost to int8 (issue 5)


def keras_model(manifest: dict[str, Any], weights: Sequence[np.ndarray]) -> tf.keras.Model:
    """The Keras model of the manifest (dynamic batch), holding `weights`."""
    model = build_model(ModelConfig(**manifest["model"]), manifest["vocab_size"], manifest["seq_len"])
    model.set_weights([np.asarray(w, dtype=np.float32) for w in weights])
    return model


def keras_sgd_step(model: tf.keras.Model, x: np.ndarray, y: np.ndarray, lr: float, clip: float = 0.0) -> float:
    """One Keras SGD step on masked_loss (what a TFF client does per batch), the gradient clipped
    to global norm `clip` by Keras' own `global_clipnorm` when `clip` > 0."""
    optimizer = tf.keras.optimizers.SGD(learning_rate=lr, global_clipnorm=clip or None)
    with tf.GradientTape() as tape:
        loss = masked_loss(tf.constant(y), model(tf.constant(x), training=True))
    grads = tape.gradient(loss, model.trainable_weights)
    optimizer.apply_gradients(zip(grads, model.trainable_weights))
    return float(loss)


def keras_grad_norm(model: tf.keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    """Global L2 norm of masked_loss's gradient at the model's weights."""
    with tf.GradientTape() as tape:
        loss = masked_loss(tf.constant(y), model(tf.constant(x), training=True))
    return float(tf.linalg.global_norm([tf.convert_to_tensor(g) for g in tape.gradient(loss, model.trainable_weights)]))


def _max_diff(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    return max(float(np.max(np.abs(np.asarray(u, np.float64) - np.asarray(v, np.float64)))) for u, v in zip(a, b))


def check_infer(tfl: TFLiteModel, keras: tf.keras.Model, x: np.ndarray) -> float:
    """Max abs logit difference over all rows of x (batched by the static batch size)."""
    worst = 0.0
    for start in range(0, x.shape[0], tfl.batch_size):
        xb = x[start:start + tfl.batch_size]
        got = tfl.infer(xb)
        want = keras(tf.constant(xb), training=False).numpy()
        worst = max(worst, float(np.max(np.abs(got - want))))
    return worst


def check_train(tfl: TFLiteModel, manifest: dict[str, Any], weights: Sequence[np.ndarray],
                x: np.ndarray, y: np.ndarray, lr: float, clip: float = 0.0) -> dict[str, float]:
    """One step each from `weights` on (x, y) (x may be shorter than the batch), the gradient
    clipped to global norm `clip` when > 0: diffs."""
    keras = keras_model(manifest, weights)
    keras_loss = keras_sgd_step(keras, x, y, lr, clip)
    tfl.set_weights(weights)
    tfl_loss = tfl.train_step(x, y, lr, clip)
    return {"weight_diff": _max_diff(tfl.get_weights(), [v.numpy() for v in keras.trainable_weights]),
            "loss_diff": abs(tfl_loss - keras_loss), "loss": keras_loss,
            "step_size": _max_diff(weights, [v.numpy() for v in keras.trainable_weights])}


def check_round_trip(tfl: TFLiteModel, weights: Sequence[np.ndarray], seed: int = 0) -> float:
    """Set perturbed weights, read them back: max abs difference (expected exactly 0)."""
    rng = np.random.default_rng(seed)
    probe = [np.asarray(w, np.float32) + rng.normal(0, 0.01, np.shape(w)).astype(np.float32) for w in weights]
    tfl.set_weights(probe)
    return _max_diff(tfl.get_weights(), probe)


def check_suggest(bundle_dir: str, manifest: dict[str, Any], keras: tf.keras.Model,
                  x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Suggestion models against Keras on every prefix of x, and int8 top-1 against float."""
    from model.metrics import NEVER_SUGGESTED
    from tflite_export.inference import Suggester, context_batch, top1_accuracy

    contexts, targets = context_batch(x, y)
    logits = keras(tf.constant(x), training=False).numpy()
    z = logits - logits.max(axis=-1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)
    # [M, V] in context_batch's order: row by row, positions before the first PAD input.
    want = probs[np.cumprod(x != PAD_ID, axis=1).astype(bool)]
    suggestible = want.copy()
    suggestible[:, list(NEVER_SUGGESTED)] = 0.0
    out: dict[str, Any] = {"contexts": int(len(contexts))}
    models = manifest.get("inference", {})
    if "float32" not in models:
        return out
    float_model = Suggester(os.path.join(bundle_dir, models["float32"]["file"]))
    prob_diff, top1_gap = 0.0, 0.0
    for i, c in enumerate(contexts):
        ids, p = float_model(c)
        prob_diff = max(prob_diff, float(np.max(np.abs(want[i, ids] - p))))
        top1_gap = max(top1_gap, float(suggestible[i].max() - want[i, ids[0]]))
    out["suggest_max_abs_prob_diff"] = prob_diff
    out["suggest_top1_prob_gap"] = top1_gap
    out["float32"] = top1_accuracy(float_model, contexts, targets)
    if "int8" in models:
        int8_model = Suggester(os.path.join(bundle_dir, models["int8"]["file"]))
        out["int8"] = top1_accuracy(int8_model, contexts, targets)
        out["int8_top1_drop"] = out["float32"]["top1"] - out["int8"]["top1"]
        out["int8_bytes_ratio"] = models["int8"]["bytes"] / models["float32"]["bytes"]
    return out


def verify_bundle(bundle_dir: str, x: np.ndarray, y: np.ndarray, lr: float | None = None) -> dict[str, Any]:
    """Run every parity check on a bundle; returns the figures and `ok`.

    Args:
        bundle_dir: written by `tflite_export.bundle.export_bundle`.
        x, y: int32 [N, T] held-out examples (N >= 1; the train checks use the first batch).
        lr: step size for the train checks (default: the manifest's plan learning rate).
    """
    manifest = read_manifest(bundle_dir)
    _, weights = load_weights(os.path.join(bundle_dir, manifest["weights_file"]))
    tfl = TFLiteModel(os.path.join(bundle_dir, manifest["trainable"]))
    lr = float(manifest["learning_rate"] if lr is None else lr)
    x, y = np.asarray(x, np.int32), np.asarray(y, np.int32)
    b = tfl.batch_size

    tfl.set_weights(weights)
    keras = keras_model(manifest, weights)
    infer_diff = check_infer(tfl, keras, x)
    suggest = check_suggest(bundle_dir, manifest, keras, x, y)
    full = check_train(tfl, manifest, weights, x[:b], y[:b], lr)
    short = max(1, min(b, x.shape[0]) // 2)
    padded = check_train(tfl, manifest, weights, x[:short], y[:short], lr)
    # The plan's gradient clip, at half the batch's gradient norm so that it binds.
    clip = 0.5 * keras_grad_norm(keras, x[:b], y[:b])  # `keras` still holds `weights`
    clipped = check_train(tfl, manifest, weights, x[:b], y[:b], lr, clip)
    round_trip = check_round_trip(tfl, weights)
    tfl.set_weights(weights)

    result: dict[str, Any] = {
        "bundle": bundle_dir,
        "examples": int(x.shape[0]),
        "infer_max_abs_logit_diff": infer_diff,
        "train_max_abs_weight_diff": full["weight_diff"],
        "train_loss_diff": full["loss_diff"],
        "train_step_max_abs": full["step_size"],
        "padded_rows": int(short),
        "padded_max_abs_weight_diff": padded["weight_diff"],
        "clipped_max_abs_weight_diff": clipped["weight_diff"],
        "clipped_step_max_abs": clipped["step_size"],
        "round_trip_max_abs_diff": round_trip,
        "select_tf_ops": manifest["select_tf_ops"],
        "suggest": suggest,
    }
    result["checks"] = {
        "infer": infer_diff <= INFER_TOL,
        "train": full["weight_diff"] <= TRAIN_TOL,
        "padded": padded["weight_diff"] <= TRAIN_TOL,
        "clipped": clipped["weight_diff"] <= TRAIN_TOL,
        "round_trip": round_trip == 0.0,
    }
    if "suggest_max_abs_prob_diff" in suggest:
        result["checks"]["suggest"] = (suggest["suggest_max_abs_prob_diff"] <= PROB_TOL
                                       and suggest["suggest_top1_prob_gap"] <= PROB_TOL)
    if "int8_top1_drop" in suggest:
        result["goals"] = {"int8_top1_drop_at_most_0.2_points": suggest["int8_top1_drop"] <= INT8_TOP1_GOAL,
                           "int8_at_most_30pct_of_float_bytes": suggest["int8_bytes_ratio"] <= 0.30}
    result["ok"] = all(result["checks"].values())
    return result
