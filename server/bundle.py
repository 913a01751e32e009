"""The phone bundle the collector serves: manifest.json, its files, and the initial weights.

`manifest.json` (written by tflite_export) names the trainable tensors in the canonical order,
`{"model_version": 0, "weights": [{"name", "shape", "dtype"}...], "files": {name: sha256}}`, and
`weights.npz` holds the initial weights keyed by those names.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from fedmath.digest import sha256_file
from fedmath.types import Weights

MANIFEST = "manifest.json"
WEIGHTS = "weights.npz"


@dataclass(frozen=True)
class Bundle:
    directory: str
    manifest: dict
    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    files: dict  # servable file name -> sha256 (manifest.json included, hashed here)

    @property
    def num_params(self) -> int:
        return int(sum(int(np.prod(s, dtype=np.int64)) for s in self.shapes))

    def path(self, name: str) -> str | None:
        """The path of a servable file, or None when the bundle does not list it."""
        if name not in self.files:
            return None
        return os.path.join(self.directory, name)


def load_bundle(directory: str) -> Bundle:
    """Read and check manifest.json. Raises ValueError naming what is missing or wrong."""
    path = os.path.join(directory, MANIFEST)
    if not os.path.isfile(path):
        raise ValueError(f"bundle directory {directory!r} has no {MANIFEST}")
    with open(path) as f:
        manifest = json.load(f)
    specs = manifest.get("weights")
    if not isinstance(specs, list) or not specs:
        raise ValueError(f"{path}: 'weights' must be a non-empty list of {{name, shape, dtype}}, got {specs!r}")
    names, shapes = [], []
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not isinstance(spec.get("shape"), list):
            raise ValueError(f"{path}: weights[{i}] must be {{name: str, shape: [int], dtype}}, got {spec!r}")
        if spec.get("dtype", "float32") != "float32":
            raise ValueError(f"{path}: weights[{i}] dtype must be float32, got {spec.get('dtype')!r}")
        if not all(isinstance(d, int) and d >= 0 for d in spec["shape"]):
            raise ValueError(f"{path}: weights[{i}] shape must be non-negative ints, got {spec['shape']!r}")
        names.append(spec["name"])
        shapes.append(tuple(spec["shape"]))
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: weight names must be unique")
    files = manifest.get("files", {})
    if not isinstance(files, dict):
        raise ValueError(f"{path}: 'files' must be an object of name -> sha256, got {type(files).__name__}")
    servable = {}
    for name, sha in files.items():
        if "/" in name or "\\" in name or name.startswith("."):
            raise ValueError(f"{path}: file name {name!r} must be a plain name inside the bundle")
        if os.path.isfile(os.path.join(directory, name)):
            servable[name] = str(sha)
    servable[MANIFEST] = sha256_file(path)
    return Bundle(directory, manifest, tuple(names), tuple(shapes), servable)


def load_initial_weights(bundle: Bundle) -> Weights:
    """weights.npz in manifest order, checked against the manifest's shapes."""
    path = os.path.join(bundle.directory, WEIGHTS)
    if not os.path.isfile(path):
        raise ValueError(f"bundle directory {bundle.directory!r} has no {WEIGHTS}")
    with np.load(path) as npz:
        missing = [n for n in bundle.names if n not in npz.files]
        if missing:
            raise ValueError(f"{path}: missing tensors {missing}; has {npz.files}")
        out = []
        for name, shape in zip(bundle.names, bundle.shapes):
            a = npz[name]
            if tuple(a.shape) != shape:
                raise ValueError(f"{path}: tensor {name!r} has shape {a.shape}, manifest says {shape}")
            out.append(np.asarray(a, dtype=np.float32))
    return out
