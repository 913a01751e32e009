"""A collector as an edge aggregator (`collector.upstream` = the root collector's URL).

Hierarchical aggregation: an edge collects one region's devices exactly as a collector does
(admission, validation, spool, checkpoints, crash safety: server/rounds.py), but at the close of
a round it does not step a model. It forwards its partial aggregate to the root, which treats
each edge as one client, and adopts the version the root publishes:

    devices ──> edge (round r on root version v) ── K_e reports ──> aggregate: mean m_e, weight W_e
    edge ──> root: check in, upload m_e with num_examples = W_e (upload_id "<edge>-r<r>", so a
             retry after a crash is answered, not counted twice) ──> wait for root version v + 1
    root (an ordinary sync collector, train.aggregator = weighted_mean, goal_count = edges):
             sum_e W_e m_e / sum_e W_e = sum_i w_i u_i / sum_i w_i, the flat weighted mean
    edge: writes root version v + 1 as its own v + 1 and opens round r + 1 on it

The root never sees a device's update, only sums over a region; with secure aggregation at the
edge each partial would itself be a secure round's output. For a linear rule (weighted_mean,
uniform_mean: W_e = examples or reports) the two-level model equals the flat one up to the
float32 rounding of m_e on the wire (tests/test_server_edge.py, benchmarks/hierarchy.py).
A non-linear rule (a median of medians) is not the flat median, so edges refuse one.

If the edge dies mid-round, its acknowledged updates are on its disk; after a restart the round
completes and is forwarded as usual. If it dies after forwarding, the restart forwards again
(the root answers the retry) or, when the root has already moved on, adopts its new version.
"""

from __future__ import annotations

import os
import time
from typing import Any, Optional

import requests

from fedmath import encodings, wire
from fedmath.types import Weights
from server import files
from server.rounds import Collector, weights_sha256


class Upstream:
    """The edge's HTTP client of the root collector (it counts what it sends and receives)."""

    def __init__(self, url: str, device_id: str, timeout_s: float) -> None:
        self.url = url.rstrip("/")
        self.device_id = device_id
        self.timeout_s = timeout_s
        self.session = requests.Session()
        self.token: Optional[str] = None
        self.requests = 0
        self.bytes_up = 0
        self.bytes_down = 0

    def _call(self, method: str, path: str, **kw: Any) -> requests.Response:
        if self.token is None and path != "/v1/devices":
            self._register()
        headers = dict(kw.pop("headers", {}), **({"Authorization": f"Bearer {self.token}"} if self.token else {}))
        r = self.session.request(method, self.url + path, headers=headers, timeout=30, **kw)
        self.requests += 1
        self.bytes_up += len(r.request.body or b"")
        self.bytes_down += len(r.content)
        if r.status_code == 401 and path != "/v1/devices":  # the token expired: once more with a new one
            self.token = None
            return self._call(method, path, headers=headers, **kw)
        return r

    def _register(self) -> None:
        r = self._call("POST", "/v1/devices", json={"device_id": self.device_id})
        if r.status_code != 201:
            raise RuntimeError(f"the root at {self.url} refused edge {self.device_id!r}: {r.status_code} {r.text[:200]}")
        self.token = r.json()["token"]

    def latest_version(self) -> int:
        r = self._call("GET", "/v1/model")
        r.raise_for_status()
        return int(r.json()["version"])

    def checkin(self) -> dict:
        """The root's plan for this edge (waits while the root turns it away)."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            r = self._call("POST", "/v1/checkin", json={"idle": True, "charging": True, "unmetered": True,
                                                          "num_examples": 1})
            if r.status_code == 200:
                return r.json()["plan"]
            if time.monotonic() > deadline:
                raise RuntimeError(f"the root kept turning edge {self.device_id!r} away: {r.status_code} {r.text[:200]}")
            time.sleep(min(float(r.headers.get("Retry-After", 1)), 1.0))

    def upload(self, round_number: int, body: bytes) -> bool:
        """Send a partial; returns whether it completed the root's round (its version is out)."""
        r = self._call("POST", f"/v1/rounds/{round_number}/updates", data=body,
                       headers={"Content-Type": "application/octet-stream"})
        if r.status_code != 202:
            raise RuntimeError(f"the root refused edge {self.device_id!r}'s partial: {r.status_code} {r.text[:200]}")
        return bool(r.json().get("round_complete"))

    def wait_for(self, version: int, shapes: list, published: bool = False) -> Weights:
        """The root's weights of `version`, once it is published (polls with backoff unless
        `published`: this edge's partial completed the root's round)."""
        deadline = time.monotonic() + self.timeout_s
        wait = 0.05
        while not published and self.latest_version() < version:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the root did not publish version {version} within {self.timeout_s:g} s")
            time.sleep(wait)
            wait = min(wait * 1.5, 1.0)
        r = self._call("GET", f"/v1/model/{version}/weights")
        r.raise_for_status()
        return encodings.decode_float32(r.content, shapes)

    def describe(self) -> dict:
        return {"url": self.url, "device_id": self.device_id, "requests": self.requests,
                "bytes_up": self.bytes_up, "bytes_down": self.bytes_down}


class EdgeCollector(Collector):
    """`Collector` that forwards each round's partial aggregate to `collector.upstream`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        settings = args[0] if args else kwargs["settings"]
        cv = settings.collector
        self.upstream = Upstream(cv.upstream, cv.upstream_device_id or f"edge-{os.path.basename(settings.state_dir)}",
                                 cv.upstream_timeout_s)
        super().__init__(*args, **kwargs)
        if not self.aggregator.linear:
            raise ValueError(f"an edge forwards a partial sum, so its rule must be linear; "
                             f"{self.aggregator.describe()} is not")

    def _publish(self, c: Any, rnd: Any, latest: Any, now: float) -> int:
        aggregate = self.sums.aggregate(c, rnd)
        self.sums.forget()
        weight = int(round(aggregate.total_weight))
        if weight < 1 or abs(weight - aggregate.total_weight) > 1e-6:
            raise ValueError(f"an edge forwards an integer weight (examples or reports); the round's is "
                             f"{aggregate.total_weight!r}")
        up = self.upstream
        version = latest.version + 1
        plan = up.checkin()  # after a restart: the plan it already had, if the root is still on it
        done = False
        if plan["model_version"] == latest.version:
            header = wire.UploadHeader(round=plan["round"], model_version=latest.version, num_examples=weight,
                                       encoding="float32", upload_id=f"{up.device_id[:48]}-r{rnd.round}")
            done = up.upload(plan["round"], wire.pack(header, encodings.encode_float32(aggregate.delta)))
        elif plan["model_version"] != version:
            raise RuntimeError(f"edge at version {latest.version}, the root hands out {plan['model_version']}")
        # else the root has moved on: this edge forwarded before it died (or the root's deadline
        # passed without it); either way the root's next version is the one to adopt
        new = up.wait_for(version, self.shapes, published=done)
        path = os.path.join(self.models_dir, f"v{version}.npz")
        files.write_npz(path, self.bundle.names, new, self.fsync)
        meta = {"version": version, "round": rnd.round, "parent_version": latest.version, "source": "upstream",
                "upstream": up.url, "reports": aggregate.reports, "total_weight": aggregate.total_weight,
                "published_unix": now, "epsilon": None, "delta": None, "privacy": self.dp.describe()}
        self._write_meta(version, meta)
        self.store.insert_model(c, version, rnd.round, path, weights_sha256(new), self.dim, now, 0.0, 0.0, meta)
        return version

    def status(self) -> dict:
        return dict(super().status(), upstream=self.upstream.describe())

