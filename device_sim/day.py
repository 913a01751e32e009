"""A simulated day: phones on an accelerated diurnal clock against a real collector.

The simulated clock runs `speedup` times faster than the real one (default 144: a day in ten
minutes): simulated time = start + speedup * real seconds elapsed. The collector keeps real time
(its reporting deadline and its Retry-After are real seconds), and the phones read the same
instants on the simulated clock, so the two stay consistent.

    every poll (a fraction of a real second):
      every `tick_s` simulated seconds, recompute who is eligible: idle, charging, unmetered,
        enough RAM and data at that simulated time (fedmath.availability: the model TFF's
        availability-aware selection uses too)
      start sessions (random order, at most `max_inflight` at once on `concurrency` threads)
        for eligible phones that are past the Retry-After the server last gave them
        (and past a cool-down after their last session):
        check in -> turned away: come back after Retry-After
                 -> selected: maybe drop out mid-training (the profile's dropout chance), or give
                    up as a straggler when its simulated session (latency, download at its
                    bandwidth, training at its speed, upload) would outlast `deadline_s` and
                    the plan has a deadline (synchronous rounds; a FedBuff plan has none);
                    otherwise train through TFLite and upload
      watch GET /v1/status for newly published versions

Ineligible phones never check in, so they can never train.
"""

from __future__ import annotations

import collections
import math
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from device_sim.fleet import (
    Examples,
    ModelPool,
    current_version,
    make_phones,
    tflite_factory,
)
from device_sim.phone import (
    ACCEPTED,
    DROPPED,
    FAILED,
    LATE,
    NOT_SELECTED,
    REJECTED,
    Conditions,
    DeviceStore,
    Fate,
    ModelFactory,
    Outcome,
    Phone,
)
from device_sim.transport import Plan, Transport
from fedmath import availability as av


@dataclass(frozen=True)
class DayConfig:
    """The simulated clock and the cost model of a session."""

    sim_hours: float = 24.0  # simulated time to run
    start_hour: float = 0.0  # UTC hour at the start
    speedup: float = 144.0  # simulated seconds per real second (144: a day in 10 minutes)
    tick_s: float = 300.0  # simulated seconds between eligibility updates
    cooldown_s: float = 3600.0  # simulated seconds a phone waits after a session it was selected for
    deadline_s: float = 120.0  # a session longer than this (simulated) is a straggler and gives up
    tokens_per_s: float = 100.0  # training throughput of a speed-1.0 phone (target tokens per second)
    dropout_rate: float | None = None  # chance a selected phone drops out (None: each profile's own)
    seed: int = 0  # profiles, traces, dropouts, check-in order
    availability: av.AvailabilityModel = field(default_factory=av.AvailabilityModel)

    def __post_init__(self) -> None:
        if min(self.sim_hours, self.speedup, self.tick_s, self.deadline_s, self.tokens_per_s) <= 0:
            raise ValueError(f"sim_hours, speedup, tick_s, deadline_s and tokens_per_s must be > 0, got {self}")
        if self.cooldown_s < 0:
            raise ValueError(f"cooldown_s must be >= 0, got {self.cooldown_s}")
        if self.dropout_rate is not None and not 0 <= self.dropout_rate <= 1:
            raise ValueError(f"dropout_rate must be in [0, 1] or None, got {self.dropout_rate}")


def session_seconds(profile: av.DeviceProfile, plan: Plan, steps: int, seq_len: int, download_bytes: int,
                    upload_bytes: int, tokens_per_s: float) -> float:
    """Simulated duration of one session: four round trips, transfers at the profile's bandwidth,
    and training at its speed."""
    rtt = 4 * profile.latency_ms / 1000.0
    down = 8.0 * download_bytes / (1000.0 * profile.down_kbps)
    up = 8.0 * upload_bytes / (1000.0 * profile.up_kbps)
    train = steps * plan.batch_size * seq_len / (tokens_per_s * profile.speed)
    return rtt + down + up + train


