"""TFLite export: the trainable bundle matches Keras (issue 2 stage 3, issue 5 checks).

One conversion per module (module-scoped fixtures): conversion costs seconds of scarce CPU.
"""

from __future__ import annotations

import json
import os
import string

import numpy as np
import pytest

import configs
from data.special_ids import PAD_ID

VOCAB = 300


def synthetic_texts(n_words: int = 400, n_messages: int = 300, seed: int = 0) -> list[str]:
    """Messages over `n_words` distinct made-up words, enough for a VOCAB-sized vocabulary."""
    rng = np.random.default_rng(seed)
    letters = np.array(list(string.ascii_lowercase))
    lexicon = sorted({"".join(rng.choice(letters, size=rng.integers(3, 8))) for _ in range(n_words * 2)})[:n_words]
    texts = [" ".join(lexicon[i] for i in rng.integers(0, n_words, size=rng.integers(4, 15)))
             for _ in range(n_messages)]
    texts.append(" ".join(lexicon))  # every word at least once
    return texts


def examples(n: int, seq_len: int, vocab: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Random [n, T] next-token examples, with PAD tails on some rows as real windows have."""
    rng = np.random.default_rng(seed)
    w = rng.integers(2, vocab, size=(n, seq_len + 1)).astype(np.int32)
    for i in range(0, n, 3):
        w[i, rng.integers(seq_len // 2, seq_len + 1):] = PAD_ID
    return w[:, :-1], w[:, 1:]


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory) -> str:
    from data.tokenizer import train_tokenizer

    prefix = str(tmp_path_factory.mktemp("spm") / "spm")
    tok = train_tokenizer(synthetic_texts(), prefix, VOCAB)
    assert tok.vocab_size == VOCAB
    return prefix + ".model"


@pytest.fixture(scope="module")
def weights_path(tmp_path_factory) -> str:
    """Random weights (biases too, so no check passes by zeros)."""
    from model.nwp import build_model, weight_names
    from model.weights_io import save_weights

    cfg = configs.preset("tiny")
    model = build_model(cfg.model, VOCAB, cfg.data.seq_len, seed=7)
    rng = np.random.default_rng(7)
    arrays = [v.numpy() + rng.normal(0, 0.05, v.shape).astype(np.float32) for v in model.trainable_weights]
    return save_weights(str(tmp_path_factory.mktemp("w") / "weights.npz"), weight_names(model), arrays)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, tokenizer_path, weights_path) -> tuple[str, dict]:
    from tflite_export.bundle import export_bundle

    out = str(tmp_path_factory.mktemp("bundle"))
    manifest = export_bundle(configs.preset("tiny"), weights_path, tokenizer_path, out, model_version=3)
    return out, manifest


@pytest.fixture(scope="module")
def verified(bundle) -> dict:
    from tflite_export.verify import verify_bundle

    cfg = configs.preset("tiny")
    x, y = examples(3 * cfg.train.batch_size + 2, cfg.data.seq_len, VOCAB)
    result = verify_bundle(bundle[0], x, y)
    print(json.dumps(result, indent=1))
    return result


@pytest.mark.slow
def test_manifest_describes_the_files(bundle, weights_path):
    from model.weights_io import load_weights
    from tflite_export.bundle import read_manifest

    out, manifest = bundle
    cfg = configs.preset("tiny")
    assert read_manifest(out) == manifest
    assert manifest["model_version"] == 3
    assert (manifest["vocab_size"], manifest["seq_len"], manifest["batch_size"]) == (
        VOCAB, cfg.data.seq_len, cfg.train.batch_size)
    assert manifest["special_ids"] == {"pad": 0, "unk": 1, "bos": 2, "eos": 3}
    assert set(manifest["files"]) == {"trainable.tflite", "spm.model", "weights.npz",
                                      "infer.tflite", "infer_int8.tflite"}
    names, arrays = load_weights(os.path.join(out, "weights.npz"))
    want_names, want_arrays = load_weights(weights_path)
    assert names == want_names == [w["name"] for w in manifest["weights"]]
    assert [list(a.shape) for a in arrays] == [w["shape"] for w in manifest["weights"]]
    assert all(np.array_equal(a, b) for a, b in zip(arrays, want_arrays))
    sigs = manifest["signatures"]
    assert {"train", "infer", "get_weights", "set_weights", "save", "restore"} <= set(sigs)
    b, t = cfg.train.batch_size, cfg.data.seq_len
    assert sigs["train"]["inputs"] == {"lr": {"shape": [], "dtype": "float32"},
                                       "clip": {"shape": [], "dtype": "float32"},
                                       "x": {"shape": [b, t], "dtype": "int32"},
                                       "y": {"shape": [b, t], "dtype": "int32"}}
    assert sigs["train"]["outputs"] == {"loss": {"shape": [], "dtype": "float32"}}
    assert sigs["infer"]["outputs"]["logits"] == {"shape": [b, t, VOCAB], "dtype": "float32"}
    assert list(sigs["set_weights"]["inputs"]) == names


@pytest.mark.slow
def test_select_tf_ops_are_listed_and_minimal(bundle):
    from tflite_export.convert import custom_ops, select_tf_ops

    out, manifest = bundle
    with open(os.path.join(out, "trainable.tflite"), "rb") as f:
        content = f.read()
    print("Select TF ops:", manifest["select_tf_ops"], "custom ops:", custom_ops(content))
    assert manifest["select_tf_ops"] == select_tf_ops(content)
    assert manifest["select_tf_ops"]  # save/restore need the Flex delegate
    # The unrolled LSTM keeps train/infer/get/set on builtins: only checkpointing needs TF ops.
    assert set(manifest["select_tf_ops"]) <= {"Save", "Restore"}


@pytest.mark.slow
def test_infer_matches_keras(verified):
    assert verified["infer_max_abs_logit_diff"] <= 1e-4


@pytest.mark.slow
def test_train_step_matches_keras_sgd(verified):
    assert verified["train_step_max_abs"] > 1e-4  # the step really moved the weights
    assert verified["train_max_abs_weight_diff"] <= 1e-5
    assert verified["train_loss_diff"] <= 1e-5


@pytest.mark.slow
def test_padded_last_batch_matches_keras_short_batch(verified):
    assert 1 <= verified["padded_rows"] < configs.preset("tiny").train.batch_size
    assert verified["padded_max_abs_weight_diff"] <= 1e-5


@pytest.mark.slow
def test_train_step_clips_the_gradient_as_keras_global_clipnorm(verified):
    # verify_bundle sets the plan's gradient clip at half the batch gradient's norm, so it binds.
    assert verified["clipped_max_abs_weight_diff"] <= 1e-5
    assert 0 < verified["clipped_step_max_abs"] < verified["train_step_max_abs"]


@pytest.mark.slow
def test_set_get_round_trip(verified):
    assert verified["round_trip_max_abs_diff"] == 0.0
    assert verified["ok"], verified["checks"]


@pytest.mark.slow
def test_runtime_reuse_training_and_checkpoints(bundle, tmp_path):
    from model.weights_io import load_weights
    from tflite_export.runtime import TFLiteModel

    out, manifest = bundle
    model = TFLiteModel(os.path.join(out, "trainable.tflite"))
    assert (model.batch_size, model.seq_len) == (manifest["batch_size"], manifest["seq_len"])
    _, start = load_weights(os.path.join(out, "weights.npz"))
    x, y = examples(2 * model.batch_size, model.seq_len, VOCAB, seed=5)
    model.set_weights(start)
    losses = model.train(x, y, lr=0.5, epochs=4)
    assert len(losses) == 8 and losses[-1] < losses[0]
    trained = model.get_weights()
    ckpt = str(tmp_path / "ckpt")
    model.save(ckpt)
    model.set_weights(start)
    model.restore(ckpt)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), trained))
    with pytest.raises(ValueError, match="expected int32"):
        model.train_step(x[:, :-1], y[:, :-1], 0.5)
    with pytest.raises(ValueError, match="expected shape"):
        model.set_weights([w.T for w in start])


@pytest.mark.slow
def test_suggestion_models_match_keras_and_int8_is_reported(verified, bundle):
    _, manifest = bundle
    assert set(manifest["inference"]) == {"float32", "int8"}
    for info in manifest["inference"].values():
        sig = info["signatures"]["suggest"]
        assert sig["inputs"] == {"x": {"shape": [1, manifest["seq_len"]], "dtype": "int32"}}
        assert sig["outputs"] == {"ids": {"shape": [1, 3], "dtype": "int32"},
                                  "probs": {"shape": [1, 3], "dtype": "float32"}}
        assert info["select_tf_ops"] == []
    s = verified["suggest"]
    assert s["contexts"] > 0
    assert s["suggest_max_abs_prob_diff"] <= 1e-5 and s["suggest_top1_prob_gap"] <= 1e-5
    assert verified["checks"]["suggest"]
    assert s["int8"]["words"] == s["float32"]["words"] > 0
    assert "int8_top1_drop" in s and s["int8_bytes_ratio"] < 1.0


@pytest.mark.slow
def test_suggestions_skip_specials_best_first(bundle):
    from data.special_ids import BOS_ID, SPECIAL_IDS
    from tflite_export.inference import Suggester

    out, manifest = bundle
    for info in manifest["inference"].values():
        model = Suggester(os.path.join(out, info["file"]))
        ctx = np.zeros(manifest["seq_len"], np.int32)
        ctx[:3] = [BOS_ID, 10, 11]
        ids, probs = model(ctx)
        assert len(ids) == 3 and not set(ids.tolist()) & set(SPECIAL_IDS)
        assert np.all(np.diff(probs) <= 0) and np.all((probs > 0) & (probs < 1))
        # Trailing PADs are past the end of the context: a longer pad changes nothing.
        ctx2 = ctx.copy()
        ctx2[3] = 12
        assert not np.array_equal(model(ctx2)[1], probs)


NO_FLEX_SCRIPT = r"""
import sys, numpy as np, tensorflow as tf
for path in sys.argv[1:]:
    sys.stderr.write(f"LOADING {path}\n"); sys.stderr.flush()
    it = tf.lite.Interpreter(model_path=path, num_threads=1)
    for name in it.get_signature_list():
        runner = it.get_signature_runner(name)
        if name == "suggest":
            runner(x=np.full((1, runner.get_input_details()["x"]["shape"][1]), 2, np.int32))
    sys.stderr.write(f"DONE {path}\n"); sys.stderr.flush()
"""


@pytest.mark.slow
def test_inference_models_load_without_flex_delegate(bundle):
    """A plain tf.lite.Interpreter creates the Flex delegate only for models with Flex ops:
    it does for trainable.tflite (the control) and must not for the suggestion models."""
    import subprocess
    import sys

    from tflite_export.convert import custom_ops

    out, manifest = bundle
    infer_paths = [os.path.join(out, info["file"]) for info in manifest["inference"].values()]
    for p in infer_paths:
        with open(p, "rb") as f:
            assert custom_ops(f.read()) == {}
    trainable = os.path.join(out, "trainable.tflite")
    proc = subprocess.run([sys.executable, "-c", NO_FLEX_SCRIPT, *infer_paths, trainable],
                          capture_output=True, text=True, timeout=300, check=True)
    log = proc.stderr
    flex_line = "delegate for select TF ops"
    for p in infer_paths:
        section = log.split(f"LOADING {p}\n", 1)[1].split(f"DONE {p}\n", 1)[0]
        assert flex_line not in section, section
    assert flex_line in log.split(f"LOADING {trainable}\n", 1)[1]  # the check can see Flex


def test_context_batch_hand_checked():
    from tflite_export.inference import context_batch

    x = np.array([[2, 7, 8, 0], [2, 9, 0, 0]], np.int32)
    y = np.array([[7, 8, 3, 0], [9, 3, 0, 0]], np.int32)
    ctx, tgt = context_batch(x, y)
    np.testing.assert_array_equal(ctx, [[2, 0, 0, 0], [2, 7, 0, 0], [2, 7, 8, 0], [2, 0, 0, 0], [2, 9, 0, 0]])
    np.testing.assert_array_equal(tgt, [7, 8, 3, 9, 3])


@pytest.mark.slow
def test_tampered_bundle_is_refused(bundle, tmp_path):
    import shutil

    from tflite_export.bundle import read_manifest

    out = str(tmp_path / "copy")
    shutil.copytree(bundle[0], out)
    with open(os.path.join(out, "weights.npz"), "ab") as f:
        f.write(b"x")
    with pytest.raises(ValueError, match="weights.npz: expected sha256"):
        read_manifest(out)
