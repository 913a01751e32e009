"""The phone bundle: everything a phone and the server need for one model version.

    BUNDLE/
      trainable.tflite   train / infer / get_weights / set_weights / save / restore (runtime.py)
      infer.tflite       suggest(x[1,T]) -> top-k ids, probs; builtin ops only, float32
      infer_int8.tflite  the same with int8 weights (dynamic-range quantization)
      spm.model          the SentencePiece vocabulary (copied from the data directory)
      weights.npz        the version's weights, keyed by manifest weight names, canonical order
      manifest.json      what is in the files (schema in docs/phone.md)

The server (no TensorFlow) reads manifest.json and weights.npz; the phone simulator reads
trainable.tflite and spm.model. Neither guesses a shape, a name or a special id.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any

import numpy as np

from configs.schema import RunConfig
from data.special_ids import SPECIAL_ID_NAMES
from fedmath.digest import sha256_file
from model.weights_io import load_weights, save_weights

MANIFEST = "manifest.json"
TRAINABLE = "trainable.tflite"
TOKENIZER = "spm.model"
WEIGHTS = "weights.npz"
INFER_FLOAT = "infer.tflite"
INFER_INT8 = "infer_int8.tflite"
FORMAT = "fedkeys-bundle/1"


def _write_bytes(path: str, content: bytes) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(content)
    os.replace(tmp, path)


def export_bundle(cfg: RunConfig, weights_path: str | None, tokenizer_path: str, out_dir: str,
                  model_version: int = 0, inference: bool = True,
                  representative: np.ndarray | None = None) -> dict[str, Any]:
    """Convert the model with the given weights and write the bundle into `out_dir`.

    Args:
        cfg: the run's config (model sizes, data.seq_len, server.batch_size = the static
            on-device batch size, server.learning_rate = the plan's default step size).
        weights_path: a weights.npz (model.weights_io); None exports the model's seeded
            initial weights.
        tokenizer_path: the run's spm.model; its vocabulary size sizes the model.
        out_dir: created if missing; existing bundle files are replaced.
        model_version: the version number the server publishes these weights under.
        inference: also write the builtins-only suggestion models infer.tflite (float32) and
            infer_int8.tflite.
        representative: int32 [N, T] examples from proxy users; when given, the int8 model is
            full-integer quantized with their prefixes as the calibration set (activations int8
            too); otherwise dynamic-range (int8 weights, float activations), which keeps the
            softmax in float: an int8 softmax over V words cannot resolve probabilities below
            1/256, so full-integer top-k is unreliable for this model (docs/phone.md).

    Returns:
        The manifest (also written to out_dir/manifest.json).

    Raises:
        ValueError: if the weights do not fit the model built from cfg and the tokenizer.
    """
    # TensorFlow is imported here so that `bundle.read_manifest` stays importable without it.
    from data.tokenizer import Tokenizer
    from tflite_export.convert import convert_builtins, convert_trainable, signature_specs
    from tflite_export.inference import SuggestNWP, representative_contexts
    from tflite_export.trainable import TrainableNWP

    vocab_size = Tokenizer(tokenizer_path).vocab_size
    seq_len, batch_size = cfg.data.seq_len, cfg.train.batch_size
    module = TrainableNWP(cfg.model, vocab_size, seq_len, batch_size, seed=cfg.train.seed)
    if weights_path is None:
        arrays = [v.numpy() for v in module.model.trainable_weights]
    else:
        names, arrays = load_weights(weights_path)
        if names != module.names:
            raise ValueError(f"{weights_path}: expected weights {module.names}, got {names}")
        module.assign(arrays)

    converted = convert_trainable(module, module.signatures())
    os.makedirs(out_dir, exist_ok=True)
    _write_bytes(os.path.join(out_dir, TRAINABLE), converted.content)
    if os.path.abspath(tokenizer_path) != os.path.abspath(os.path.join(out_dir, TOKENIZER)):
        shutil.copyfile(tokenizer_path, os.path.join(out_dir, TOKENIZER))
    save_weights(os.path.join(out_dir, WEIGHTS), module.names, arrays)

    files = [TRAINABLE, TOKENIZER, WEIGHTS]
    inference_models: dict[str, Any] = {}
    if inference:
        suggest = SuggestNWP(cfg.model, vocab_size, seq_len, cfg.export.top_k, arrays)
        quant = "int8" if representative is not None else "dynamic"
        rep = representative_contexts(representative) if representative is not None else None
        for key, fname, q in (("float32", INFER_FLOAT, "none"), ("int8", INFER_INT8, quant)):
            conv = convert_builtins(suggest, suggest.signatures(), quantize=q, representative=rep)
            _write_bytes(os.path.join(out_dir, fname), conv.content)
            files.append(fname)
            inference_models[key] = {
                "file": fname, "quantization": {"none": "none", "dynamic": "dynamic-range int8 weights",
                                                "int8": "full-integer int8"}[q],
                "bytes": len(conv.content), "signatures": signature_specs(conv.content),
                "select_tf_ops": [],
            }
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "model_version": int(model_version),
        "preset": cfg.preset,
        "model": dataclasses.asdict(cfg.model),
        "vocab_size": int(vocab_size),
        "seq_len": int(seq_len),
        "batch_size": int(batch_size),
        "learning_rate": float(cfg.train.client_learning_rate),
        "special_ids": dict(SPECIAL_ID_NAMES),
        "num_params": int(sum(int(np.size(a)) for a in arrays)),
        "weights": [{"name": n, "shape": list(s), "dtype": "float32"}
                    for n, s in zip(module.names, module.shapes)],
        "trainable": TRAINABLE,
        "signatures": signature_specs(converted.content),
        "select_tf_ops": converted.select_tf_ops,
        "tokenizer": TOKENIZER,
        "weights_file": WEIGHTS,
        "top_k": int(cfg.export.top_k),
        "inference": inference_models,
        "files": {f: sha256_file(os.path.join(out_dir, f)) for f in files},
    }
    tmp = os.path.join(out_dir, MANIFEST + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, os.path.join(out_dir, MANIFEST))
    return manifest


def read_manifest(bundle_dir: str, check_files: bool = True) -> dict[str, Any]:
    """Read BUNDLE/manifest.json, checking each listed file's sha256 when `check_files`.

    Raises:
        ValueError: unknown format, or a file missing or differing from its recorded hash.
    """
    with open(os.path.join(bundle_dir, MANIFEST), encoding="utf-8") as f:
        manifest = json.load(f)
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{bundle_dir}: expected manifest format {FORMAT!r}, got {manifest.get('format')!r}")
    if check_files:
        for name, digest in manifest["files"].items():
            path = os.path.join(bundle_dir, name)
            if not os.path.exists(path):
                raise ValueError(f"{bundle_dir}: manifest lists {name}, which is missing")
            got = sha256_file(path)
            if got != digest:
                raise ValueError(f"{bundle_dir}/{name}: expected sha256 {digest}, got {got}")
    return manifest
