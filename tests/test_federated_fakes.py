"""A small synthetic stand-in for `data.dataset.FederatedData` (no files, no SentencePiece).

Users type from a shared Markov chain over a tiny vocabulary, each with a user-specific
preference, so a model can learn something in a few rounds. Used by the federated/model tests
that need exact control of the examples; the tiny end-to-end runs use the real data package.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data.special_ids import BOS_ID, EOS_ID, PAD_ID


@dataclass
class _Tok:
    vocab_size: int

    @property
    def words(self) -> list[str]:
        return [f"w{i}" for i in range(self.vocab_size)]


class FakeData:
    """`users`, `client_examples`, `pooled_examples`, `tokenizer.vocab_size` on synthetic ids."""

    def __init__(self, num_users: int = 12, vocab_size: int = 24, seq_len: int = 6, seed: int = 0,
                 messages: tuple[int, int] = (3, 12)) -> None:
        rng = np.random.default_rng(seed)
        self.tokenizer = _Tok(vocab_size)
        self.seq_len = seq_len
        words = np.arange(4, vocab_size)
        nxt = {int(w): rng.choice(words, size=2) for w in words}
        self._splits = {"train": [f"u{i:03d}" for i in range(num_users)],
                        "heldout": [f"h{i:03d}" for i in range(max(2, num_users // 4))], "proxy": []}
        self._msgs: dict[str, list[list[int]]] = {}
        for u in self._splits["train"] + self._splits["heldout"]:
            m = int(rng.integers(*messages))
            bias = rng.random()
            msgs = []
            for _ in range(m):
                w = int(rng.choice(words))
                toks = [BOS_ID, w]
                for _ in range(int(rng.integers(2, 2 * seq_len))):
                    w = int(nxt[w][0] if rng.random() < bias else nxt[w][1])
                    toks.append(w)
                toks.append(EOS_ID)
                msgs.append(toks)
            self._msgs[u] = msgs

    def users(self, split: str) -> list[str]:
        return list(self._splits[split])

    def tokens(self, user_id: str) -> list[list[int]]:
        return self._msgs[user_id]

    def client_examples(self, user_id: str, seq_len: int, max_examples: int = 0):
        from data.sequences import examples

        return examples(self._msgs[user_id], seq_len, max_examples)

    def pooled_examples(self, split: str, seq_len: int, max_examples: int = 0):
        xs, ys = zip(*(self.client_examples(u, seq_len) for u in self.users(split)))
        x, y = np.concatenate(xs), np.concatenate(ys)
        if max_examples:
            x, y = x[:max_examples], y[:max_examples]
        return x, y


def test_fake_data_shapes():
    d = FakeData()
    x, y = d.client_examples("u000", 6)
    assert x.shape == y.shape and x.shape[1] == 6
    assert np.all(x[:, 1:][y[:, :-1] != PAD_ID] == y[:, :-1][y[:, :-1] != PAD_ID])
