"""`FederatedData`: a prepared DATA_DIR read back as per-user clients and pooled arrays.

This is what every later stage holds: federated/ samples `users("train")` and asks each for
`client_examples`, evaluation uses `pooled_examples("heldout")`, and a simulated phone reads
one user's shard. Nothing here imports TensorFlow (data/tfdata.py turns arrays into tf.data).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from configs.schema import DataConfig
from data.sequences import Batch, examples, spread_indices
from data.shards import read_texts, shard_path
from data.splits import SPLITS, read_splits
from data.tokenizer import Tokenizer


class FederatedData:
    """Read access to a directory written by `data.prepare.prepare`.

    Args:
        data_dir: the prepared directory.

    Raises:
        FileNotFoundError: if splits.json or spm.model is missing.
    """

    def __init__(self, data_dir: str) -> None:
        self.data_dir = os.fspath(data_dir)
        model = os.path.join(self.data_dir, "spm.model")
        if not os.path.exists(model):
            raise FileNotFoundError(f"no spm.model in {self.data_dir}: run data.prepare.prepare first")
        self.tokenizer = Tokenizer(model)
        self.splits = read_splits(os.path.join(self.data_dir, "splits.json"))
        self._split_of = {u: name for name in SPLITS for u in self.splits[name]}
        self._tokens: dict[str, list[list[int]]] = {}

    @property
    def config(self) -> DataConfig:
        """The DataConfig this directory was prepared with."""
        with open(os.path.join(self.data_dir, "config.json"), encoding="utf-8") as f:
            raw = json.load(f)
        return DataConfig(**raw.get("data", raw))

    @property
    def summary(self) -> dict[str, Any]:
        """summary.json as written by prepare."""
        with open(os.path.join(self.data_dir, "summary.json"), encoding="utf-8") as f:
            return json.load(f)

    def users(self, split: str) -> list[str]:
        """User ids of one split, sorted.

        Raises:
            ValueError: if split is not train, heldout or proxy.
        """
        if split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
        return list(self.splits[split])

    def split_of(self, user_id: str) -> str:
        """The split holding `user_id`.

        Raises:
            ValueError: for an unknown user.
        """
        try:
            return self._split_of[user_id]
        except KeyError:
            raise ValueError(f"unknown user id {user_id!r}: not in any split of {self.data_dir}") from None

    def shard(self, user_id: str) -> str:
        """Path of a user's shard file (what a simulated phone holds)."""
        return shard_path(self.data_dir, self.split_of(user_id), user_id)

    def messages(self, user_id: str) -> list[str]:
        """A user's raw messages in time order."""
        return read_texts(self.shard(user_id))

    def tokens(self, user_id: str) -> list[list[int]]:
        """A user's messages encoded as `BOS .. EOS` id lists (cached)."""
        ids = self._tokens.get(user_id)
        if ids is None:
            ids = self._tokens[user_id] = self.tokenizer.encode(self.messages(user_id))
        return ids

    def client_examples(self, user_id: str, seq_len: int, max_examples: int = 0) -> Batch:
        """One client's `(x, y)`, int32 `[N, seq_len]`: its first `max_examples` windows (0 = all).

        The first windows in time order, so a capped client trains on the same examples every
        round and on every runtime (TFF and phone).
        """
        return examples(self.tokens(user_id), seq_len, max_examples)

    def pooled_examples(self, split: str, seq_len: int, max_examples: int = 0) -> Batch:
        """All windows of a split's users, concatenated in user order.

        With `max_examples > 0`, that many windows spread evenly over the pooled set
        (`sequences.spread_indices`), so a capped evaluation still covers every user.
        """
        xs, ys = [], []
        for user in self.users(split):
            x, y = self.client_examples(user, seq_len)
            xs.append(x)
            ys.append(y)
        if not xs:
            empty = np.zeros((0, seq_len), dtype=np.int32)
            return empty, empty.copy()
        x, y = np.concatenate(xs), np.concatenate(ys)
        keep = spread_indices(x.shape[0], max_examples)
        return x[keep], y[keep]
