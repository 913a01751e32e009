"""A fleet of simulated phones driving a real collector over HTTP for a number of rounds.

    run_devices(server_url, clients, rounds=R, concurrency=C)
      for each round to complete:
        wave: every phone that has not yet reported for this round runs one session
              (check in -> maybe train -> upload) on a thread pool of C
        until the server publishes a new model version (GET /v1/model), or waves run out;
        phones turned away wait for the server's Retry-After before the next wave

A round is over when the model version moves: that is the only contract the fleet relies on
(docs/http_api.md). Phones that check in after the round closed get the next round's plan, so
their sessions count towards the next round, as on a real fleet. The caller gets each round's
outcomes and the published version; `fetch_published_weights` lets it evaluate that version.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from device_sim.phone import (
    ACCEPTED,
    DROPPED,
    FAILED,
    INELIGIBLE,
    LATE,
    NOT_SELECTED,
    REJECTED,
    Conditions,
    DeviceStore,
    FateFn,
    ModelFactory,
    Outcome,
    Phone,
)
from device_sim.transport import Transport, TransportError
from fedmath import encodings
from fedmath.types import Shapes, Weights

Examples = tuple[np.ndarray, np.ndarray]  # (x, y) int32 [N, T]
Cohort = Callable[[int], Sequence[str]]  # round index (0-based, this run) -> device ids that check in
TransportFactory = Callable[[str], Any]  # server URL -> a Transport (HTTP, or device_sim.inprocess)


class ModelPool:
    """One model per (thread, bundle path): a phone's session borrows its thread's interpreter.

    Building a TFLite interpreter per session would cost more than the training; weights are
    set at the start of every session, so sharing one per thread is safe.

    Args:
        factory: bundle path -> model (e.g. `tflite_export.runtime.TFLiteModel`).
    """

    def __init__(self, factory: ModelFactory) -> None:
        self.factory = factory
        self._local = threading.local()

    def __call__(self, path: str) -> Any:
        models = getattr(self._local, "models", None)
        if models is None:
            models = self._local.models = {}
        if path not in models:
            models[path] = self.factory(path)
        return models[path]


def tflite_factory(num_threads: int = 1) -> ModelFactory:
    """`tflite_export.runtime.TFLiteModel` (imported lazily: it pulls in TensorFlow)."""
    from tflite_export.runtime import TFLiteModel

    return lambda path: TFLiteModel(path, num_threads=num_threads)


@dataclass
class RoundReport:
    """One round as the fleet saw it."""

    index: int  # 0-based round of this run
    round: int | None  # the server's round number (from the plans)
    model_version: int | None  # version published when the round closed (None: never closed)
    outcomes: list[Outcome] = field(default_factory=list)
    waves: int = 0
    wall_s: float = 0.0

    def counts(self) -> dict[str, int]:
        c = collections.Counter(o.status for o in self.outcomes)
        return {s: int(c.get(s, 0)) for s in (ACCEPTED, REJECTED, DROPPED, LATE, NOT_SELECTED,
                                               INELIGIBLE, FAILED)}

    def summary(self) -> dict[str, Any]:
        c = self.counts()
        trained = [o for o in self.outcomes if o.status == ACCEPTED]
        losses = [o.loss for o in trained if o.loss is not None]
        return {
            "index": self.index, "round": self.round, "model_version": self.model_version,
            "completed": self.model_version is not None, **c,
            "stragglers": c[LATE], "dropouts": c[DROPPED],
            "examples": int(sum(o.num_examples for o in trained)),
            "mean_loss": float(np.mean(losses)) if losses else None,
            "bytes_up": int(sum(o.bytes_up for o in self.outcomes)),
            "bytes_down": int(sum(o.bytes_down for o in self.outcomes)),
            "payload_bytes_mean": float(np.mean([o.payload_bytes for o in trained])) if trained else None,
            "waves": self.waves, "wall_s": round(self.wall_s, 3),
            "errors": dict(collections.Counter(o.error for o in self.outcomes if o.error)),
        }


@dataclass
class FleetResult:
    rounds: list[RoundReport]
    wall_s: float

    def summary(self) -> dict[str, Any]:
        per = [r.summary() for r in self.rounds]
        total = lambda k: int(sum(p[k] or 0 for p in per))
        return {
            "rounds": per,
            "rounds_completed": sum(1 for p in per if p["completed"]),
            "accepted": total(ACCEPTED), "rejected": total(REJECTED), "dropouts": total(DROPPED),
            "stragglers": total(LATE), "failed": total(FAILED),
            "bytes_up": total("bytes_up"), "bytes_down": total("bytes_down"),
            "wall_s": round(self.wall_s, 3),
        }

    def outcomes(self) -> list[dict[str, Any]]:
        return [{"index": r.index, **asdict(o)} for r in self.rounds for o in r.outcomes]


def current_version(transport: Transport) -> int:
    """The latest published model version: from GET /v1/status (no device token, not rate
    limited) when it reports one, else GET /v1/model."""
    try:
        version = transport.status().get("model", {}).get("version")
    except TransportError:
        version = None
    if isinstance(version, int):
        return version
    return transport.model_info().version


def fetch_published_weights(server_url: str, version: int, shapes: Shapes,
                            device_id: str = "fleet-evaluator",
                            transport_factory: TransportFactory = Transport) -> Weights:
    """Download model `version` from the server as float32 tensors of `shapes`.

    The weights endpoint needs a device token, so this registers `device_id` once per call
    (through `transport_factory`: with an attestation issuer when the collector requires one).
    """
    dl = _as_evaluator(server_url, device_id, lambda t: t.weights(version), transport_factory)
    return encodings.decode_float32(dl.content or b"", shapes)


def fetch_published_meta(server_url: str, version: int, device_id: str = "fleet-evaluator",
                         transport_factory: TransportFactory = Transport) -> dict[str, Any]:
    """What the server recorded when it published `version` (reports, algorithm, privacy)."""
    return _as_evaluator(server_url, device_id, lambda t: t.model_meta(version), transport_factory)


def _as_evaluator(server_url: str, device_id: str, call: Callable[[Transport], Any],
                  transport_factory: TransportFactory) -> Any:
    t = transport_factory(server_url)
    try:
        t.register(device_id)
        return call(t)
    finally:
        t.close()


def make_phones(server_url: str, clients: Mapping[str, Examples], model_factory: ModelFactory, *,
                seed: int = 0, store: DeviceStore | None = None, encoding: str | None = None,
                error_feedback: bool | None = None, keep_personal: bool = False,
                transport_factory: TransportFactory = Transport) -> dict[str, Phone]:
    """One phone per client, each with its own transport and a noise stream from (seed, index);
    `keep_personal`: see `Phone`."""
    store = store or DeviceStore()
    phones = {}
    for i, (cid, (x, y)) in enumerate(sorted(clients.items())):
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, i, 7])
        phones[cid] = Phone(cid, x, y, transport_factory(server_url), model_factory,
                            rng, store=store, encoding=encoding, error_feedback=error_feedback,
                            keep_personal=keep_personal)
    return phones


def run_devices(server_url: str, clients: Mapping[str, Examples], *, rounds: int, concurrency: int = 2,
                seed: int = 0, model_factory: ModelFactory | None = None, encoding: str | None = None,
                error_feedback: bool | None = None, cohort: Cohort | None = None,
                conditions: Callable[[str, int], Conditions] | None = None,
                fate: Callable[[str, int], FateFn | None] | None = None,
                on_round: Callable[[RoundReport], None] | None = None, max_waves: int = 20,
                max_wait_s: float = 2.0, progress: bool = True, store: DeviceStore | None = None,
                phones: Mapping[str, Phone] | None = None,
                transport_factory: TransportFactory = Transport) -> FleetResult:
    """Run phones (one per client) against the server until `rounds` new versions are published.

    Args:
        server_url: the collector, e.g. "http://127.0.0.1:8000".
        clients: device id -> (x, y) examples, in the user's order.
        rounds: model versions to wait for.
        concurrency: phones in a session at once (threads).
        seed: seeds each phone's noise and rounding streams.
        model_factory: bundle path -> model; default: TFLiteModel, one per thread.
        encoding: force an encoding on every phone (None: the plan's).
        error_feedback: see `Phone`.
        cohort: which devices check in for round index i (parity mode: the TFF sample, in
            order); default all of them.
        conditions: (device id, round index) -> Conditions; default always eligible.
        fate: (device id, round index) -> FateFn for dropouts / deadlines; default none.
        on_round: called with each finished RoundReport (e.g. to evaluate the new version).
        max_waves: give up on a round after this many waves without a new version.
        max_wait_s: cap on the real wait between waves (the server's Retry-After otherwise).
        progress: show a tqdm bar of sessions.
        store: shared on-"disk" store for bundle and weights.
        phones: reuse phones from an earlier call (keeps error-feedback residuals and caches).
        transport_factory: URL -> transport (default HTTP; InProcessCollector.transport for in-process).

    Returns:
        A FleetResult with one RoundReport per round.
    """
    if rounds < 0 or concurrency < 1 or max_waves < 1:
        raise ValueError(f"need rounds >= 0, concurrency >= 1 and max_waves >= 1, got {rounds}, "
                         f"{concurrency}, {max_waves}")
    from tqdm.auto import tqdm

    if phones is None:  # phones given bring their own model factory (and TensorFlow stays unloaded)
        factory = ModelPool(model_factory or tflite_factory())
        phones = make_phones(server_url, clients, factory, seed=seed, store=store, encoding=encoding,
                             error_feedback=error_feedback, transport_factory=transport_factory)
    probe = transport_factory(server_url)
    probe.register("fleet-probe")
    start_version = current_version(probe)
    reports: list[RoundReport] = []
    t_start = time.perf_counter()
    bar = tqdm(total=rounds, desc="device rounds", unit="round", disable=not progress)
    try:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            for i in range(rounds):
                report = RoundReport(i, None, None)
                t0 = time.perf_counter()
                ids = list(cohort(i)) if cohort is not None else sorted(phones)
                unknown = [d for d in ids if d not in phones]
                if unknown:
                    raise ValueError(f"cohort for round {i} names devices with no data: {unknown[:5]}")
                target = (reports[-1].model_version if reports else start_version) + 1
                reported: set[str] = set()
                while report.waves < max_waves:
                    report.waves += 1
                    pending = [phones[d] for d in ids if d not in reported]
                    if not pending:
                        break

                    def session(p: Phone, i: int = i) -> Outcome:
                        cond = conditions(p.device_id, i) if conditions else Conditions()
                        return p.run_round(cond, fate(p.device_id, i) if fate else None)

                    wave = list(pool.map(session, pending))
                    report.outcomes.extend(wave)
                    for o in wave:
                        if o.status in (ACCEPTED, REJECTED, DROPPED, LATE):
                            reported.add(o.device_id)
                        if o.round is not None and report.round is None:
                            report.round = o.round
                    bar.set_postfix_str(f"wave {report.waves}: "
                                        + ", ".join(f"{k}={v}" for k, v in report.counts().items() if v))
                    version = current_version(probe)
                    if version >= target:
                        report.model_version = version
                        break
                    waits = [o.retry_after for o in wave if o.retry_after is not None]
                    time.sleep(min(max_wait_s, min(waits) if waits else 0.2))
                report.wall_s = time.perf_counter() - t0
                reports.append(report)
                bar.update(1)
                if on_round is not None:
                    on_round(report)
                if report.model_version is None:
                    break  # the round never closed; later rounds would not either
    finally:
        bar.close()
        probe.close()
        for p in phones.values():
            p.transport.close()
    return FleetResult(reports, time.perf_counter() - t_start)
