"""Per-device reputation across rounds: an exponential average of "was this report clean".

    r_0 = 1;   r_{t+1} = decay * r_t + (1 - decay) * (0 if flagged else 1)

A device's weight in a screened round is multiplied by its reputation before the round (so a
device flagged once keeps counting less for a few reports even when it then hides), floored at
MIN_REPUTATION so no weight becomes exactly zero. With decay 0.8 one flag costs 20% and four
clean reports win back 59% of it; three flags in a row leave 0.51. The collector keeps the
values in its SQLite database (server/reputation.py), so every gunicorn worker and a restarted
collector read the same ones; the simulation keeps them in a dict.

Reputation only means something where identities cost something: with attested device keys
(docs/decisions.md, "Device identity by attestation") a flagged device cannot start afresh
under a new id beyond the per-attestation cap.
"""

from __future__ import annotations

from typing import MutableMapping

MIN_REPUTATION = 1e-3
ReputationStore = MutableMapping[str, float]  # device id -> reputation in [MIN_REPUTATION, 1]


def reputation_step(previous: float, flagged: bool, decay: float = 0.8) -> float:
    """The reputation after one more report (module docstring).

    Raises:
        ValueError: previous outside [0, 1] or decay outside [0, 1).
    """
    if not 0.0 <= previous <= 1.0:
        raise ValueError(f"a reputation is in [0, 1], got {previous!r}")
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"reputation decay must be in [0, 1), got {decay!r}")
    return max(MIN_REPUTATION, decay * previous + (1.0 - decay) * (0.0 if flagged else 1.0))
