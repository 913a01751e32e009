"""A simulated day on a virtual clock: phones against a round policy in memory, no HTTP.

`device_sim.day` runs phones against the real collector on an accelerated wall clock, so the
phones' own TFLite training sets its pace and HTTP bounds the fleet. This module runs the same
phones' traits (fedmath.availability: profiles, diurnal eligibility, dropouts; `day.session_seconds`:
the simulated session length) against `fedcore.memory_server.SyncServer` or `BufferedServer`,
which run the collector's policies (`SyncRounds`, `BufferedAsync`) and server algorithm, as a
discrete-event simulation: simulated time jumps from event to event, so the fleet can be as
large as memory allows and the cost is the training of the updates that count.

    every tick_s: eligible phones past their cool-down schedule a check-in within the tick
    check-in (still eligible?) -> server.check_in -> None: retry after retry_s
                                               -> ticket: session of session_seconds(profile)
                                                  (or a dropout part-way, the profile's chance)
    session end -> would the server count it now? yes: train on the ticket's version, report
                                                   no: wasted (late for sync, stale for FedBuff)
    (a sync round abandoned at its deadline wastes the updates it had accepted too)
    then a cool-down of cooldown_s (only a phone that was admitted)

An update the server would refuse is not trained (training is a pure function of the model
version and the phone's data, so skipping it changes nothing but the cost); it is counted as
trained and wasted, as a phone would have trained it.
"""

from __future__ import annotations

import collections
import heapq
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np

from device_sim.day import DayConfig, session_seconds
from fedcore.memory_server import ACCEPTED, BufferedServer, SyncServer, Ticket
from fedcore.messages import ClientUpdate
from fedmath import availability as av
from fedmath.types import Weights

Server = Union[SyncServer, BufferedServer]
TrainFn = Callable[[str, Weights, Ticket], ClientUpdate]  # device, start weights, ticket -> update


@dataclass(frozen=True)
class SessionCost:
    """What a session costs a phone: steps of local training and bytes each way."""

    steps: Callable[[str], int]  # device -> local steps (epochs x batches)
    batch_size: int
    seq_len: int
    download_bytes: int
    upload_bytes: int


@dataclass
class VirtualReport:
    counts: collections.Counter = field(default_factory=collections.Counter)
    staleness: collections.Counter = field(default_factory=collections.Counter)  # accepted updates by tau
    evals: list[dict[str, Any]] = field(default_factory=list)  # {"hour", "version", ...on_eval}
    bytes_up: int = 0
    bytes_down: int = 0
    stopped_at_hour: Optional[float] = None  # on_progress ended the day early

    def summary(self) -> dict[str, Any]:
        c = self.counts
        return {"checkins": c["checkin"], "admitted": c["admitted"], "not_admitted": c["not_admitted"],
                "dropouts": c["dropout"], "updates_trained": c["accepted"] + c["wasted"],
                "updates_accepted": c["accepted"] - c["discarded"], "updates_wasted": c["wasted"] + c["discarded"],
                "discarded_with_abandoned_rounds": c["discarded"],
                "bytes_up": self.bytes_up, "bytes_down": self.bytes_down,
                "staleness": {str(k): v for k, v in sorted(self.staleness.items())},
                "stopped_at_hour": self.stopped_at_hour}