@dataclass
class DayReport:
    """What happened over the simulated day."""

    outcomes: list[tuple[float, Outcome]] = field(default_factory=list)  # (simulated time, outcome)
    versions: list[dict[str, Any]] = field(default_factory=list)  # {"version", "sim_hour", "wall_s"}
    hourly: list[dict[str, Any]] = field(default_factory=list)  # per tick: eligible, check-ins, accepted
    start_version: int = 0
    end_status: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0
    num_devices: int = 0
    ram_ineligible: int = 0

    def summary(self) -> dict[str, Any]:
        c = collections.Counter(o.status for _, o in self.outcomes)
        accepted = [o for _, o in self.outcomes if o.status == ACCEPTED]
        priv = self.end_status.get("privacy", {}) if self.end_status else {}
        return {
            "devices": self.num_devices,
            "devices_below_min_ram": self.ram_ineligible,
            "rounds_completed": len(self.versions),
            "rounds_abandoned": self.end_status.get("rounds_abandoned"),
            "checkins": sum(c[s] for s in (ACCEPTED, REJECTED, DROPPED, LATE, NOT_SELECTED, FAILED)),
            "selected": sum(c[s] for s in (ACCEPTED, REJECTED, DROPPED, LATE)),
            "accepted": c[ACCEPTED], "rejected": c[REJECTED], "dropouts": c[DROPPED], "stragglers": c[LATE],
            "not_selected": c[NOT_SELECTED], "failed": c[FAILED],
            "rejections": dict(collections.Counter(o.error for _, o in self.outcomes if o.status == REJECTED)),
            "bytes_up": int(sum(o.bytes_up for _, o in self.outcomes)),
            "bytes_down": int(sum(o.bytes_down for _, o in self.outcomes)),
            "payload_bytes_mean": float(np.mean([o.payload_bytes for o in accepted])) if accepted else None,
            "examples_trained": int(sum(o.num_examples for o in accepted)),
            "epsilon": priv.get("epsilon"), "privacy_mode": priv.get("mode"),
            "noise_multiplier": priv.get("noise_multiplier"),
            "versions": self.versions,
            "wall_s": round(self.wall_s, 2),
            "failures": dict(collections.Counter(o.detail[:80] for _, o in self.outcomes if o.status == FAILED)),
        }


