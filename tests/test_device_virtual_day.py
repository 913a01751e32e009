"""The virtual-clock day (device_sim/virtual_day.py): the same phones under either policy."""

from __future__ import annotations

import dataclasses

import numpy as np

from configs import preset
from device_sim.day import DayConfig
from device_sim.virtual_day import SessionCost, hours_to_target, simulate
from fedcore.algorithm import build
from fedcore.buffered import BufferedAsync
from fedcore.memory_server import BufferedServer, SyncServer
from fedcore.messages import ClientUpdate
from fedcore.policy import SyncRounds

PHONES = {f"user{i:03d}": 20 for i in range(300)}
COST = SessionCost(steps=lambda d: 10, batch_size=16, seq_len=20, download_bytes=10**6, upload_bytes=10**6)
DAY = DayConfig(sim_hours=4, start_hour=0, tick_s=300, cooldown_s=3600, seed=2)


def _algorithm():
    return build(dataclasses.replace(preset("tiny").train, algorithm="fedavg", server_momentum=0.0,
                                     server_learning_rate=1.0, aggregator="weighted_mean"))


def _train(trained):
    def train(device, weights, ticket):
        trained.append((device, ticket.version))
        return ClientUpdate([np.ones(2, np.float32)], 20, device, ticket.version)
    return train


def test_sync_rounds_publish_goal_sized_rounds_and_waste_late_reports():
    trained = []
    srv = SyncServer(_algorithm(), [np.zeros(2, np.float32)], population=300,
                     policy=SyncRounds(goal_count=5, over_selection=1.4, report_deadline_s=200.0))
    log = []
    rep = simulate(srv, PHONES, _train(trained), COST, DAY, eval_every_s=3600.0,
                   on_eval=lambda w: {"top1": float(w[0][0])}, on_progress=log.append)
    s = rep.summary()
    # the progress log: each evaluation as stored, with the updates trained and accepted so far
    assert [dict(e, trained=0, accepted=0) for e in rep.evals] == [dict(e, trained=0, accepted=0) for e in log]
    assert log[0]["trained"] == 0 and log[-1]["trained"] == s["updates_trained"]
    assert all(a["trained"] <= b["trained"] and a["accepted"] <= b["trained"] for a, b in zip(log, log[1:]))
    assert srv.version >= 3 and all(p.reports == 5 for p in srv.published)
    # trained = in a published round, in the open one, or thrown away with an abandoned one
    assert len(trained) == 5 * srv.version + srv._reports + srv.discarded
    assert s["updates_accepted"] == 5 * srv.version + srv._reports and srv.abandoned >= 1
    assert s["updates_wasted"] > srv.discarded > 0  # also reports after their round closed or its deadline
    assert s["bytes_up"] == 10**6 * s["updates_trained"]
    # each published version moved the weight by the mean delta (1.0) at server lr 1
    assert srv.weights[0][0] == srv.version and [e["hour"] for e in rep.evals] == [0, 1, 2, 3, 4]
    assert hours_to_target(rep.evals, "top1", 1.0) is not None


def test_fedbuff_wastes_nothing_within_its_staleness_and_weighs_stale_updates():
    trained = []
    srv = BufferedServer(_algorithm(), [np.zeros(2, np.float32)], population=300,
                         policy=BufferedAsync(buffer_size=5, concurrency=14, max_staleness=50), expires_s=3600.0)
    rep = simulate(srv, PHONES, _train(trained), COST, DAY)
    s = rep.summary()
    assert s["updates_wasted"] == 0 and s["updates_accepted"] == len(trained) == 5 * srv.version + srv._reports
    assert sum(rep.staleness.values()) == s["updates_accepted"] and max(rep.staleness) >= 1
    assert all(srv.version >= v for _, v in trained)


def test_a_progress_callback_returning_true_ends_the_day_at_that_evaluation():
    srv = BufferedServer(_algorithm(), [np.zeros(2, np.float32)], population=300,
                         policy=BufferedAsync(buffer_size=5, concurrency=14, max_staleness=50), expires_s=3600.0)
    trained = []
    rep = simulate(srv, PHONES, _train(trained), COST, DAY, eval_every_s=3600.0,
                   on_progress=lambda e: e["hour"] >= 2)
    assert rep.stopped_at_hour == 2 and [e["hour"] for e in rep.evals] == [0, 1, 2]
    assert rep.summary()["stopped_at_hour"] == 2 and rep.summary()["updates_trained"] == len(trained) > 0


def test_a_tiny_staleness_bound_turns_slow_reports_into_waste():
    srv = BufferedServer(_algorithm(), [np.zeros(2, np.float32)], population=300,
                         policy=BufferedAsync(buffer_size=2, concurrency=30, max_staleness=0), expires_s=3600.0)
    s = simulate(srv, PHONES, _train([]), COST, DAY).summary()
    assert s["updates_wasted"] > 0 and set(map(int, s["staleness"])) == {0}
