"""The SecAgg+ neighbour graph and its parameters (Bell et al. 2020, "Secure Single-Server
Aggregation with (Poly)Logarithmic Overhead", CCS).

Each device shares its secrets with, and masks against, only its k neighbours in a k-regular
Harary graph over a random ordering of the round's devices: position p is joined to positions
p +- 1 .. p +- k/2 (mod n). The Shamir threshold t is the number of a device's neighbours that
must answer the unmasking stage. Two tail bounds pick (k, t), as federated-compute's secagg picks
its Harary graph from the expected dropout and adversary rates:

- correctness: a neighbourhood keeps at least t of its k devices when each drops independently
  with probability `dropout`: P[Binomial(k, 1 - dropout) < t] <= 2^-correctness_bits;
- security: the devices an adversary controls (a fraction `corrupt` of the round) hold fewer
  than t shares of an honest device's secrets: P[Binomial(k, corrupt) >= t] <= 2^-security_bits;
- t > k/2, so a server that claims a device both dropped and survived cannot collect t shares
  of its self-mask seed and t shares of its mask key at once (honest devices answer one or the
  other per neighbour; Bonawitz et al. 2017, Section 4).

The smallest k (even, or n - 1: the complete graph) meeting all three is chosen, with the largest
t that keeps the correctness bound (the most margin against collusion). Rounds too small for any
k to meet the bounds use the complete graph, and `Parameters.correctness_bits` says what they get.
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Parameters:
    """The graph degree `k`, the threshold `t`, and the bounds they meet (in bits: -log2 of the
    failure probability)."""

    devices: int
    degree: int
    threshold: int
    correctness_bits: float
    security_bits: float


def _log_binom_pmf(k: int, i: int, p: float) -> float:
    if p <= 0.0:
        return 0.0 if i == 0 else -math.inf
    if p >= 1.0:
        return 0.0 if i == k else -math.inf
    return (math.lgamma(k + 1) - math.lgamma(i + 1) - math.lgamma(k - i + 1)
            + i * math.log(p) + (k - i) * math.log1p(-p))


def _log2_tail(k: int, lo: int, hi: int, p: float) -> float:
    """log2 P[lo <= Binomial(k, p) <= hi] (-inf when empty)."""
    terms = [_log_binom_pmf(k, i, p) for i in range(max(lo, 0), min(hi, k) + 1)]
    terms = [x for x in terms if x > -math.inf]
    if not terms:
        return -math.inf
    top = max(terms)
    return (top + math.log(sum(math.exp(x - top) for x in terms))) / math.log(2)


def bits(k: int, t: int, dropout: float, corrupt: float) -> tuple[float, float]:
    """(correctness bits, security bits) of threshold t on a degree-k neighbourhood."""
    fail = _log2_tail(k, 0, t - 1, 1.0 - dropout)
    leak = _log2_tail(k, t, k, corrupt)
    return -fail, -leak


def _log2_cumulative(log_pmf: list[float]) -> list[float]:
    """log2 P[X <= i] for i = 0..k from natural-log pmf values (running log-sum-exp)."""
    out, acc = [], -math.inf
    for x in log_pmf:
        if x > -math.inf:
            hi = max(acc, x)
            acc = hi + math.log(math.exp(acc - hi) + math.exp(x - hi))
        out.append(acc / math.log(2))
    return out


def _tails(k: int, dropout: float, corrupt: float) -> tuple[list[float], list[float]]:
    """For t = 0..k+1: (correctness bits, security bits) of threshold t, each list indexed by t,
    from one pass over each binomial's pmf (O(k) per degree instead of O(k) per threshold)."""
    alive = _log2_cumulative([_log_binom_pmf(k, i, 1.0 - dropout) for i in range(k + 1)])
    bad = _log2_cumulative([_log_binom_pmf(k, i, corrupt) for i in reversed(range(k + 1))])[::-1]
    correct = [math.inf] + [-alive[t - 1] for t in range(1, k + 2)]  # P[alive <= t - 1]
    secure = [-bad[t] for t in range(k + 1)] + [math.inf]  # P[corrupt >= t]
    return correct, secure


@functools.lru_cache(maxsize=64)
def choose(devices: int, dropout: float, corrupt: float = 0.05, security_bits: float = 40.0,
           correctness_bits: float = 20.0) -> Parameters:
    """The smallest degree and its largest safe threshold for `devices` devices (module docstring).

    Raises:
        ValueError: fewer than 2 devices, or rates outside [0, 1) (corrupt must also be below 1/2).
    """
    if devices < 2:
        raise ValueError(f"secure aggregation needs at least 2 devices, got {devices}")
    if not 0.0 <= dropout < 1.0 or not 0.0 <= corrupt < 0.5:
        raise ValueError(f"dropout must be in [0, 1) and corrupt in [0, 0.5), got {dropout!r}, {corrupt!r}")
    full = devices - 1
    candidates = list(range(2, full, 2)) + [full]
    for k in candidates:
        correct, secure = _tails(k, dropout, corrupt)
        for t in range(k, k // 2, -1):  # largest t first: the most shares a coalition must hold
            c_bits, s_bits = correct[t], secure[t]
            if c_bits >= correctness_bits:
                if s_bits >= security_bits:
                    return Parameters(devices, k, t, c_bits, s_bits)
                break  # a smaller t is only less secure
    # no degree meets both bounds: the complete graph, t just above k/2 (most tolerant of dropouts)
    k = full
    t = k // 2 + 1
    c_bits, s_bits = bits(k, t, dropout, corrupt)
    return Parameters(devices, k, t, c_bits, s_bits)


def neighbours(devices: int, degree: int, seed: int) -> list[list[int]]:
    """Each device's neighbours (indices 0..devices-1, sorted) in the Harary graph H(degree,
    devices) over the ordering a `seed`-shuffled permutation gives."""
    if not (degree == devices - 1 or (degree % 2 == 0 and 2 <= degree < devices)):
        raise ValueError(f"degree must be even and below {devices}, or {devices - 1}; got {degree}")
    order = list(range(devices))
    random.Random(seed).shuffle(order)
    position = {d: p for p, d in enumerate(order)}
    out: list[list[int]] = []
    for d in range(devices):
        if degree == devices - 1:
            out.append([j for j in range(devices) if j != d])
            continue
        p = position[d]
        near = {order[(p + s) % devices] for s in range(1, degree // 2 + 1)}
        near |= {order[(p - s) % devices] for s in range(1, degree // 2 + 1)}
        out.append(sorted(near))
    return out
