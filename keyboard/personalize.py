"""Per-user personalization in numpy: split a user's history in time, fine-tune the output bias,
score the later messages, and summarise global against personalized over users.

Wang et al. 2019 ("Federated Evaluation of On-device Personalization", arXiv:1910.10252)
evaluate a Gboard-style model personalized on each phone: fine-tune on the user's earlier data,
score on the later, and report the distribution of per-user gains; TFF's
`build_personalization_eval_computation` does the same per client. Here:

- `split_in_time`: a user's messages (time order) cut into the earlier `train_fraction` to
  fine-tune on and the later rest to score (at least one message each side);
- `fine_tune_bias`: plain SGD on the output bias alone, the masked cross-entropy of
  `model.nwp.masked_loss`. The bias does not change the recurrent states, so they are computed
  once and only the [B*T, V] output layer runs per step: the gradient is mean(softmax - onehot)
  over the word targets, exact, no autodiff needed;
- `score_user` / `score_logits`: top-1 (and top-3) of `model.metrics` and keystroke savings of a
  user's windows;
- `summarise`: per-user means, relative gain of the means, share of users improved, quartiles.

Fine-tuning every weight needs backpropagation through the recurrence, which `model/personalize.py`
does with the phones' own SGD step (TensorFlow).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from data.sequences import examples
from data.special_ids import PAD_ID
from keyboard.forward import NWPWeights, hidden_states
from model.metrics import KeystrokeSavings, NextWordAccumulator

Batch = tuple[np.ndarray, np.ndarray]


def split_in_time(token_lists: Sequence[Sequence[int]], seq_len: int, train_fraction: float = 0.5,
                  max_examples: int = 0) -> tuple[Batch, Batch] | None:
    """(earlier windows, later windows) of one user's encoded messages in time order.

    Args:
        token_lists: the user's messages as `BOS .. EOS` ids, oldest first.
        seq_len: T.
        train_fraction: the share of messages (rounded down, at least one) to fine-tune on.
        max_examples: cap on each side's windows (0 = all): the earliest fine-tuning windows,
            the earliest scoring windows.

    Returns:
        None when the user has fewer than two messages (nothing on one side).
    """
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    n = len(token_lists)
    if n < 2:
        return None
    cut = min(n - 1, max(1, int(n * train_fraction)))
    early, late = examples(token_lists[:cut], seq_len, max_examples), examples(token_lists[cut:], seq_len, max_examples)
    if len(early[0]) == 0 or len(late[0]) == 0:
        return None
    return early, late


def _softmax_rows(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def fine_tune_bias(w: NWPWeights, x: np.ndarray, y: np.ndarray, learning_rate: float, epochs: int,
                   batch_size: int) -> NWPWeights:
    """SGD on the output bias only, over in-order batches of (x, y), `epochs` times.

    Each step: b -= lr * mean over the batch's word targets of (softmax(h E^T + b) - onehot(y)),
    the gradient of the masked mean cross-entropy with respect to b (PAD targets excluded, as
    `model.nwp.masked_loss`).
    """
    if epochs < 0 or batch_size < 1 or learning_rate < 0:
        raise ValueError(f"need epochs >= 0, batch_size >= 1, learning_rate >= 0; got {epochs}, {batch_size}, "
                         f"{learning_rate}")
    h = hidden_states(w, np.asarray(x))                          # [N, T, E], fixed while b moves
    base = h.reshape(-1, h.shape[-1]) @ w.embedding.T            # [N*T, V] without the bias
    labels = np.asarray(y).reshape(-1)
    bias = np.array(w.output_bias, np.float64)
    rows_per_window = h.shape[1]
    for _ in range(epochs):
        for start in range(0, len(x), batch_size):
            rows = slice(start * rows_per_window, (start + batch_size) * rows_per_window)
            lb = labels[rows]
            keep = lb != PAD_ID
            if not np.any(keep):
                continue
            p = _softmax_rows(base[rows][keep] + bias)
            p[np.arange(len(p)), lb[keep]] -= 1.0
            bias -= learning_rate * p.mean(axis=0)
    return w.replace_output_bias(bias.astype(np.float32))


def score_user(w: NWPWeights, x: np.ndarray, y: np.ndarray, vocabulary: Sequence[str] | None = None,
               keystroke_rows: int = 0) -> dict[str, float]:
    """top-1, top-3 and words of `model.metrics` on (x, y); with `vocabulary` and
    `keystroke_rows`, keystroke savings on the first that-many windows."""
    from keyboard.forward import logits

    return score_logits(logits(w, np.asarray(x)), y, vocabulary, keystroke_rows)


def score_logits(z: np.ndarray, y: np.ndarray, vocabulary: Sequence[str] | None = None,
                 keystroke_rows: int = 0) -> dict[str, float]:
    """`score_user` from scores `z` [N, T, V] (logits or log-probabilities) instead of weights."""
    acc = NextWordAccumulator(ks=(1, 3))
    acc.update_logits(z, np.asarray(y))
    out = acc.result()
    if vocabulary is not None and keystroke_rows:
        ks = KeystrokeSavings(vocabulary, slots=3)
        ks.update_logits(z[:keystroke_rows], np.asarray(y)[:keystroke_rows])
        out.update(ks.result())
    return out


@dataclass(frozen=True)
class UserResult:
    user: str
    global_scores: dict
    personalized: dict


def summarise(results: Sequence[UserResult]) -> dict[str, float]:
    """Global against personalized over users, each user weighing the same.

    Returns:
        users, global_top1, personalized_top1 (means of per-user top-1), relative_gain
        (personalized / global - 1 of those means), share_improved (users whose top-1 rose),
        share_unchanged (a tie counts as not improved), share_worse, gain_quartiles (per-user
        top-1 differences, 25/50/75%), and the same means for keystroke savings when scored.
    """
    if not results:
        raise ValueError("no users to summarise")
    g = np.array([r.global_scores["top1"] for r in results])
    p = np.array([r.personalized["top1"] for r in results])
    out = {"users": len(results), "global_top1": float(g.mean()), "personalized_top1": float(p.mean()),
           "relative_gain": float(p.mean() / g.mean() - 1.0) if g.mean() > 0 else None,
           "share_improved": float(np.mean(p > g)), "share_unchanged": float(np.mean(p == g)),
           "share_worse": float(np.mean(p < g)),
           "gain_quartiles": [float(q) for q in np.percentile(p - g, [25, 50, 75])]}
    if all("keystroke_savings" in r.global_scores and "keystroke_savings" in r.personalized for r in results):
        gk = np.array([r.global_scores["keystroke_savings"] for r in results])
        pk = np.array([r.personalized["keystroke_savings"] for r in results])
        out.update({"global_keystroke_savings": float(gk.mean()), "personalized_keystroke_savings": float(pk.mean()),
                    "keystroke_share_improved": float(np.mean(pk > gk))})
    return out
