"""An in-process stand-in for the collector, with the phone transport's interface.

For benchmarks that ask an algorithmic question (how much does an encoding cost in accuracy?)
rather than a systems one, the HTTP hop adds nothing but time. `LoopbackCollector` runs the same
fedmath kernels the real collector runs (wire.unpack, encodings.decode, RunningSum,
apply_delta) behind `LoopbackTransport`, whose methods and return types are those of
`device_sim.transport.Transport`, so the same `Phone` code runs against either.

It is deliberately minimal: every check-in is selected until the round's goal is met, a round
closes at `goal_count` reports, uploads are checked only for round, version, encoding and
shape. The real server (server/) is what tests and the fleet benchmarks use.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

from device_sim.transport import (
    CheckinResult,
    Download,
    ModelInfo,
    Plan,
    Registration,
    TransferStats,
    UploadResult,
)
from fedmath import encodings, wire
from fedmath.aggregate import RunningSum, apply_delta
from fedmath.types import Weights


class LoopbackCollector:
    """FedAvg rounds in memory: example-weighted mean of decoded updates, server SGD step.

    Args:
        bundle_dir: a phone bundle (trainable.tflite, weights.npz).
        goal_count: reports that close a round.
        plan: fields of the plan handed out (round and model_version are filled in).
        server_learning_rate: step on the mean delta.
    """

    def __init__(self, bundle_dir: str, goal_count: int, plan: dict[str, Any],
                 server_learning_rate: float = 1.0) -> None:
        from model.weights_io import load_weights

        _, self.weights = load_weights(os.path.join(bundle_dir, "weights.npz"))
        self.shapes = [w.shape for w in self.weights]
        with open(os.path.join(bundle_dir, "trainable.tflite"), "rb") as f:
            self.tflite = f.read()
        self.goal_count = goal_count
        self.plan_fields = dict(plan)
        self.server_learning_rate = server_learning_rate
        self.round = 0
        self.version = 0
        self.versions: dict[int, Weights] = {0: [w.copy() for w in self.weights]}
        self.sum = RunningSum.zeros_like(self.weights)
        self.selected: set[str] = set()
        self.reported: set[str] = set()
        self.lock = threading.Lock()

    def transport(self, url: str = "loopback") -> LoopbackTransport:
        return LoopbackTransport(self)

    def plan(self) -> Plan:
        return Plan.from_json({**self.plan_fields, "round": self.round, "model_version": self.version,
                               "deadline_unix": 0.0})

    def checkin(self, device_id: str) -> CheckinResult:
        with self.lock:
            if device_id in self.reported:
                return CheckinResult(503, False, retry_after=1.0, error="already_reported")
            if device_id not in self.selected and len(self.selected) >= self.goal_count:
                return CheckinResult(503, False, retry_after=1.0, error="round_full")
            self.selected.add(device_id)
            return CheckinResult(200, True, self.round, self.plan())

    def upload(self, device_id: str, body: bytes) -> UploadResult:
        header, payload = wire.unpack(body)
        with self.lock:
            if header.round != self.round or header.model_version != self.version or device_id not in self.selected:
                return UploadResult(409, False, error="round_closed")
            try:
                update = encodings.decode(header.encoding, payload, self.shapes)
            except encodings.EncodingError as e:
                return UploadResult(400, False, error="bad_payload", detail=str(e))
            self.sum.add(update, header.num_examples)
            self.reported.add(device_id)
            complete = self.sum.count >= self.goal_count
            if complete:
                self.weights = apply_delta(self.weights, self.sum.mean(), self.server_learning_rate)
                self.version += 1
                self.round += 1
                self.versions[self.version] = [w.copy() for w in self.weights]
                self.sum = RunningSum.zeros_like(self.weights)
                self.selected, self.reported = set(), set()
            return UploadResult(202, True, round_complete=complete)


class LoopbackTransport:
    """`device_sim.transport.Transport`'s interface, answered by a LoopbackCollector."""

    def __init__(self, collector: LoopbackCollector) -> None:
        self.collector = collector
        self.device_id: str | None = None
        self.stats = TransferStats()

    def register(self, device_id: str) -> Registration:
        self.device_id = device_id
        return Registration(device_id, "loopback")

    def checkin(self, idle: bool, charging: bool, unmetered: bool, num_examples: int) -> CheckinResult:
        if not (idle and charging and unmetered and num_examples >= 1):
            return CheckinResult(503, False, retry_after=1.0, error="not_eligible")
        self.stats.count("checkin", 0, 0)
        return self.collector.checkin(self.device_id or "")

    def model_info(self) -> ModelInfo:
        return ModelInfo(self.collector.version, "", int(sum(int(np.prod(s)) for s in self.collector.shapes)))

    def weights(self, version: int, etag: str | None = None) -> Download:
        if etag == f"v{version}":
            return Download(304, None, etag, 0)
        payload = encodings.encode_float32(self.collector.versions[version])
        self.stats.count("weights", 0, len(payload))
        return Download(200, payload, f"v{version}", len(payload))

    def bundle_file(self, name: str) -> Download:
        self.stats.count("bundle", 0, len(self.collector.tflite))
        return Download(200, self.collector.tflite, None, len(self.collector.tflite))

    def upload(self, round_num: int, body: bytes) -> UploadResult:
        self.stats.count("upload", len(body), 0)
        return self.collector.upload(self.device_id or "", body)

    def status(self) -> dict[str, Any]:
        return {"model": {"version": self.collector.version}, "round": {"round": self.collector.round}}

    def close(self) -> None:
        pass
