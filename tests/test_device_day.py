"""The simulated day (device_sim/day.py) against the real collector, with fake models."""

from __future__ import annotations

import pytest

from device_sim import day as dd
from device_sim.phone import ACCEPTED, DROPPED, LATE, NOT_SELECTED, REJECTED
from device_sim.transport import Plan, Transport
from fedmath import availability as av
from tests.test_device_phone import FakeModel, _examples, live  # noqa: F401  (fixture)


def test_session_seconds_by_hand():
    profile = av.DeviceProfile("p", 0, 0, 8, True, True, 4.0, speed=2.0, up_kbps=1000.0, down_kbps=8000.0,
                               latency_ms=50.0, dropout_prob=0.0)
    plan = Plan(0, 0, 1, 16, 0.1, 1.0, 0.0, "float32", 0, 0)
    # 4 x 50 ms + 1e6 B down at 8 Mbit/s (1 s) + 5e5 B up at 1 Mbit/s (4 s) + 10 steps x 16 x 20 tokens
    # at 400 tokens/s x speed 2 (4 s) = 0.2 + 1 + 4 + 4
    assert dd.session_seconds(profile, plan, 10, 20, 1_000_000, 500_000, 400.0) == pytest.approx(9.2)


def test_day_config_rejects_bad_values():
    with pytest.raises(ValueError, match="sim_hours"):
        dd.DayConfig(sim_hours=0)
    with pytest.raises(ValueError, match="dropout_rate"):
        dd.DayConfig(dropout_rate=1.5)


def test_a_night_of_phones_only_eligible_ones_train_and_dropouts_leave_nothing(live):  # noqa: F811
    srv = live(goal_count=3, over_selection=1.67, privacy={"mode": "none", "clip_norm": 100.0},
               collector={"report_deadline_s": 5.0})
    clients = {f"user{i:02d}": _examples(n=3) for i in range(40)}
    # 6 simulated night hours in about 8 real seconds
    day = dd.DayConfig(sim_hours=6, start_hour=22, speedup=2700, tick_s=600, cooldown_s=1800, dropout_rate=0.2,
                       seed=3, deadline_s=1e9)
    rep = dd.simulate_day(srv.url, clients, day, concurrency=2, model_factory=lambda p: FakeModel(),
                          progress=False)
    s = rep.summary()
    assert s["rounds_completed"] >= 2, s
    assert s["accepted"] >= 3 * s["rounds_completed"] and s["dropouts"] >= 1 and s["stragglers"] == 0

    # availability: every phone that checked in was eligible at that simulated time
    profiles = {d: av.device_profile(d, day.seed) for d in clients}
    for t, o in rep.outcomes:
        assert av.is_eligible(profiles[o.device_id], t, 3, day.seed), (o.device_id, t)
        assert o.status in (ACCEPTED, REJECTED, DROPPED, LATE, NOT_SELECTED)
        if o.status != NOT_SELECTED:  # dropped exactly the sessions the seeded draw says, no others
            assert (o.status == DROPPED) == av.drops_out(profiles[o.device_id], o.round, day.seed, day.dropout_rate), o
    # dropouts leave no partial upload: the server counted exactly the accepted sessions
    metrics = Transport(srv.url).metrics()
    counted = [float(line.split()[-1]) for line in metrics.splitlines()
               if line.startswith("fedkeys_updates_accepted_total")]
    assert counted and counted[0] == s["accepted"], (counted, s["accepted"])
    assert all(o.payload_bytes == 0 and o.bytes_up < 200 for _, o in rep.outcomes if o.status == DROPPED)


def test_slow_phones_straggle_past_the_deadline(live):  # noqa: F811
    srv = live(goal_count=2, over_selection=1.0, privacy={"mode": "none", "clip_norm": 100.0},
               collector={"report_deadline_s": 2.0})
    clients = {f"s{i}": _examples(n=3) for i in range(30)}
    # a deadline of 1 simulated ms: every selected phone would finish late
    day = dd.DayConfig(sim_hours=2, start_hour=0, speedup=3600, tick_s=600, dropout_rate=0.0, seed=1,
                       deadline_s=1e-3)
    rep = dd.simulate_day(srv.url, clients, day, model_factory=lambda p: FakeModel(), progress=False)
    s = rep.summary()
    assert s["accepted"] == 0 and s["stragglers"] >= 1 and s["rounds_completed"] == 0
    assert srv.status()["round"]["reports"] == 0


def test_a_night_against_fedbuff_has_no_stragglers_and_publishes_every_k(live):  # noqa: F811
    srv = live(goal_count=3, privacy={"mode": "none", "clip_norm": 100.0},
               collector={"policy": "fedbuff", "concurrency": 4, "max_staleness": 5, "report_deadline_s": 5.0})
    clients = {f"user{i:02d}": _examples(n=3) for i in range(40)}
    # the deadline that made every phone a straggler under sync rounds: a FedBuff plan has none
    day = dd.DayConfig(sim_hours=6, start_hour=22, speedup=2700, tick_s=600, cooldown_s=1800, dropout_rate=0.2,
                       seed=3, deadline_s=1e-3)
    rep = dd.simulate_day(srv.url, clients, day, concurrency=2, model_factory=lambda p: FakeModel(),
                          progress=False)
    s = rep.summary()
    assert s["stragglers"] == 0 and s["accepted"] >= 3, s
    status = Transport(srv.url).status()
    assert status["policy"]["policy"] == "fedbuff"
    assert status["model"]["version"] == s["accepted"] // 3 and status["round"]["reports"] == s["accepted"] % 3
