"""Prometheus counters that add up across gunicorn workers.

Each worker counts in memory and writes its totals to the `counters` table (one row per worker
instance and series) at most every `flush_s` seconds and on every scrape; `/metrics` sums the
rows of all instances, past and present, so counters only go up even when workers restart.
Gauges (round, reports, model version, epsilon) are read from the store at scrape time.
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import Optional

from server.storage import StoreQueries

HELP = {
    "fedkeys_http_requests_total": ("counter", "HTTP requests by endpoint and status code."),
    "fedkeys_checkins_total": ("counter", "Check-ins by result (accepted or the reason turned away)."),
    "fedkeys_updates_accepted_total": ("counter", "Updates accepted into a round's sum."),
    "fedkeys_updates_rejected_total": ("counter", "Uploads refused, by error code."),
    "fedkeys_update_bytes_total": ("counter", "Bytes of accepted upload bodies."),
    "fedkeys_upload_seconds_total": ("counter", "Seconds spent handling accepted uploads."),
}


def _labels(labels: dict) -> str:
    return ",".join(f'{k}="{str(v)}"' for k, v in sorted(labels.items()))


class Metrics:
    def __init__(self, store: StoreQueries, flush_s: float = 1.0) -> None:
        self.store = store
        self.flush_s = flush_s
        self.instance = secrets.randbits(62)
        self._values: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._dirty = False
        self._last_flush = 0.0

    def inc(self, name: str, value: float = 1.0, **labels: object) -> None:
        key = (name, _labels(labels))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + value
            self._dirty = True

    def flush(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self._dirty or (not force and now - self._last_flush < self.flush_s):
            return
        with self._lock:
            snapshot = dict(self._values)
            self._dirty = False
            self._last_flush = now
        with self.store.write() as c:
            self.store.save_counters(c, self.instance, snapshot)

    def render(self, gauges: Optional[dict[str, tuple[str, float]]] = None) -> str:
        """Prometheus text exposition format 0.0.4."""
        self.flush(force=True)
        totals = self.store.all_counters()
        lines: list[str] = []
        names = sorted({n for n, _ in totals} | set(HELP))
        for name in names:
            kind, text = HELP.get(name, ("counter", name))
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
            series = sorted((labels, v) for (n, labels), v in totals.items() if n == name)
            for labels, v in series:
                lines.append(f"{name}{{{labels}}} {v:g}" if labels else f"{name} {v:g}")
        for name, (text, value) in sorted((gauges or {}).items()):
            lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge", f"{name} {value:g}"]
        return "\n".join(lines) + "\n"