def simulate(server: Server, examples: Mapping[str, int], train: TrainFn, cost: SessionCost,
             day: DayConfig = DayConfig(), *, retry_s: float = 60.0, eval_every_s: float = 1800.0,
             on_eval: Optional[Callable[[Weights], dict]] = None,
             on_progress: Optional[Callable[[dict], Optional[bool]]] = None) -> VirtualReport:
    """Run `day.sim_hours` of simulated time of the phones in `examples` (device -> examples).

    Args:
        server: the policy in memory (its clock is this simulation's).
        examples: device id -> number of training examples (eligibility needs at least one).
        train: trains one phone from the ticket's weights (clipping and noise included).
        cost: the session's steps and bytes (the simulated duration comes from each profile).
        day: clock, cool-down, speed, dropout and availability (`deadline_s` is not used: the
            server's own deadline or staleness decides what counts).
        retry_s: simulated seconds a phone the server turned away waits.
        eval_every_s: simulated seconds between calls of `on_eval` (and one at the end).
        on_eval: current weights -> metrics stored with the hour and version.
        on_progress: called with each evaluation's entry and the counts so far (a long run's log);
            when it returns True the day ends there (`VirtualReport.stopped_at_hour`).
    """
    rng = np.random.default_rng([day.seed, 19])
    ids = sorted(examples)
    profiles = {d: av.device_profile(d, day.seed, day.availability) for d in ids}
    start = day.start_hour * av.SECONDS_PER_HOUR
    end = start + day.sim_hours * av.SECONDS_PER_HOUR
    rep = VirtualReport()
    busy: set[str] = set()
    next_ok = {d: -math.inf for d in ids}
    sessions = collections.Counter()  # per device: sessions admitted (the dropout draw's index)
    heap: list[tuple[float, int, str, Any]] = []
    seq = 0

    def push(t: float, kind: str, payload: Any) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(heap, (t, seq, kind, payload))

    def evaluate(t: float) -> bool:
        entry: dict[str, Any] = {"hour": round((t - start) / av.SECONDS_PER_HOUR, 4), "version": server.version}
        if on_eval is not None:
            entry.update(on_eval(server.weights))
        rep.evals.append(entry)
        if on_progress is not None and on_progress(dict(entry, trained=rep.counts["accepted"] + rep.counts["wasted"],
                                                        accepted=rep.counts["accepted"])):
            rep.stopped_at_hour = entry["hour"]
            return True
        return False

    t = start
    while t < end:
        push(t, "tick", None)
        t += day.tick_s
    t = start
    while t <= end:
        push(t, "eval", None)
        t += eval_every_s
    while heap:
        now, _, kind, payload = heapq.heappop(heap)
        if now > end:
            break
        due = server.next_event()
        if due is not None and due < now:
            server.tick(due)  # a sync deadline between events closes the round at its time
        if kind == "eval":
            if evaluate(now):
                break
        elif kind == "tick":
            for d in ids:
                if d not in busy and next_ok[d] <= now and av.is_eligible(
                        profiles[d], now, examples[d], day.seed, day.availability):
                    busy.add(d)
                    push(now + float(rng.uniform(0, day.tick_s)), "checkin", d)
        elif kind == "checkin":
            d = payload
            if not av.is_eligible(profiles[d], now, examples[d], day.seed, day.availability):
                busy.discard(d)
                continue
            rep.counts["checkin"] += 1
            ticket = server.check_in(d, now)
            if ticket is None:
                rep.counts["not_admitted"] += 1
                busy.discard(d)
                next_ok[d] = now + retry_s
                continue
            rep.counts["admitted"] += 1
            rep.bytes_down += cost.download_bytes
            p = profiles[d]
            dur = session_seconds(p, _PlanCost(cost.batch_size), cost.steps(d), cost.seq_len,
                                  cost.download_bytes, cost.upload_bytes, day.tokens_per_s)
            sessions[d] += 1
            if av.drops_out(p, sessions[d], day.seed, day.dropout_rate):
                push(now + dur * float(rng.uniform(0, 1)), "dropout", ticket)
            else:
                push(now + dur, "report", ticket)
        elif kind == "dropout":
            rep.counts["dropout"] += 1
            server.report(payload, None, now)
            _rest(payload.device_id, now, busy, next_ok, day)
        elif kind == "report":
            ticket = payload
            rep.bytes_up += cost.upload_bytes
            if server.accepts(ticket, now):
                tau = server.version - ticket.version
                update = train(ticket.device_id, server.model(ticket.version), ticket)
                status = server.report(ticket, update, now)
                assert status == ACCEPTED, status
                rep.counts["accepted"] += 1
                rep.staleness[tau] += 1
            else:
                rep.counts["wasted"] += 1
                server.report(ticket, None, now)
            _rest(ticket.device_id, now, busy, next_ok, day)
    if rep.stopped_at_hour is None and (not rep.evals or rep.evals[-1]["hour"] < day.sim_hours):
        evaluate(end)
    rep.counts["discarded"] = server.discarded
    return rep


@dataclass(frozen=True)
class _PlanCost:
    """The one field of a plan `session_seconds` reads."""

    batch_size: int


def _rest(d: str, now: float, busy: set[str], next_ok: dict[str, float], day: DayConfig) -> None:
    busy.discard(d)
    next_ok[d] = now + day.cooldown_s


def hours_to_target(evals: list[dict[str, Any]], key: str, target: float) -> Optional[float]:
    """The first evaluated hour at which `key` reached `target` (None: never)."""
    for e in evals:
        if e.get(key) is not None and e[key] >= target:
            return float(e["hour"])
    return None
