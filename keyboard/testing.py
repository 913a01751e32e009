"""A small real keyboard bundle for tests and benchmarks, made without TensorFlow.

`make_keyboard_bundle` trains a word vocabulary on the given texts (data.tokenizer, the real
SentencePiece model), draws weights of the right shapes for the cell, and writes manifest.json
(the fields `Keyboard.from_bundle` and the collector read, with sha256s), weights.npz and
spm.model. It has no .tflite files: the collector serves what the manifest lists and present.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np

from data.special_ids import SPECIAL_ID_NAMES
from fedmath.digest import sha256_file
from model.weights_io import save_weights

LSTM_NAMES = ("embedding_embeddings", "lstm_lstm_cell_kernel", "lstm_lstm_cell_recurrent_kernel",
              "lstm_lstm_cell_bias", "projection_kernel", "projection_bias", "tied_output_bias")
CIFG_NAMES = ("embedding_embeddings", "cifg_cifg_cell_kernel", "cifg_cifg_cell_recurrent_kernel",
              "cifg_cifg_cell_bias", "cifg_cifg_cell_projection", "tied_output_bias")


def weight_shapes(cell: str, vocab: int, width: int, units: int) -> list[tuple[int, ...]]:
    """The canonical weight shapes of `model.nwp.build_model` (keyboard.forward's docstring)."""
    if cell == "lstm":
        return [(vocab, width), (width, 4 * units), (units, 4 * units), (4 * units,), (units, width), (width,), (vocab,)]
    return [(vocab, width), (width, 3 * units), (width, 3 * units), (3 * units,), (units, width), (vocab,)]


def random_weights(cell: str, vocab: int, width: int, units: int, seed: int = 0, scale: float = 0.3
                   ) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0, scale, s).astype(np.float32) for s in weight_shapes(cell, vocab, width, units)]


def write_weights(path: str, cell: str, arrays: Sequence[np.ndarray]) -> str:
    names = LSTM_NAMES if cell == "lstm" else CIFG_NAMES
    return save_weights(path, [f"w{i:03d}_{n}" for i, n in enumerate(names)], arrays)


def make_keyboard_bundle(directory: str, texts: Sequence[str], cell: str = "lstm", width: int = 8,
                         units: int = 16, seq_len: int = 10, vocab_size: int = 64, seed: int = 0,
                         favourite: str | None = None, model_version: int = 0) -> list[np.ndarray]:
    """Write a bundle whose model is random, except that `favourite` (when given) gets a large
    output bias, so it is every strip's first next word. Returns the weights."""
    from data.tokenizer import Tokenizer, train_tokenizer

    os.makedirs(directory, exist_ok=True)
    prefix = os.path.join(directory, "spm")
    vocab = train_tokenizer(texts, prefix, vocab_size).vocab_size
    os.remove(prefix + ".vocab")
    arrays = random_weights(cell, vocab, width, units, seed)
    if favourite is not None:
        fid = Tokenizer(prefix + ".model").word_to_id(favourite)
        if fid < len(SPECIAL_ID_NAMES):
            raise ValueError(f"favourite {favourite!r} is not in the vocabulary")
        arrays[-1][fid] += 20.0
    names = LSTM_NAMES if cell == "lstm" else CIFG_NAMES
    weights_path = write_weights(os.path.join(directory, "weights.npz"), cell, arrays)
    manifest = {
        "format": "fedkeys-bundle/1", "model_version": model_version, "preset": "test",
        "model": {"embedding_dim": width, "lstm_units": units, "cell": cell},
        "vocab_size": vocab, "seq_len": seq_len, "special_ids": dict(SPECIAL_ID_NAMES),
        "weights": [{"name": f"w{i:03d}_{n}", "shape": list(a.shape), "dtype": "float32"}
                    for i, (n, a) in enumerate(zip(names, arrays))],
        "tokenizer": "spm.model", "weights_file": "weights.npz", "top_k": 3,
        "files": {"spm.model": sha256_file(prefix + ".model"), "weights.npz": sha256_file(weights_path)},
    }
    with open(os.path.join(directory, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
    return arrays
