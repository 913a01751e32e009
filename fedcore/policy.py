"""Round policies: when a round admits a device, and when it publishes or is abandoned.

`SyncRounds` is the synchronous lifecycle of Bonawitz et al. 2019 ("Towards Federated Learning
at Scale", section 2): up to ceil(goal_count * over_selection) devices are selected (130% by
default, since 6 to 10% drop out), the first selection starts the reporting deadline, the round
publishes as soon as goal_count reports are in, and at the deadline it publishes what arrived if
that is at least min_reports, else it is abandoned and the model stays as it was.

A policy decides from counts and clocks only; the caller (the collector) owns the state and its
durability. The buffered asynchronous policy (FedBuff, fedcore/buffered.py) sits beside this one
with the same questions: may this device join, may this update count, is a version due.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional

Outcome = Literal["open", "publish", "abandon"]


@dataclass(frozen=True)
class SyncRounds:
    goal_count: int  # reports that close a round
    over_selection: float  # devices selected per round = ceil(goal_count * over_selection)
    report_deadline_s: float  # reporting window from the round's first selection
    min_reports: int = 0  # reports that still publish at the deadline (0 = goal_count)

    def __post_init__(self) -> None:
        if self.goal_count < 1:
            raise ValueError(f"goal_count must be >= 1, got {self.goal_count}")
        if not self.over_selection >= 1.0:
            raise ValueError(f"over_selection must be >= 1.0, got {self.over_selection}")
        if not self.report_deadline_s > 0:
            raise ValueError(f"report_deadline_s must be > 0, got {self.report_deadline_s}")
        if not 0 <= self.min_reports <= self.goal_count:
            raise ValueError(f"min_reports must be in [0, goal_count={self.goal_count}], got {self.min_reports}")

    @property
    def slots(self) -> int:
        """Devices selected per round."""
        return math.ceil(self.goal_count * self.over_selection - 1e-9)

    @property
    def publish_at(self) -> int:
        """Reports that publish at the deadline."""
        return self.min_reports or self.goal_count

    def may_select(self, selected: int) -> bool:
        return selected < self.slots

    def deadline(self, first_selection: float) -> float:
        return first_selection + self.report_deadline_s

    def accepts_reports(self, reports: int, deadline: Optional[float], now: float) -> bool:
        """Whether one more report may still count in a round in this state."""
        return reports < self.goal_count and (deadline is None or now <= deadline)

    def outcome(self, reports: int, deadline: Optional[float], now: float) -> Outcome:
        """What the round does now: stay open, publish, or be abandoned."""
        if reports >= self.goal_count:
            return "publish"
        if deadline is None or now <= deadline:
            return "open"
        return "publish" if reports >= self.publish_at and reports > 0 else "abandon"
