"""A server in memory that runs a round policy on a clock its caller supplies.

The collector (`server/`) runs the policies durably over HTTP; these classes run the same
policy objects (`fedcore.policy.SyncRounds`, `fedcore.buffered.BufferedAsync`) and the same
`ServerAlgorithm` with no disk and no transport, so a simulation on a virtual clock
(`device_sim.virtual_day`) can drive tens of thousands of clients. Both answer three questions:

    check_in(device, now)          -> Ticket (the round or buffer, the model version to train) or None
    report(ticket, update, now)    -> "accepted" | "late" | "stale" (a refused update is wasted work)
    tick(now)                      -> close what is due (a sync round at its goal or deadline)

Each published version is accounted as one Poisson-sampled Gaussian mechanism with
q = expected reports / population and noise multiplier `noise_multiplier` (the effective z of the
sum: device noise shares or central noise), as the collector accounts it (server/privacy.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from fedcore.algorithm import ServerAlgorithm
from fedcore.buffered import BufferedAsync
from fedcore.messages import Aggregate, ClientUpdate
from fedcore.policy import SyncRounds
from fedmath import accounting
from fedmath.types import Weights

ACCEPTED, LATE, STALE = "accepted", "late", "stale"
NORMALIZE = ("scaled", "unscaled")  # BufferedServer.normalize


@dataclass(frozen=True)
class Ticket:
    """What a device was handed at check-in."""

    device_id: str
    round: int  # sync: the round; buffered: the buffer open at check-in
    version: int  # the model version it trains on
    issued_at: float


@dataclass
class Published:
    version: int
    time: float
    reports: int
    mean_staleness: float
    epsilon: Optional[float]


@dataclass
class _Base:
    algorithm: ServerAlgorithm
    weights: Weights
    population: int  # N for q = expected reports / N
    noise_multiplier: float = 0.0  # effective z of each published sum (0: no accounting)
    delta: float = 0.0  # 0: 1 / N^1.1
    version: int = 0
    discarded: int = 0  # accepted updates thrown away with an abandoned round
    published: list[Published] = field(default_factory=list)
    in_flight: dict[str, Ticket] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.state = self.algorithm.init_state(self.weights)
        self._models: dict[int, Weights] = {0: self.weights}
        self._events: list[tuple[float, float]] = []
        self._agg = self.algorithm.aggregator.init(self.weights)
        self._reports = 0
        self._staleness_sum = 0

    def model(self, version: int) -> Weights:
        """The weights of a version a device may still be training on."""
        return self._models[version]

    def _add(self, update: ClientUpdate, factor: float = 1.0, tau: int = 0) -> None:
        rule = self.algorithm.aggregator
        rule.add(self._agg, update.delta, rule.weight(update.num_examples) * factor)
        self._reports += 1
        self._staleness_sum += tau

    def _aggregate(self) -> Aggregate:
        return self.algorithm.aggregator.result(self._agg)

    def _publish(self, now: float, expected_reports: int, keep: int) -> None:
        aggregate = self._aggregate()
        self.state, self.weights = self.algorithm.apply(self.state, self.weights, aggregate)
        self.version += 1
        self._models[self.version] = self.weights
        for v in [v for v in self._models if v < self.version - keep]:
            del self._models[v]
        eps = None
        if self.noise_multiplier > 0:
            self._events.append((accounting.sampling_probability(expected_reports, self.population),
                                 self.noise_multiplier))
            delta = self.delta or 1.0 / self.population ** 1.1
            eps = float(accounting.dp_epsilon(self._events, delta))
        self.published.append(Published(self.version, now, self._reports,
                                        self._staleness_sum / max(self._reports, 1), eps))
        self._agg = self.algorithm.aggregator.init(self.weights)
        self._reports = 0
        self._staleness_sum = 0


@dataclass
class SyncServer(_Base):
    """`SyncRounds` in memory: select up to the round's slots, publish at the goal or deadline."""

    policy: SyncRounds = field(default_factory=lambda: SyncRounds(8, 1.3, 600.0))

    def __post_init__(self) -> None:
        super().__post_init__()
        self.round = 0
        self._selected = 0
        self._deadline: Optional[float] = None
        self._filled: Optional[float] = None
        self.abandoned = 0
        # per closed round: (first selection, last slot taken or None, close, "publish"|"abandon"):
        # where a round's time goes (waiting for check-ins, or for the reports of its cohort)
        self.round_times: list[tuple[float, Optional[float], float, str]] = []

    def check_in(self, device_id: str, now: float) -> Optional[Ticket]:
        self.tick(now)
        if not self.policy.may_select(self._selected):
            return None
        if self._deadline is None:
            self._deadline = self.policy.deadline(now)
        self._selected += 1
        if not self.policy.may_select(self._selected):
            self._filled = now
        t = Ticket(device_id, self.round, self.version, now)
        self.in_flight[device_id] = t
        return t

    def report(self, ticket: Ticket, update: Optional[ClientUpdate], now: float) -> str:
        """`update` None: the device dropped out (frees nothing: the round's slots are fixed)."""
        self.tick(now)
        self.in_flight.pop(ticket.device_id, None)
        if update is None:
            return LATE
        if ticket.round != self.round or not self.policy.accepts_reports(self._reports, self._deadline, now):
            return LATE
        self._add(update)
        self.tick(now)
        return ACCEPTED

    def accepts(self, ticket: Ticket, now: float) -> bool:
        """Whether an upload now would count (a simulation trains only those that would)."""
        self.tick(now)
        return ticket.round == self.round and self.policy.accepts_reports(self._reports, self._deadline, now)

    def tick(self, now: float) -> None:
        outcome = self.policy.outcome(self._reports, self._deadline, now)
        if outcome == "open":
            return
        opened = self._deadline - self.policy.report_deadline_s if self._deadline is not None else now
        closed = min(now, self._deadline) if self._deadline is not None else now
        self.round_times.append((opened, self._filled, closed, outcome))
        if outcome == "publish":
            self._publish(now, self.policy.goal_count, keep=0)
        else:
            self.abandoned += 1
            self.discarded += self._reports
            self._agg = self.algorithm.aggregator.init(self.weights)
            self._reports = 0
        self.round += 1
        self._selected = 0
        self._deadline = None
        self._filled = None

    def round_time_summary(self) -> dict:
        """Mean simulated seconds per closed round: waiting for its slots to fill, from the last
        slot taken to the close, and in all; and how many rounds closed at the deadline."""
        rt = self.round_times
        if not rt:
            return {"rounds": 0}
        filled = [f - o for o, f, _, _ in rt if f is not None]
        tail = [c - f for _, f, c, _ in rt if f is not None]
        return {"rounds": len(rt), "mean_round_s": round(sum(c - o for o, _, c, _ in rt) / len(rt), 1),
                "mean_fill_s": round(sum(filled) / len(filled), 1) if filled else None,
                "mean_fill_to_close_s": round(sum(tail) / len(tail), 1) if tail else None,
                "never_filled": len(rt) - len(filled),
                "closed_at_deadline": sum(1 for o, _, c, _ in rt if c - o >= self.policy.report_deadline_s - 1e-9)}

    def next_event(self) -> Optional[float]:
        """When `tick` next has something to do without a report (the deadline)."""
        return self._deadline


