"""Resumable run state: the whole TFF learning state plus the metric rows so far.

A checkpoint is two files under OUT/checkpoints: `round_NNNNN.npz` holds every leaf of the
`LearningAlgorithmState` (model weights, server optimizer slots, aggregator state such as the
adaptive clip) flattened with `tf.nest`, and `round_NNNNN.json` holds the round number and the
metric rows written so far. The JSON is written last, so a checkpoint without it is ignored.
"""

from __future__ import annotations

import glob
import json
import os
import re
from typing import Any

import numpy as np
import tensorflow as tf

_NAME = re.compile(r"round_(\d{5})\.json$")


def _paths(ckpt_dir: str, round_num: int) -> tuple[str, str]:
    base = os.path.join(ckpt_dir, f"round_{round_num:05d}")
    return base + ".npz", base + ".json"


def save(ckpt_dir: str, round_num: int, state: Any, rows: list[dict]) -> str:
    """Write the state after `round_num` completed rounds; return the JSON path."""
    os.makedirs(ckpt_dir, exist_ok=True)
    npz, js = _paths(ckpt_dir, round_num)
    leaves = [np.asarray(v) for v in tf.nest.flatten(state)]
    tmp = npz + ".tmp.npz"
    np.savez(tmp, **{f"leaf{i:05d}": v for i, v in enumerate(leaves)})
    os.replace(tmp, npz)
    with open(js + ".tmp", "w") as f:
        json.dump({"round": round_num, "leaves": len(leaves), "rows": rows}, f)
    os.replace(js + ".tmp", js)
    return js


def latest(ckpt_dir: str) -> int | None:
    """The highest completed round with a full checkpoint, or None."""
    rounds = [int(m.group(1)) for p in glob.glob(os.path.join(ckpt_dir, "round_*.json"))
              if (m := _NAME.search(p))]
    return max(rounds) if rounds else None


def load(ckpt_dir: str, round_num: int, template: Any) -> tuple[Any, list[dict]]:
    """Restore (state, rows) saved after `round_num`, shaped like `template` (a fresh state).

    Raises:
        ValueError: the checkpoint does not fit the template (a different model or algorithm).
    """
    npz, js = _paths(ckpt_dir, round_num)
    with open(js) as f:
        meta = json.load(f)
    flat_t = tf.nest.flatten(template)
    if meta["leaves"] != len(flat_t):
        raise ValueError(f"checkpoint {js} holds {meta['leaves']} state tensors, this run's state has "
                         f"{len(flat_t)}: a different model or algorithm")
    with np.load(npz) as z:
        leaves = [z[f"leaf{i:05d}"] for i in range(meta["leaves"])]
    for i, (a, t) in enumerate(zip(leaves, flat_t)):
        if np.shape(a) != np.shape(t):
            raise ValueError(f"checkpoint state tensor {i}: shape {np.shape(a)}, expected {np.shape(t)}")
    cast = [np.asarray(a, dtype=np.asarray(t).dtype) if hasattr(t, "dtype") or isinstance(t, np.ndarray)
            else type(t)(a) for a, t in zip(leaves, flat_t)]
    return tf.nest.pack_sequence_as(template, cast), meta["rows"]
