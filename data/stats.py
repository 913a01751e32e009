"""Corpus statistics for any source, in one streaming pass: `fedkeys data stats`.

What it reports (definitions in docs/data.md):
- users, messages, words (normalised words, data/text.py);
- messages per user: p50, p90, p99, max, and the volume skew p99 / p50;
- words per message: mean and p50;
- heldout OOV rate: the share of heldout users' word tokens outside the vocabulary a
  `vocab_size` word model trained on the proxy users would keep (the `vocab_size - 4` most
  frequent proxy words, ties broken alphabetically), and the share of heldout word types kept;
- mean Jensen-Shannon divergence (base 2, in [0, 1]) between each user's word distribution
  and the whole population's (Lin 1991, "Divergence measures based on the Shannon entropy"),
  over an evenly spread sample of at most `js_users` users: a measure of how non-IID users are;
- a histogram PNG of messages per user (log-spaced bins).

Users stream one at a time from data.prepare.load_users (the simulator generates them lazily),
so memory holds the population's word counts and the JS sample only: 100,000 simulated users
stay well under 1.5 GB.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from typing import Any

import numpy as np
from tqdm import tqdm

from configs.schema import DataConfig
from data.prepare import load_users
from data.sequences import spread_indices
from data.special_ids import SPECIAL_IDS
from data.splits import split_users
from data.text import words


def js_divergence(user: Counter, population: Counter, population_total: int) -> float:
    """Jensen-Shannon divergence (bits) between a user's and the population's word distribution.

    Only the user's support is visited: for a word the user never typed, M = Q/2 and the Q term
    is q * log2(2), so that part sums to `(1 - sum of q over the user's words)`.

    Args:
        user: the user's word counts (non-empty).
        population: every user's word counts; must contain the user's words.
        population_total: sum of `population`.

    Raises:
        ValueError: if the user has no words or a word is missing from the population.
    """
    total = sum(user.values())
    if total == 0:
        raise ValueError("expected a user with at least one word, got none")
    kl_p = kl_q = q_seen = 0.0
    for w, c in user.items():
        qc = population.get(w, 0)
        if qc == 0:
            raise ValueError(f"word {w!r} of the user is missing from the population counts")
        p, q = c / total, qc / population_total
        m = 0.5 * (p + q)
        kl_p += p * math.log2(p / m)
        kl_q += q * math.log2(q / m)
        q_seen += q
    kl_q += max(0.0, 1.0 - q_seen)  # words only the population has: q * log2(q / (q/2))
    return 0.5 * (kl_p + kl_q)


def top_words(counts: Counter, k: int) -> set[str]:
    """The `k` most frequent words, ties broken alphabetically (deterministic)."""
    return {w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:max(k, 0)]}


def quantiles(values: np.ndarray, qs: tuple[float, ...] = (50, 90, 99)) -> dict[str, float]:
    """`{"p50": .., ...}` of values (linear interpolation), NaN when empty."""
    if values.size == 0:
        return {f"p{q:g}": float("nan") for q in qs}
    return {f"p{q:g}": float(v) for q, v in zip(qs, np.percentile(values, qs))}


def data_stats(cfg: DataConfig, out_dir: str | None = None, js_users: int = 2000,
               progress: bool = True) -> dict[str, Any]:
    """Statistics of the users a DataConfig selects, streamed; see the module docstring.

    Args:
        cfg: the source, filters, seed, split fractions and vocab_size to use.
        out_dir: if given, writes `stats.json` and `messages_per_user.png` there.
        js_users: users in the JS-divergence sample (spread evenly over the population).
        progress: show a tqdm bar.

    Returns:
        The statistics dict (also `stats.json`).
    """
    if js_users < 1:
        raise ValueError(f"js_users must be >= 1, got {js_users}")
    user_ids, stream = load_users(cfg)
    splits = split_users(user_ids, cfg.seed, cfg.heldout_fraction, cfg.proxy_fraction)
    proxy, heldout = set(splits["proxy"]), set(splits["heldout"])
    sampled = {user_ids[i] for i in spread_indices(len(user_ids), js_users)}

    population: Counter = Counter()
    proxy_counts: Counter = Counter()
    heldout_counts: Counter = Counter()
    samples: list[Counter] = []
    lengths: Counter = Counter()
    per_user = np.zeros(len(user_ids), dtype=np.int64)
    for j, (user, messages) in enumerate(tqdm(stream, total=len(user_ids), desc="stats", disable=not progress)):
        counts: Counter = Counter()
        for _, text in messages:
            ws = words(text)
            lengths[len(ws)] += 1
            counts.update(ws)
        per_user[j] = len(messages)
        population.update(counts)
        if user in proxy:
            proxy_counts.update(counts)
        elif user in heldout:
            heldout_counts.update(counts)
        if user in sampled and counts:
            samples.append(counts)

    total_words = sum(population.values())
    vocab = top_words(proxy_counts, cfg.vocab_size - len(SPECIAL_IDS))
    held_tokens = sum(heldout_counts.values())
    held_oov = sum(c for w, c in heldout_counts.items() if w not in vocab)
    js = [js_divergence(c, population, total_words) for c in samples]
    n_msgs = int(per_user.sum())
    length_values = np.array(sorted(lengths), dtype=np.float64)
    length_weights = np.array([lengths[v] for v in sorted(lengths)], dtype=np.float64)
    cum = np.cumsum(length_weights)
    q = quantiles(per_user.astype(np.float64))
    stats: dict[str, Any] = {
        "source": cfg.source,
        "users": len(user_ids),
        "messages": n_msgs,
        "words": int(total_words),
        "distinct_words": len(population),
        "messages_per_user": {**q, "max": int(per_user.max()) if per_user.size else 0,
                              "mean": float(per_user.mean()) if per_user.size else float("nan")},
        "volume_skew_p99_p50": q["p99"] / q["p50"] if q["p50"] else float("nan"),
        "words_per_message": {
            "mean": total_words / n_msgs if n_msgs else float("nan"),
            "p50": float(length_values[np.searchsorted(cum, 0.5 * cum[-1])]) if n_msgs else float("nan"),
        },
        "vocab_size": cfg.vocab_size,
        "heldout_oov_rate": held_oov / held_tokens if held_tokens else float("nan"),
        "heldout_type_coverage": (sum(1 for w in heldout_counts if w in vocab) / len(heldout_counts)
                                  if heldout_counts else float("nan")),
        "js_divergence_mean": float(np.mean(js)) if js else float("nan"),
        "js_users": len(js),
    }
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "stats.json"), "w", encoding="utf-8") as f:
            json.dump(stats, f, indent=2)
            f.write("\n")
        plot_messages_per_user(per_user, os.path.join(out_dir, "messages_per_user.png"), cfg.source)
    return stats


def plot_messages_per_user(per_user: np.ndarray, path: str, title: str) -> None:
    """Write a log-log histogram of messages per user as a PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = max(int(per_user.max()) if per_user.size else 1, 2)
    bins = np.unique(np.round(np.logspace(0, math.log10(top + 1), 30)))
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(per_user, bins=bins, color="#3a6ea5")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("messages per user")
    ax.set_ylabel("users")
    ax.set_title(f"{title}: {per_user.size} users")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