@dataclass
class BufferedServer(_Base):
    """`BufferedAsync` (FedBuff) in memory: admit up to the concurrency target, weight by
    staleness, publish every K accepted updates."""

    policy: BufferedAsync = field(default_factory=lambda: BufferedAsync(8, 32, 16))
    expires_s: float = float("inf")  # a ticket older than this no longer holds a concurrency slot
    # what the buffer's s(tau)-weighted sum is divided by: "scaled", the sum of the weights with
    # s(tau) folded in (the durable collector's, server/buffered.py: a buffer of uniformly stale
    # updates takes a full step); "unscaled", the sum of the rule's weights before s(tau), which
    # for uniform_mean is FedBuff's Algorithm 1 (Nguyen et al. 2022), (1/K) sum_i s(tau_i) delta_i:
    # a stale buffer takes a step shrunk by its mean s(tau)
    normalize: str = "scaled"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.normalize not in NORMALIZE:
            raise ValueError(f"normalize must be one of {NORMALIZE}, got {self.normalize!r}")
        self._weight_unscaled = 0.0
        self._weight_scaled = 0.0

    def check_in(self, device_id: str, now: float) -> Optional[Ticket]:
        self._expire(now)
        if not self.policy.may_admit(len(self.in_flight)):
            return None
        t = Ticket(device_id, len(self.published), self.version, now)
        self.in_flight[device_id] = t
        return t

    def _expire(self, now: float) -> None:
        for d in [d for d, t in self.in_flight.items() if now - t.issued_at > self.expires_s]:
            del self.in_flight[d]

    def accepts(self, ticket: Ticket, now: float) -> bool:
        return self.policy.accepts(self.version - ticket.version)

    def report(self, ticket: Ticket, update: Optional[ClientUpdate], now: float) -> str:
        self.in_flight.pop(ticket.device_id, None)
        if update is None:
            return LATE
        tau = self.policy.staleness_of(ticket.version, self.version)
        if not self.policy.accepts(tau):
            return STALE
        factor = self.policy.weight(tau)
        self._add(update, factor, tau)
        w = self.algorithm.aggregator.weight(update.num_examples)
        self._weight_unscaled += w
        self._weight_scaled += w * factor
        if self.policy.outcome(self._reports) == "publish":
            self._publish(now, self.policy.buffer_size, keep=self.policy.max_staleness)
            self._weight_unscaled = self._weight_scaled = 0.0
        return ACCEPTED

    def _aggregate(self) -> Aggregate:
        agg = super()._aggregate()
        if self.normalize == "scaled" or self._weight_unscaled <= 0:
            return agg
        shrink = self._weight_scaled / self._weight_unscaled  # the buffer's mean s(tau), weighted
        return Aggregate([d * shrink for d in agg.delta], agg.reports, agg.total_weight)

    def tick(self, now: float) -> None:
        self._expire(now)

    def next_event(self) -> Optional[float]:
        return None

