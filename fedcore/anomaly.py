"""Anomaly scores for a round's updates, and a rule that down-weights or sets aside the flagged.

Each update u_i of a round (n of them, flattened) gets three numbers:

    norm           ||u_i||, and norm_z = its robust z-score among the round's norms
    cos_previous   cosine of u_i with the previous round's aggregate delta (0 in the first round)
    cos_mean       cosine of u_i with the mean of the round's other updates (leave one out),
                   each counted at most at the round's median norm

A robust z-score is (v - median) / (1.4826 MAD), the MAD floored at 1e-3 of |median| (and 1e-12)
so that identical honest values do not make every difference infinite. An update is flagged

    "norm"       when norm_z > z_max                 (boosted: model replacement, scaled backdoors)
    "direction"  when the z of cos_mean < -z_max     (pulls away from the round: sign flips, noise)
    "previous"   when the z of cos_previous < -z_max (pulls against the model's last step)

All three are computed when the round closes, over every update: the scores do not depend on
arrival order, so an attacker who reports first cannot set the reference the others are judged
by (a streaming running mean would let it). This is the outlier screening of FLTrust-style and
FoolsGold-style defences reduced to statistics the server already has; cosine against the round
and against the last step follows Fung, Yoon, Beschastnikh 2020 ("The Limitations of Federated
Learning in Sybil Settings", FoolsGold) and Cao, Fang, Liu, Gong 2021 ("FLTrust"), without a
root data set on the server.

`Screened` wraps another rule: flagged updates are added with their weight times
`flagged_weight` ("downweight") or not at all ("drop"); every weight is also multiplied by the
device's reputation (fedcore/reputation.py) when a store is given. Weights only matter to a rule
that uses them (the means, norm_bound); median and Krum count each update once, so with them
only "drop" changes anything. Like the robust rules it needs the individual updates, so it
cannot run under secure aggregation (docs/privacy.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from fedcore import aggregator as aggregators
from fedcore.aggregator import Aggregator, register
from fedcore.messages import Aggregate
from fedcore.reputation import ReputationStore, reputation_step
from fedcore.robust import UpdateRows
from fedmath.types import Weights

POLICIES = ("downweight", "drop")
MAD_SCALE = 1.4826  # MAD of a normal distribution is 0.6745 sigma


@dataclass(frozen=True)
class Score:
    """One update's anomaly score (see the module docstring)."""

    norm: float
    norm_z: float
    cos_previous: float
    cos_previous_z: float
    cos_mean: float
    cos_mean_z: float
    reasons: tuple[str, ...] = ()

    @property
    def flagged(self) -> bool:
        return bool(self.reasons)


def robust_z(values: Sequence[float]) -> np.ndarray:
    """(v - median) / (1.4826 MAD) per value, the MAD floored (module docstring); zeros for n < 3."""
    v = np.asarray(values, np.float64)
    if len(v) < 3:
        return np.zeros(len(v))
    med = float(np.median(v))
    mad = float(np.median(np.abs(v - med)))
    scale = MAD_SCALE * max(mad, 1e-3 * abs(med), 1e-12)
    return (v - med) / scale


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def score_rows(rows: np.ndarray, previous: Optional[np.ndarray], z_max: float = 3.0) -> list[Score]:
    """Scores of the n x d updates `rows` (float, one update per row) given the previous
    aggregate (`None` in the first round). Pure: hand-checkable on small vectors."""
    rows = np.asarray(rows, np.float64)
    if rows.ndim != 2:
        raise ValueError(f"expected rows as an n x d array, got shape {rows.shape}")
    n = len(rows)
    norms = np.linalg.norm(rows, axis=1)
    # the reference mean counts each update at most at the median norm, so one boosted update
    # cannot turn the round's direction towards itself (and every honest update against it)
    cap = float(np.median(norms)) if n else 0.0
    bounded = rows * np.minimum(1.0, cap / np.maximum(norms, 1e-300))[:, None]
    total = bounded.sum(axis=0)
    cos_mean = [_cosine(rows[i], (total - bounded[i]) / (n - 1)) if n > 1 else 0.0 for i in range(n)]
    cos_prev = [_cosine(rows[i], previous) if previous is not None else 0.0 for i in range(n)]
    nz, mz = robust_z(norms), robust_z(cos_mean)
    pz = robust_z(cos_prev) if previous is not None else np.zeros(n)
    out = []
    for i in range(n):
        reasons = tuple(name for name, hit in (("norm", nz[i] > z_max), ("direction", mz[i] < -z_max),
                                               ("previous", pz[i] < -z_max)) if hit)
        out.append(Score(float(norms[i]), float(nz[i]), cos_prev[i], float(pz[i]), cos_mean[i], float(mz[i]),
                         reasons))
    return out


