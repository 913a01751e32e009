"""Buffered asynchronous aggregation (FedBuff): the round policy beside `SyncRounds`.

Nguyen et al. 2022, "Federated Learning with Buffered Asynchronous Aggregation" (AISTATS):
the server keeps up to `concurrency` devices training at once, each on whatever model version
was current when it checked in; an update trained on version v arriving while version V is
current has staleness tau = V - v. It is refused if tau > max_staleness, otherwise added to the
buffer with its rule weight times s(tau); every `buffer_size` (K) accepted updates the buffer is
aggregated, the server optimizer takes one step, and a new version is published. Nothing waits
for a straggler: a slow device's update counts, discounted, in a later buffer.

    check-in ──> in flight < concurrency ? plan(current version) : come back later
    upload(trained on v) ──> tau = V - v ──> tau > max_staleness: refused ("too_stale")
                                         └─> buffer.add(delta, rule weight * s(tau))
    K in the buffer ──> aggregate (+ central noise) ──> server optimizer step ──> version V + 1

Staleness weights s(tau) (FLSim's `fl_async` staleness weights; hinge from FedAsync,
Xie et al. 2019, "Asynchronous Federated Optimization"):

| name            | s(tau)                                  | default        |
|-----------------|-----------------------------------------|----------------|
| constant        | 1                                       |                |
| polynomial      | 1 / (1 + tau)^a                         | a = 0.5 (FLSim) |
| hinge           | 1 if tau <= b, else 1 / (1 + a (tau - b)) | a = 10, b = 4 |

Parameters ride on the name as for aggregation rules: "polynomial:a=0.5", "hinge:a=10,b=4".
Since s(tau) <= 1, the largest weight an update can have is unchanged, so central DP noise
calibrated to it (`fedcore.dp.CentralGaussian`) still covers every buffer, and each published
version is accounted as one Gaussian mechanism (q = K / population).

Like `SyncRounds` this decides from counts only; the caller owns state and durability (the
collector: `server/buffered.py`; in memory: `fedcore.buffered_server.BufferedServer`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

STALENESS_WEIGHTS = ("constant", "polynomial", "hinge")
Outcome = Literal["open", "publish"]


@dataclass(frozen=True)
class StalenessWeight:
    """s(tau): the factor an update `tau` versions stale is weighted by (module table)."""

    kind: str = "polynomial"
    a: float = 0.5  # polynomial: exponent; hinge: slope after the hinge
    b: float = 4.0  # hinge: staleness up to which an update counts in full

    def __post_init__(self) -> None:
        if self.kind not in STALENESS_WEIGHTS:
            raise ValueError(f"staleness weight must be one of {STALENESS_WEIGHTS}, got {self.kind!r}")
        if not self.a >= 0 or not self.b >= 0:
            raise ValueError(f"staleness weight parameters must be >= 0, got a={self.a}, b={self.b}")

    @classmethod
    def parse(cls, spec: str) -> "StalenessWeight":
        """"polynomial", "polynomial:a=0.5", "hinge:a=10,b=4", "constant"; ValueError otherwise."""
        name, _, params = str(spec).partition(":")
        defaults = {"constant": {}, "polynomial": {"a": 0.5}, "hinge": {"a": 10.0, "b": 4.0}}
        if name not in defaults:
            raise ValueError(f"staleness weight must be one of {STALENESS_WEIGHTS} (with parameters "
                             f"such as 'polynomial:a=0.5'), got {spec!r}")
        kw = dict(defaults[name])
        for item in filter(None, params.split(",")):
            key, eq, value = item.partition("=")
            if not eq or key not in ("a", "b") or (key not in defaults[name]):
                raise ValueError(f"staleness weight {name!r} takes {sorted(defaults[name]) or 'no parameters'}, "
                                 f"got {item!r} in {spec!r}")
            try:
                kw[key] = float(value)
            except ValueError:
                raise ValueError(f"staleness weight parameter {key} must be a number, got {value!r}") from None
        return cls(name, **kw)

    def __call__(self, tau: int) -> float:
        if tau < 0:
            raise ValueError(f"staleness must be >= 0, got {tau}")
        if self.kind == "constant":
            return 1.0
        if self.kind == "polynomial":
            return float((1.0 + tau) ** -self.a)
        return 1.0 if tau <= self.b else float(1.0 / (1.0 + self.a * (tau - self.b)))

    def describe(self) -> str:
        if self.kind == "constant":
            return "constant"
        if self.kind == "polynomial":
            return f"polynomial:a={self.a:g}"
        return f"hinge:a={self.a:g},b={self.b:g}"


@dataclass(frozen=True)
class BufferedAsync:
    """FedBuff's policy: admission, staleness refusal and weighting, when a version is due."""

    buffer_size: int  # K: accepted updates per published version
    concurrency: int  # devices training at once (admitted, not yet reported or expired)
    max_staleness: int  # an update trained more than this many versions ago is refused
    staleness: StalenessWeight = StalenessWeight()

    def __post_init__(self) -> None:
        if self.buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {self.buffer_size}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.max_staleness < 0:
            raise ValueError(f"max_staleness must be >= 0, got {self.max_staleness}")

    def may_admit(self, in_flight: int) -> bool:
        """Whether one more device may start training now."""
        return in_flight < self.concurrency

    @staticmethod
    def staleness_of(trained_on: int, current: int) -> int:
        """Versions published since the device's model; ValueError for a version from the future."""
        if trained_on > current:
            raise ValueError(f"an update trained on version {trained_on} while {current} is the latest")
        return current - trained_on

    def accepts(self, tau: int) -> bool:
        return 0 <= tau <= self.max_staleness

    def weight(self, tau: int) -> float:
        """s(tau) for an update the policy accepts."""
        return self.staleness(tau)

    def outcome(self, reports: int) -> Outcome:
        """A buffer publishes once it holds K updates; it never expires (nothing is abandoned)."""
        return "publish" if reports >= self.buffer_size else "open"

    def describe(self) -> dict:
        return {"policy": "fedbuff", "buffer_size": self.buffer_size, "concurrency": self.concurrency,
                "max_staleness": self.max_staleness, "staleness_weight": self.staleness.describe()}
