"""Central baselines over word ids: interpolated Kneser-Ney trigram and most-frequent-word.

Both are trained on the training users' token lists (`BOS w1 .. wn EOS`, unknown words as
UNK) and predict, for every position of an `x` window, a full distribution over the
vocabulary from at most the two previous tokens *of that window*: exactly the context the
LSTM sees, so their top-k is comparable. They return log-probabilities `[B, T, V]`, which the
one metric definition (model/metrics.py `NextWordAccumulator.update_logits`) scores; `score`
below feeds it chunk by chunk without importing model/ (data/ sits below model/).

Interpolated Kneser-Ney (Kneser and Ney 1995; Chen and Goodman 1998, "An Empirical Study of
Smoothing Techniques for Language Modeling", TR-10-98, eq. 17), one discount per order,
D = n1 / (n1 + 2 n2) from that order's count-of-counts:

    P3(w | u v) = max(c(u v w) - D3, 0) / c(u v .) + D3 N1+(u v .) / c(u v .) * P2(w | v)
    P2(w | v)   = max(N1+(. v w) - D2, 0) / N1+(. v .) + D2 N1+(v .)_cont / N1+(. v .) * P1(w)
    P1(w)       = max(N1+(. w) - D1, 0) / N1+(. .) + D1 |{w: N1+(. w) > 0}| / N1+(. .) / V

where N1+(. v w) counts distinct left contexts u of the bigram (v, w) (continuation counts).
An unseen context falls back to the next order with weight one. The first token of a window
has the left context `_START` (so the first word of a message is predicted from raw counts of
`(_START, BOS, w)`, as with two `<s>` pads); BOS is otherwise an ordinary context token.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Sequence

import numpy as np

from data.special_ids import PAD_ID, SPECIAL_IDS

NEVER_SUGGESTED = SPECIAL_IDS  # the strip never shows a special id
_START = -1  # the left context of a window's first token (like a second <s> pad in Chen-Goodman)


def _discount(counts: Any) -> float:
    """Ney's D = n1 / (n1 + 2 n2) over an iterable of counts, clipped into (0, 1)."""
    hist = Counter(counts)
    n1, n2 = hist.get(1, 0), hist.get(2, 0)
    if n1 == 0:
        return 0.5
    return float(min(max(n1 / (n1 + 2 * n2), 0.05), 0.95))


