"""The messages of the algorithm core: what a device is asked, what it reports, what a round
produces, and why a request is refused. Transports carry them; none of them knows HTTP.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from fedmath.types import Weights


@dataclass(frozen=True)
class Plan:
    """What the server asks a selected device to do (docs/http_api.md, check-in)."""

    round: int
    model_version: int
    local_epochs: int
    batch_size: int
    learning_rate: float  # the device's SGD step size
    clip_norm: float  # 0 or less: no clipping
    noise_std: float  # Gaussian noise the device adds per coordinate after clipping
    encoding: str  # suggested upload encoding (fedmath/encodings.py)
    max_examples: int  # 0: no cap
    deadline_unix: float  # 0: none known yet
    grad_clip: float = 0.0  # clip each SGD step's gradient to this global L2 norm; 0: no clipping

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: Any) -> "Plan":
        """Parse a plan; raises ValueError naming what is missing or malformed."""
        if not isinstance(raw, dict):
            raise ValueError(f"a plan must be a JSON object, got {type(raw).__name__}")
        try:
            return cls(
                round=int(raw["round"]), model_version=int(raw["model_version"]),
                local_epochs=int(raw["local_epochs"]), batch_size=int(raw["batch_size"]),
                learning_rate=float(raw["learning_rate"]),
                clip_norm=float(raw.get("clip_norm") or 0.0),
                noise_std=float(raw.get("noise_std") or 0.0), encoding=str(raw["encoding"]),
                max_examples=int(raw.get("max_examples") or 0),
                deadline_unix=float(raw.get("deadline_unix") or 0.0),
                grad_clip=float(raw.get("grad_clip") or 0.0))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"plan is malformed ({e!r}): {raw!r}") from None


@dataclass
class ClientUpdate:
    """One device's report: its weights delta (trained minus served model) and what it trained on."""

    delta: Weights
    num_examples: int
    device_id: str = ""
    model_version: int = 0
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Aggregate:
    """What an aggregator made of a round: the delta the server optimizer steps along."""

    delta: Weights
    reports: int  # updates that went in
    total_weight: float  # sum of their weights (examples, or one per update)


class Refusal(Exception):
    """A request the server refuses; nothing in its state has changed.

    `code` names the reason (`server/errors.py` maps each code to its HTTP status, the one place
    transport and domain meet); `retry_after` (seconds) tells a device when to come back. (A plain
    exception class, not a frozen dataclass: `contextlib` assigns `__traceback__` on the way out.)
    """

    def __init__(self, code: str, detail: str, retry_after: Optional[int] = None) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.code, "detail": self.detail}
        if self.retry_after is not None:
            out["retry_after"] = self.retry_after
        return out