@dataclass
class ScreenedRound:
    rows: UpdateRows
    device_ids: list[str] = field(default_factory=list)
    scores: list[Score] = field(default_factory=list)  # filled by `result`
    multipliers: list[float] = field(default_factory=list)  # weight factor each update got


class Screened(Aggregator):
    """Score every update at the close, then hand them to `inner` down-weighted or set aside.

    Args:
        inner: the rule the screened updates go to (a registered name, e.g. "norm_bound").
        policy: "downweight" (weight x flagged_weight) or "drop" (left out).
        z_max: the robust z beyond which a score flags.
        flagged_weight: the weight factor of a flagged update under "downweight", in (0, 1].
        reputation_decay: how much of its reputation a device keeps per report (see reputation.py).
        reputations: where per-device reputation lives (an in-memory dict when None).
    """

    name = "screened"
    linear = False
    tracks_devices = True

    def __init__(self, inner: str = "norm_bound", policy: str = "downweight", z_max: float = 3.0,
                 flagged_weight: float = 0.01, reputation_decay: float = 0.8,
                 reputations: Optional[ReputationStore] = None) -> None:
        if policy not in POLICIES:
            raise ValueError(f"screened policy must be one of {POLICIES}, got {policy!r}")
        if isinstance(z_max, bool) or not isinstance(z_max, (int, float)) or not z_max > 0:
            raise ValueError(f"screened z_max must be a number > 0, got {z_max!r}")
        if isinstance(flagged_weight, bool) or not isinstance(flagged_weight, (int, float)) \
                or not 0 < flagged_weight <= 1:
            raise ValueError(f"screened flagged_weight must be in (0, 1], got {flagged_weight!r}")
        if not 0 <= reputation_decay < 1:
            raise ValueError(f"screened reputation_decay must be in [0, 1), got {reputation_decay!r}")
        self.inner = aggregators.build(inner)
        if isinstance(self.inner, Screened):
            raise ValueError("screened cannot wrap another screened rule")
        self.policy, self.z_max, self.flagged_weight = policy, float(z_max), float(flagged_weight)
        self.reputation_decay = float(reputation_decay)
        self.reputations: ReputationStore = reputations if reputations is not None else {}
        self.previous: Optional[np.ndarray] = None  # the last aggregate, flat
        self.last: Optional[ScreenedRound] = None  # the last closed round, for reports and metrics

    def weight(self, num_examples: int) -> float:
        return self.inner.weight(num_examples)

    def init(self, template: Weights) -> ScreenedRound:
        return ScreenedRound(UpdateRows(template))

    def add(self, state: ScreenedRound, update: Weights, weight: float) -> None:
        self.add_from(state, "", update, weight)

    def add_from(self, state: ScreenedRound, device_id: str, update: Weights, weight: float) -> None:
        """`add` for a known device: its reputation is read and moved at the close."""
        state.rows.add(update, weight)
        state.device_ids.append(device_id)

    def result(self, state: ScreenedRound) -> Aggregate:
        n = len(state.rows)
        if n == 0:
            raise ValueError(f"{self.name}: no updates have been added")
        rows = np.stack(state.rows.rows)
        state.scores = score_rows(rows, self.previous, self.z_max)
        inner_state = self.inner.init(state.rows.unflatten(np.zeros(state.rows.dim, np.float32)))
        kept = 0
        for row, weight, device, score in zip(state.rows.rows, state.rows.weights, state.device_ids, state.scores):
            factor = self.reputations.get(device, 1.0) if device else 1.0
            if score.flagged:
                factor = 0.0 if self.policy == "drop" else factor * self.flagged_weight
            state.multipliers.append(factor)
            if device:
                self.reputations[device] = reputation_step(self.reputations.get(device, 1.0), score.flagged,
                                                           self.reputation_decay)
            if factor > 0:
                self.inner.add(inner_state, state.rows.unflatten(row), weight * factor)
                kept += 1
        if kept == 0:  # everything flagged or set aside: a robust z cannot flag a majority on one test,
            for row, weight in zip(state.rows.rows, state.rows.weights):  # so the round has no centre
                self.inner.add(inner_state, state.rows.unflatten(row), weight)
        agg = self.inner.result(inner_state)
        self.previous = np.concatenate([np.asarray(d, np.float32).reshape(-1) for d in agg.delta])
        self.last = state
        return Aggregate(agg.delta, n, agg.total_weight)

    def flagged(self) -> int:
        """Flagged updates in the last closed round."""
        return sum(s.flagged for s in self.last.scores) if self.last is not None else 0

    def describe(self) -> dict:
        return dict(super().describe(), inner=self.inner.describe(), policy=self.policy, z_max=self.z_max,
                    flagged_weight=self.flagged_weight, reputation_decay=self.reputation_decay)


register(Screened.name, Screened)