class KneserNeyTrigram:
    """Interpolated Kneser-Ney trigram over token ids `0 .. vocab_size - 1`.

    Args:
        vocab_size: number of ids (the tokenizer's vocab_size).

    Example:
        lm = KneserNeyTrigram(tok.vocab_size).fit(token_lists)
        lp = lm.log_probs(x)  # [B, T, V]
    """

    def __init__(self, vocab_size: int) -> None:
        if vocab_size <= len(NEVER_SUGGESTED):
            raise ValueError(f"vocab_size must exceed {len(NEVER_SUGGESTED)}, got {vocab_size}")
        self.vocab_size = vocab_size
        self._fitted = False

    def fit(self, token_lists: Sequence[Sequence[int]]) -> "KneserNeyTrigram":
        """Count trigrams, bigrams and continuation counts; return self."""
        tri: Counter = Counter()
        bi: Counter = Counter()
        for toks in token_lists:
            for i in range(1, len(toks)):
                if toks[i] == PAD_ID:
                    break
                bi[(toks[i - 1], toks[i])] += 1
                tri[(toks[i - 2] if i >= 2 else _START, toks[i - 1], toks[i])] += 1
        for (_, w), _c in bi.items():
            if not 0 <= w < self.vocab_size:
                raise ValueError(f"token id must be in [0, {self.vocab_size}), got {w}")
        v_size = self.vocab_size
        # order 3: c(u v w) grouped by (u, v)
        self.d3 = _discount(tri.values())
        self.tri: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, float]] = {}
        grouped: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
        for (u, v, w), c in tri.items():
            grouped[(u, v)].append((w, c))
        for ctx, items in grouped.items():
            ws = np.array([w for w, _ in items], dtype=np.int64)
            cs = np.array([c for _, c in items], dtype=np.float64)
            self.tri[ctx] = (ws, cs, float(cs.sum()))
        # order 2: continuation counts N1+(. v w) = distinct u before (v, w)
        cont2: Counter = Counter()
        for (u, v, w) in tri:
            cont2[(v, w)] += 1
        self.d2 = _discount(cont2.values())
        grouped2: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for (v, w), c in cont2.items():
            grouped2[v].append((w, c))
        self.bi: dict[int, tuple[np.ndarray, np.ndarray, float]] = {}
        for v, items in grouped2.items():
            ws = np.array([w for w, _ in items], dtype=np.int64)
            cs = np.array([c for _, c in items], dtype=np.float64)
            self.bi[v] = (ws, cs, float(cs.sum()))
        # order 1: N1+(. w) = distinct v before w
        cont1 = np.zeros(v_size, dtype=np.float64)
        for (v, w) in bi:
            cont1[w] += 1
        self.d1 = _discount(cont1[cont1 > 0].astype(np.int64).tolist())
        total = cont1.sum()
        if total == 0:
            raise ValueError("cannot fit: expected token lists with at least two tokens, got none")
        seen = float((cont1 > 0).sum())
        self.p1 = np.maximum(cont1 - self.d1, 0.0) / total + self.d1 * seen / total / v_size
        self._p2_cache: dict[int, np.ndarray] = {}
        self._fitted = True
        return self

    def p2(self, v: int) -> np.ndarray:
        """P2(. | v) as a dense vector (cached per v)."""
        out = self._p2_cache.get(v)
        if out is None:
            entry = self.bi.get(v)
            if entry is None:
                out = self.p1
            else:
                ws, cs, total = entry
                out = self.d2 * len(ws) / total * self.p1
                out[ws] += np.maximum(cs - self.d2, 0.0) / total
            self._p2_cache[v] = out
        return out

    def p3(self, u: int | None, v: int) -> np.ndarray:
        """P3(. | u v) as a dense vector; `u=None` when only one context token exists."""
        base = self.p2(v)
        entry = self.tri.get((_START if u is None else u, v))
        if entry is None:
            return base
        ws, cs, total = entry
        out = self.d3 * len(ws) / total * base
        out[ws] += np.maximum(cs - self.d3, 0.0) / total
        return out

    def log_probs(self, x: np.ndarray) -> np.ndarray:
        """float32 `[B, T, V]` log P(next | up to two previous tokens of the window)."""
        if not self._fitted:
            raise ValueError("KneserNeyTrigram.log_probs called before fit")
        x = np.asarray(x)
        out = np.empty(x.shape + (self.vocab_size,), dtype=np.float32)
        cache: dict[tuple[int | None, int], np.ndarray] = {}
        for b in range(x.shape[0]):
            for t in range(x.shape[1]):
                key = (int(x[b, t - 1]) if t > 0 else None, int(x[b, t]))
                vec = cache.get(key)
                if vec is None:
                    vec = cache[key] = np.log(self.p3(*key)).astype(np.float32)
                out[b, t] = vec
        return out


class MostFrequentWord:
    """Always suggests the training set's most frequent words (add-one unigram for perplexity)."""

    def __init__(self, vocab_size: int) -> None:
        if vocab_size <= len(NEVER_SUGGESTED):
            raise ValueError(f"vocab_size must exceed {len(NEVER_SUGGESTED)}, got {vocab_size}")
        self.vocab_size = vocab_size
        self.logp: np.ndarray | None = None

    def fit(self, token_lists: Sequence[Sequence[int]]) -> "MostFrequentWord":
        """Count target tokens (everything after the first token of each list, PAD excluded)."""
        counts = np.ones(self.vocab_size, dtype=np.float64)
        for toks in token_lists:
            arr = np.asarray(toks[1:], dtype=np.int64)
            counts += np.bincount(arr[arr != PAD_ID], minlength=self.vocab_size)[: self.vocab_size]
        self.logp = np.log(counts / counts.sum()).astype(np.float32)
        return self

    def log_probs(self, x: np.ndarray) -> np.ndarray:
        """float32 `[B, T, V]`: the same unigram distribution at every position."""
        if self.logp is None:
            raise ValueError("MostFrequentWord.log_probs called before fit")
        x = np.asarray(x)
        return np.broadcast_to(self.logp, x.shape + (self.vocab_size,))


def score(model: Any, x: np.ndarray, y: np.ndarray, accumulator: Any, chunk: int = 32) -> dict[str, float]:
    """Score a baseline with the shared metric accumulator, `chunk` windows at a time.

    Args:
        model: a fitted KneserNeyTrigram or MostFrequentWord.
        x, y: int32 `[N, T]` windows (data.sequences).
        accumulator: a `model.metrics.NextWordAccumulator` (or anything with
            `update_logits(logits, y)` and `result()`).
        chunk: windows per call, bounding memory at `chunk * T * V` floats.

    Returns:
        `accumulator.result()`.
    """
    if x.shape != y.shape:
        raise ValueError(f"expected x and y of the same shape, got {x.shape} and {y.shape}")
    for start in range(0, x.shape[0], chunk):
        accumulator.update_logits(model.log_probs(x[start:start + chunk]), y[start:start + chunk])
    return accumulator.result()