def simulate_day(server_url: str, clients: Mapping[str, Examples], day: DayConfig = DayConfig(), *,
                 concurrency: int = 2, model_factory: ModelFactory | None = None, encoding: str | None = None,
                 error_feedback: bool | None = None, seq_len: int | None = None,
                 on_version: Callable[[int, float], dict | None] | None = None, progress: bool = True,
                 store: DeviceStore | None = None, max_inflight: int | None = None,
                 poll_s: float = 0.1, transport_factory: Callable[[str], Transport] = Transport) -> DayReport:
    """Run the phones over `day.sim_hours` of simulated time against the collector.

    Args:
        server_url: the collector.
        clients: device id -> (x, y).
        day: clock, cost model and seed.
        concurrency: sessions at once (threads).
        model_factory: bundle path -> model (default TFLiteModel, one per thread).
        encoding: force an update encoding (None: the plan's).
        error_feedback: see `Phone`.
        seq_len: tokens per example (default: the examples' width).
        on_version: called (version, simulated hour) when a new version is published; what it
            returns (e.g. held-out accuracy) is stored with the version. It runs on the
            scheduling thread, so the clock keeps going meanwhile.
        progress: tqdm bar over simulated hours.
        store: shared on-"disk" store.
        max_inflight: sessions started but not finished (default 2 x concurrency).
        poll_s: real seconds between scheduling passes.
        transport_factory: URL -> a phone's transport (`device_sim.attestation.transports(issuer)`
            when the collector requires attestation).
    """
    from tqdm.auto import tqdm

    rng = np.random.default_rng([day.seed, 11])
    factory = ModelPool(model_factory or tflite_factory())
    phones: dict[str, Phone] = make_phones(server_url, clients, factory, seed=day.seed, store=store,
                                           encoding=encoding, error_feedback=error_feedback,
                                           transport_factory=transport_factory)
    profiles = {d: av.device_profile(d, day.seed, day.availability) for d in phones}
    seq_len = seq_len or next(iter(clients.values()))[0].shape[1]
    max_inflight = max_inflight or 2 * concurrency
    probe = transport_factory(server_url)
    probe.register(f"day-probe-{uuid.uuid4().hex[:8]}")
    info = probe.model_info()
    weights_bytes = 4 * info.num_params
    report = DayReport(start_version=info.version, num_devices=len(phones),
                       ram_ineligible=sum(p.ram_gb < day.availability.min_ram_gb for p in profiles.values()))
    ids = sorted(phones)
    next_real = {d: -math.inf for d in ids}  # real (monotonic) time before which a phone stays away
    inflight: dict[Future, tuple[str, float]] = {}
    last_version = info.version
    start_s = day.start_hour * av.SECONDS_PER_HOUR
    end_s = start_s + day.sim_hours * av.SECONDS_PER_HOUR

    def fate_for(phone: Phone) -> Callable[[Plan, int, int], Fate]:
        profile = profiles[phone.device_id]

        def fate(plan: Plan, steps: int, n: int) -> Fate:
            if av.drops_out(profile, plan.round, day.seed, day.dropout_rate):
                r = np.random.default_rng([day.seed, av._key(phone.device_id) & 0xFFFFFFFF, plan.round, 3])
                return Fate(drop_after_steps=int(r.integers(0, max(steps, 1))))
            down = weights_bytes + (0 if phone.bundle_path else weights_bytes)  # the bundle holds the weights too
            up = weights_bytes  # float32; compressed encodings are cheaper (measured in bytes_up)
            dur = session_seconds(profile, plan, steps, seq_len, down, up, day.tokens_per_s)
            # a plan without a deadline (a FedBuff collector) has no stragglers: a slow phone's
            # update arrives stale and the collector weighs or refuses it
            return Fate(late=plan.deadline_unix > 0 and dur > day.deadline_s)

        return fate

    def session(d: str, now_s: float) -> Outcome:
        state = av.device_state(profiles[d], now_s, day.seed, day.availability)
        return phones[d].run_round(Conditions(state.idle, state.charging, state.unmetered), fate_for(phones[d]))

    hours = math.ceil(day.sim_hours)
    bar = tqdm(total=hours, desc="simulated day", unit="h", disable=not progress)
    hour_stats: dict[int, dict[str, Any]] = {}
    t0 = time.monotonic()
    sim_now = lambda: start_s + (time.monotonic() - t0) * day.speedup
    eligible: list[str] = []
    tick_at = -math.inf
    last_poll_version = -math.inf

    def collect(block: bool) -> None:
        done = [f for f in inflight if f.done()] if not block else list(inflight)
        for f in done:
            d, s_at = inflight.pop(f)
            o = f.result()
            report.outcomes.append((s_at, o))
            hs = hour_stats.setdefault(int((s_at - start_s) // av.SECONDS_PER_HOUR), collections.Counter())
            hs[o.status] += 1
            if o.status == NOT_SELECTED:
                wait = o.retry_after or 1.0
            elif o.status in (ACCEPTED, REJECTED, DROPPED, LATE):
                wait = day.cooldown_s / day.speedup
            else:
                wait = day.tick_s / day.speedup
            next_real[d] = time.monotonic() + wait

    def watch_versions(now_s: float) -> None:
        nonlocal last_version
        version = current_version(probe)
        hour = now_s / av.SECONDS_PER_HOUR
        while last_version < version:
            last_version += 1
            entry: dict[str, Any] = {"version": last_version, "sim_hour": round(hour, 3),
                                     "wall_s": round(time.monotonic() - t0, 2)}
            h = min(hours - 1, int((now_s - start_s) // av.SECONDS_PER_HOUR))  # the final check runs after the end
            hour_stats.setdefault(h, collections.Counter())["versions"] += 1
            if on_version is not None:
                extra = on_version(last_version, hour)
                if extra:
                    entry.update(extra)
            report.versions.append(entry)

    try:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            while True:
                now_s = sim_now()
                if now_s >= end_s:
                    break
                collect(block=False)
                if now_s - tick_at >= day.tick_s:
                    tick_at = now_s
                    eligible = [d for d in ids if av.is_eligible(profiles[d], now_s, phones[d].num_examples,
                                                                 day.seed, day.availability)]
                    h = int((now_s - start_s) // av.SECONDS_PER_HOUR)
                    hs = hour_stats.setdefault(h, collections.Counter())
                    hs["eligible_sum"] += len(eligible)
                    hs["ticks"] += 1
                    done_h = min(hours, h)
                    if done_h > bar.n:
                        bar.update(done_h - bar.n)
                    bar.set_postfix_str(f"h={(now_s / 3600) % 24:05.2f} eligible={len(eligible)} v={last_version}")
                busy = {d for d, _ in inflight.values()}
                now_r = time.monotonic()
                due = [d for d in eligible if d not in busy and next_real[d] <= now_r]
                room = max_inflight - len(inflight)
                if room > 0 and due:
                    for j in rng.permutation(len(due)):
                        d = due[j]
                        if room == 0:
                            break
                        if not av.is_eligible(profiles[d], now_s, phones[d].num_examples, day.seed,
                                              day.availability):
                            continue  # its state changed since the last eligibility update
                        next_real[d] = math.inf  # until the session ends
                        inflight[pool.submit(session, d, now_s)] = (d, now_s)
                        room -= 1
                if time.monotonic() - last_poll_version >= 0.5:
                    last_poll_version = time.monotonic()
                    watch_versions(now_s)
                time.sleep(poll_s)
            for f in list(inflight):
                f.result()
            collect(block=True)
            watch_versions(sim_now())
        report.end_status = probe.status()
    finally:
        bar.update(hours - bar.n)
        bar.close()
        probe.close()
        for p in phones.values():
            p.transport.close()
    for h in sorted(hour_stats):
        hs = hour_stats[h]
        report.hourly.append({
            "sim_hour": round(day.start_hour + h, 3),
            "eligible": round(hs["eligible_sum"] / hs["ticks"], 1) if hs["ticks"] else None,
            "checkins": sum(hs[k] for k in (ACCEPTED, REJECTED, DROPPED, LATE, NOT_SELECTED, FAILED)),
            "accepted": hs[ACCEPTED], "dropped": hs[DROPPED], "late": hs[LATE], "rejected": hs[REJECTED],
            "versions": hs["versions"]})
    report.wall_s = time.monotonic() - t0
    return report
