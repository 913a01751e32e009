"""On-device figures of the phone bundle (issue 5), for the `default` and `gboard` model sizes.

For each preset: prepare simulated data (a reduced number of users unless --users 0), train the
Keras model centrally with plain SGD for a few hundred steps (a benchmark needs a model whose
suggestions mean something; federated training is not what is measured here), export the
bundle, then measure:

- train_ratio: TFLite `train` step time / Keras tf.function step time on the same batch
  (same plain SGD step on masked_loss; goal <= 1.5);
- suggest_ms: suggestion latency of infer.tflite and infer_int8.tflite, one thread, median
  (goal <= 5 ms for gboard);
- int8_size_ratio: infer_int8.tflite bytes / infer.tflite bytes (goal <= 0.30);
- int8_top1_drop_points: (float top-1 - int8 top-1) * 100 on held-out users' prefixes
  (goal <= 0.2 points).

    .venv/bin/python benchmarks/tflite_ondevice.py [--presets default gboard] [--users 120]

Prints a table and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _median_ms(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def bench_preset(name: str, users: int, train_steps: int, eval_rows: int, repeats: int,
                 work: str, threads: int) -> dict:
    import tensorflow as tf

    import configs
    from benchmarks._datasets import prepared
    from model.nwp import build_model, weight_names
    from model.weights_io import save_weights
    from tflite_export.bundle import export_bundle
    from tflite_export.inference import Suggester, context_batch, top1_accuracy
    from tflite_export.runtime import TFLiteModel
    from tflite_export.trainable import sgd_step

    cfg = configs.preset(name)
    notes = []
    if users:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, num_users=users))
    data_dir = os.path.join(work, name, "data")
    t0 = time.perf_counter()
    data = prepared(cfg, data_dir)  # reused when --work already holds it
    vocab, seq_len, batch = data.tokenizer.vocab_size, cfg.data.seq_len, cfg.train.batch_size
    x_train, y_train = data.pooled_examples("train", seq_len)
    x_held, y_held = data.pooled_examples("heldout", seq_len, max_examples=eval_rows)
    prep_s = time.perf_counter() - t0

    # Central Keras SGD, timing the tf.function step (the Keras side of train_ratio).
    model = build_model(cfg.model, vocab, seq_len)
    step = tf.function(lambda x, y, lr: sgd_step(model, x, y, lr))
    lr = tf.constant(cfg.train.client_learning_rate, tf.float32)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(train_steps):
        idx = rng.integers(0, x_train.shape[0], size=batch)
        step(tf.constant(x_train[idx]), tf.constant(y_train[idx]), lr)
    train_s = time.perf_counter() - t0
    xb, yb = x_train[:batch], y_train[:batch]
    txb, tyb = tf.constant(xb), tf.constant(yb)
    weights = [v.numpy() for v in model.trainable_weights]
    keras_ms = _median_ms(lambda: step(txb, tyb, lr).numpy(), repeats)
    model.set_weights(weights)

    weights_path = save_weights(os.path.join(work, name, "weights.npz"), weight_names(model), weights)
    bundle = os.path.join(work, name, "bundle")
    t0 = time.perf_counter()
    manifest = export_bundle(cfg, weights_path, os.path.join(data_dir, "spm.model"), bundle)
    export_s = time.perf_counter() - t0

    tflite_ms = {}
    for n in sorted({1, threads}):
        tfl = TFLiteModel(os.path.join(bundle, "trainable.tflite"), num_threads=n)
        tfl.set_weights(weights)
        tflite_ms[n] = _median_ms(lambda: tfl.train_step(xb, yb, cfg.train.client_learning_rate), repeats)

    contexts, targets = context_batch(x_held, y_held)
    inf = manifest["inference"]
    result = {"preset": name, "notes": notes, "vocab_size": vocab, "seq_len": seq_len, "batch_size": batch,
              "num_params": manifest["num_params"], "users": cfg.data.num_users,
              "train_steps": train_steps, "prepare_s": round(prep_s, 1), "central_train_s": round(train_s, 1),
              "export_s": round(export_s, 1), "select_tf_ops": manifest["select_tf_ops"],
              "trainable_bytes": os.path.getsize(os.path.join(bundle, "trainable.tflite")),
              "keras_step_ms": round(keras_ms, 3), "tflite_threads": threads,
              "tflite_step_ms": round(tflite_ms[threads], 3), "tflite_step_ms_1thread": round(tflite_ms[1], 3),
              "train_ratio": round(tflite_ms[threads] / keras_ms, 3),
              "train_ratio_1thread": round(tflite_ms[1] / keras_ms, 3)}
    typical = contexts[len(contexts) // 2] if len(contexts) else np.full(seq_len, 2, np.int32)
    for key in ("float32", "int8"):
        sg = Suggester(os.path.join(bundle, inf[key]["file"]), num_threads=1)
        result[f"suggest_ms_{key}"] = round(_median_ms(lambda: sg(typical), repeats * 5), 3)
        result[f"bytes_{key}"] = inf[key]["bytes"]
        acc = top1_accuracy(sg, contexts, targets)
        result[f"top1_{key}"] = round(acc["top1"], 5)
        result[f"top3_{key}"] = round(acc["top3"], 5)
        result["eval_words"] = int(acc["words"])
    result["int8_size_ratio"] = round(result["bytes_int8"] / result["bytes_float32"], 4)
    result["int8_top1_drop_points"] = round(100 * (result["top1_float32"] - result["top1_int8"]), 3)
    result["goals"] = {"train_ratio<=1.5": result["train_ratio"] <= 1.5,
                       "int8_size_ratio<=0.30": result["int8_size_ratio"] <= 0.30,
                       "int8_top1_drop<=0.2pt": result["int8_top1_drop_points"] <= 0.2}
    if name == "gboard":
        result["goals"]["suggest_ms_int8<=5"] = result["suggest_ms_int8"] <= 5.0
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", nargs="+", default=["default", "gboard"])
    p.add_argument("--users", type=int, default=120, help="simulated users per preset (0 = the preset's)")
    p.add_argument("--train-steps", type=int, default=300, help="central Keras SGD steps before export")
    p.add_argument("--eval-rows", type=int, default=150, help="held-out windows whose prefixes are scored")
    p.add_argument("--repeats", type=int, default=20, help="timed repetitions per figure (median)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="TFLite train-step threads (default: all cores, as Keras uses)")
    p.add_argument("--work", default="", help="keep data and bundles here, and reuse prepared data found there "
                                              "(default: a temp dir)")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory(prefix="fedkeys_bench_") as tmp:
        work = args.work or tmp
        results = [bench_preset(name, args.users, args.train_steps, args.eval_rows, args.repeats, work,
                                args.threads)
                   for name in args.presets]
    cols = ["preset", "num_params", "keras_step_ms", "tflite_step_ms", "train_ratio", "train_ratio_1thread", "suggest_ms_float32",
            "suggest_ms_int8", "bytes_float32", "bytes_int8", "int8_size_ratio", "top1_float32", "top1_int8",
            "int8_top1_drop_points", "eval_words"]
    print(" | ".join(cols))
    for r in results:
        print(" | ".join(str(r[c]) for c in cols))
        for note in r["notes"]:
            print(f"note ({r['preset']}): {note}")
        print(f"goals ({r['preset']}): {r['goals']}")
    print(json.dumps({"benchmark": "tflite_ondevice", "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
