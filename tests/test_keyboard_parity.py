"""The numpy forward pass (keyboard.forward) against the exported TFLite models: the `infer`
signature of trainable.tflite to 1e-5 on the logits, for both cells, and the `suggest` model
(infer.tflite) on the strip's probabilities. Slow: it converts models."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import configs
from data.special_ids import BOS_ID, PAD_ID, SPECIAL_IDS
from tests.test_tflite_export import synthetic_texts

VOCAB = 300


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory) -> str:
    from data.tokenizer import train_tokenizer

    prefix = str(tmp_path_factory.mktemp("spm") / "spm")
    train_tokenizer(synthetic_texts(), prefix, VOCAB)
    return prefix + ".model"


def _bundle(tmp_path_factory, tokenizer_path: str, cell: str, inference: bool) -> str:
    from model.nwp import build_model, weight_names
    from model.weights_io import save_weights
    from tflite_export.bundle import export_bundle

    tiny = configs.preset("tiny")
    cfg = dataclasses.replace(tiny, model=dataclasses.replace(tiny.model, cell=cell))
    model = build_model(cfg.model, VOCAB, cfg.data.seq_len, seed=5)
    rng = np.random.default_rng(5)
    # Larger than initial weights, so gates saturate somewhere and biases are not zero.
    arrays = [v.numpy() + rng.normal(0, 0.3, v.shape).astype(np.float32) for v in model.trainable_weights]
    out = tmp_path_factory.mktemp(f"bundle_{cell}")
    weights = save_weights(str(out / "w.npz"), weight_names(model), arrays)
    export_bundle(cfg, weights, tokenizer_path, str(out / "bundle"), inference=inference)
    return str(out / "bundle")


def _inputs(n: int, seq_len: int) -> np.ndarray:
    rng = np.random.default_rng(11)
    x = rng.integers(4, VOCAB, size=(n, seq_len)).astype(np.int32)
    x[:, 0] = BOS_ID
    for i in range(0, n, 2):
        x[i, rng.integers(2, seq_len):] = PAD_ID
    return x


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["lstm", "cifg"])
def test_numpy_forward_matches_tflite_infer(tmp_path_factory, tokenizer_path, cell):
    from keyboard.strip import Keyboard
    from keyboard.forward import logits, softmax
    from tflite_export.runtime import TFLiteModel

    bundle = _bundle(tmp_path_factory, tokenizer_path, cell, inference=cell == "cifg")
    kb = Keyboard.load(bundle)
    assert kb.weights.cell == cell
    phone = TFLiteModel(bundle + "/trainable.tflite", num_threads=1)
    x = _inputs(phone.batch_size, kb.seq_len)
    expected = phone.infer(x)
    got = logits(kb.weights, x)
    diff = float(np.max(np.abs(got - expected)))
    print(f"{cell}: max |numpy - tflite infer| = {diff:.2e} over logits of magnitude {np.max(np.abs(expected)):.1f}")
    assert diff <= 1e-5

    if cell == "cifg":  # the suggestion model a phone runs: same strip, same probabilities
        from tflite_export.inference import Suggester

        suggest = Suggester(bundle + "/infer.tflite")
        for row in x[:6]:
            ids, probs = suggest(row)
            context = [int(i) for i in row if i != PAD_ID]
            mine = softmax(logits(kb.weights, np.asarray(context))[-1])
            np.testing.assert_allclose(mine[ids], probs, atol=1e-5)
            shown = np.argsort(-np.where(np.isin(np.arange(VOCAB), SPECIAL_IDS), -1.0, mine), kind="stable")[:len(ids)]
            assert list(shown) == list(ids)
