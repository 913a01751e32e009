"""Server learning-rate schedules, indexed by the server steps taken so far (0, 1, ...).

The TFF simulation computes the same schedule in TensorFlow (`federated/optimizers.py`, which
TFF's `schedule_learning_rate` calls with its step count); tests/test_fedcore.py checks the two
agree. The collector counts steps as published model versions since its bundle's version 0.
"""

from __future__ import annotations

import math

SCHEDULES = ("constant", "cosine")


def learning_rate(schedule: str, base: float, step: int, total_steps: int) -> float:
    """The rate of server step `step` (0-based).

    "constant": `base`. "cosine": a half cosine (Loshchilov and Hutter 2017, no restarts) from
    `base` at step 0 towards 0 after `total_steps`, and 0 from then on.

    Raises:
        ValueError: an unknown schedule, a negative step, or total_steps < 1 for cosine.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if schedule == "constant":
        return float(base)
    if schedule == "cosine":
        if total_steps < 1:
            raise ValueError(f"a cosine schedule needs total_steps >= 1, got {total_steps}")
        i = min(step, total_steps)
        return float(base) * 0.5 * (1.0 + math.cos(math.pi * i / total_steps))
    raise ValueError(f"server learning-rate schedule must be one of {SCHEDULES}, got {schedule!r}")
