"""Helpers shared by the server tests and benchmarks: a fake phone bundle, a config dict, and
upload bodies built the way a phone builds them (fedmath.encodings + fedmath.wire)."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from typing import Any, Optional, Sequence

import numpy as np

from fedmath import encodings, wire
from fedmath.types import Weights
from server import process

TINY_SHAPES: list[tuple[str, tuple[int, ...]]] = [("embedding", (5, 3)), ("kernel", (3, 4)), ("bias", (4,))]

# Fake models with the parameter counts of the presets (float32): default about 0.5M, gboard about 1.4M.
MODEL_SHAPES: dict[str, list[tuple[str, tuple[int, ...]]]] = {
    "tiny": TINY_SHAPES,
    "default": [("embedding", (2000, 64)), ("lstm/kernel", (64, 1024)), ("lstm/recurrent_kernel", (256, 1024)),
                ("lstm/bias", (1024,)), ("projection", (256, 64)), ("output_bias", (2000,))],
    "gboard": [("embedding", (10000, 96)), ("cifg/kernel", (96, 1024)), ("cifg/recurrent_kernel", (256, 1024)),
               ("cifg/bias", (1024,)), ("projection", (256, 96)), ("output_bias", (10000,))],
}


def make_bundle(directory: str, shapes: Sequence[tuple[str, tuple[int, ...]]] = TINY_SHAPES, seed: int = 0) -> Weights:
    """Write manifest.json, weights.npz and dummy files; return the initial weights."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    weights = [rng.normal(0, 0.1, size=s).astype(np.float32) for _, s in shapes]
    np.savez(os.path.join(directory, "weights.npz"), **{n: w for (n, _), w in zip(shapes, weights)})
    files = {}
    for name, content in (("trainable.tflite", b"TFL3 fake model"), ("spm.model", b"fake sentencepiece")):
        with open(os.path.join(directory, name), "wb") as f:
            f.write(content)
        files[name] = hashlib.sha256(content).hexdigest()
    manifest = {"model_version": 0, "weights": [{"name": n, "shape": list(s), "dtype": "float32"} for n, s in shapes],
                "files": files}
    with open(os.path.join(directory, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    return weights


def config_dict(bundle_dir: str, state_dir: str, server: Optional[dict] = None, privacy: Optional[dict] = None,
                collector: Optional[dict] = None, train: Optional[dict] = None) -> dict[str, Any]:
    """A collector config for tests and benchmarks. Attestation is off unless `collector` says
    otherwise: their scripted clients register plain ids (the shipped default is "required")."""
    return {"server": dict(server or {}), "privacy": dict(privacy or {}),
            "collector": {"attestation": "off", **(collector or {})},
            "train": dict(train or {}), "bundle_dir": bundle_dir, "state_dir": state_dir}


def upload_body(round_number: int, model_version: int, update: Weights, num_examples: int,
                upload_id: Optional[str] = None, encoding: str = "float32") -> bytes:
    header = wire.UploadHeader(round=round_number, model_version=model_version, num_examples=num_examples,
                               encoding=encoding, upload_id=upload_id or uuid.uuid4().hex)
    return wire.pack(header, encodings.encode_float32(update))


def random_update(shapes: Sequence[tuple[int, ...]], norm: float, rng: np.random.Generator) -> Weights:
    """A random update with exactly this global L2 norm (float32)."""
    u = [rng.normal(size=s) for s in shapes]
    total = np.sqrt(sum(float(np.sum(a * a)) for a in u))
    return [(a * (norm / total)).astype(np.float32) for a in u]


class ServerProcess(process.ServerProcess):
    """A collector for a raw config dict, written to ROOT/server.json (tests and benchmarks)."""

    def __init__(self, root: str, config: dict, workers: int = 1, threads: int = 4, port: int = 0,
                 access_log: bool = False, worker_class: str | None = None) -> None:
        os.makedirs(root, exist_ok=True)
        self.root = root
        path = os.path.join(root, "server.json")
        with open(path, "w") as f:
            json.dump(config, f)
        super().__init__(path, "127.0.0.1", port, workers, threads, os.path.join(root, "gunicorn.log"), access_log,
                         worker_class)
