"""Reading "every canary within the reference p95" when many canaries are tested at once.

With DP, a canary's exposure should be distributed like a never-inserted reference sequence's,
so each canary lies above the references' 95th percentile with probability about 0.05 even
when nothing was memorized. The literal goal "every one of n canaries within the p95" then fails
by chance with probability 1 - 0.95^n (0.46 for n = 12). Two readings keep the test honest
without loosening what it asks:

- count: how many canaries exceed the p95 against the n * 0.05 expected by chance, and the
  binomial tail P(X >= k) of seeing at least that many (a small tail means more canaries stand
  out than chance explains);
- Bonferroni: every canary within the reference percentile 100 * (1 - 0.05 / n), the
  family-wise version of the same 5% test (Dunn 1961).

Pure numpy and math; benchmarks/canary_exposure.py reports both beside the literal goal.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p).

    Raises:
        ValueError: n < 0, k outside [0, n + 1] or p outside [0, 1].
    """
    if n < 0 or not 0 <= k <= n + 1 or not 0.0 <= p <= 1.0:
        raise ValueError(f"binomial_tail needs 0 <= k <= n + 1 and 0 <= p <= 1, got k={k}, n={n}, p={p}")
    return float(sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k, n + 1)))


def within_reference(exposures: Sequence[float], references: Sequence[float], level: float = 0.05) -> dict:
    """The literal and the multiple-comparison readings of "every exposure within the p(1 - level)".

    Args:
        exposures: the canaries' exposures (bits), n of them.
        references: never-inserted sequences' exposures (bits).
        level: the per-canary false-alarm rate of the literal test (0.05 = the p95).

    Returns:
        {"n", "percentile", "threshold", "above", "expected_above", "p_at_least_above"
        (binomial tail: chance of that many or more above when nothing was memorized),
        "literal_ok" (none above), "chance_literal_fails" (1 - (1 - level)^n),
        "bonferroni_percentile", "bonferroni_threshold", "bonferroni_above", "bonferroni_ok"}.

    Raises:
        ValueError: no exposures or references, or level outside (0, 1).
    """
    e, r = np.asarray(exposures, dtype=float), np.asarray(references, dtype=float)
    if e.size == 0 or r.size == 0 or not 0.0 < level < 1.0:
        raise ValueError(f"within_reference needs exposures, references and 0 < level < 1, got {e.size}, "
                         f"{r.size}, {level}")
    n = int(e.size)
    q, qb = 100 * (1 - level), 100 * (1 - level / n)
    t, tb = float(np.percentile(r, q)), float(np.percentile(r, qb))
    above, above_b = int(np.sum(e > t)), int(np.sum(e > tb))
    return {"n": n, "percentile": q, "threshold": t, "above": above, "expected_above": n * level,
            "p_at_least_above": binomial_tail(above, n, level), "literal_ok": above == 0,
            "chance_literal_fails": 1 - (1 - level) ** n,
            "bonferroni_percentile": qb, "bonferroni_threshold": tb, "bonferroni_above": above_b,
            "bonferroni_ok": above_b == 0}
