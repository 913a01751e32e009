"""Pace steering (Bonawitz et al. 2019, section 2.3) and request rate limits.

A device turned away is told when to come back. The suggestion spreads the returns out: the
expected time until the open round needs devices again, plus a per-device offset over a window
that grows with the population, so that about one round's worth of slots' devices come back per
`base` seconds instead of the whole population at once. The offset is a hash of the device and
the round, so a device asking twice is told the same thing.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from typing import Optional


def retry_after(device_id: str, round_number: int, now: float, *, base: int, cap: int, population: int,
                slots: int, goal: int, reports: int, first_checkin: Optional[float],
                deadline: Optional[float]) -> int:
    """Seconds a turned-away device should wait before checking in again (1 <= value <= cap)."""
    wait = 0.0
    if deadline is not None:
        remaining = max(0.0, deadline - now)
        wait = remaining
        if reports > 0 and first_checkin is not None and now > first_checkin:
            rate = reports / (now - first_checkin)  # reports per second so far
            wait = min(remaining, (goal - reports) / rate)
    window = base * max(1.0, population / max(1, slots))
    h = hashlib.sha256(f"{device_id}:{round_number}".encode()).digest()
    offset = int.from_bytes(h[:8], "little") / 2**64 * window
    return int(max(1, min(cap, math.ceil(base + wait + offset))))


class RateLimiter:
    """Token buckets keyed by device or address, kept per worker process (see docs/http_api.md)."""

    def __init__(self, rate_per_s: float, burst: int, max_keys: int = 100_000) -> None:
        self.rate = float(rate_per_s)
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str, now: float) -> Optional[int]:
        """Spend one token; None when allowed, else the seconds until a token is back."""
        with self._lock:
            tokens, last = self._buckets.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                allowed = True
            else:
                self._buckets[key] = (tokens, now)
                allowed = False
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        if allowed:
            return None
        return max(1, math.ceil((1.0 - tokens) / self.rate))


class SharedRateLimiter:
    """`RateLimiter`'s buckets in the store (server/storage_pg.py `take_token`), so that every
    worker of every collector host spends from one bucket per key: a device gets the configured
    rate however many processes serve it. The buckets run on the database's clock."""

    def __init__(self, store, scope: str, rate_per_s: float, burst: int) -> None:
        self.store = store
        self.scope = scope
        self.rate = float(rate_per_s)
        self.burst = float(burst)
        self._takes = 0

    def take(self, key: str, now: float) -> Optional[int]:
        """Spend one token; None when allowed, else the seconds until a token is back. `now`
        (this host's monotonic clock) is not used: hosts' clocks differ, the database's is one."""
        return self._wait(*self.store.take_token(self.scope, key, self.rate, self.burst))

    def take_for_token(self, token_sha256: str, now_unix: float) -> tuple[Optional[str], Optional[int]]:
        """`take` for the device holding a token, found in the same statement: (device, wait), or
        (None, None) when the token is unknown, revoked or expired at `now_unix` (nothing spent)."""
        device, allowed, tokens = self.store.take_token_for(self.scope, token_sha256, now_unix, self.rate, self.burst)
        return (device, self._wait(allowed, tokens)) if device is not None else (None, None)

    def _wait(self, allowed: bool, tokens: float) -> Optional[int]:
        self._takes += 1
        if self._takes % 4096 == 0:  # a bucket refilled to the brim is the same as no row: keep the table small
            self.store.forget_full_buckets(self.scope, self.burst / self.rate)
        if allowed:
            return None
        return max(1, math.ceil((1.0 - tokens) / self.rate))
