"""FedBuff in the algorithm core (fedcore/buffered.py, fedcore/memory_server.py): numbers by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from configs import preset
from fedcore.algorithm import build
from fedcore.buffered import BufferedAsync, StalenessWeight
from fedcore.memory_server import ACCEPTED, LATE, STALE, BufferedServer, SyncServer
from fedcore.messages import ClientUpdate
from fedcore.policy import SyncRounds
from fedmath import accounting


def _sgd():
    """FedAvg with server SGD at lr 1: new = old + weighted mean delta."""
    import dataclasses

    train = dataclasses.replace(preset("tiny").train, algorithm="fedavg", server_momentum=0.0,
                                server_learning_rate=1.0, aggregator="weighted_mean")
    return build(train)


def _u(x: float, n: int = 1) -> ClientUpdate:
    return ClientUpdate([np.array([x], np.float32)], n)


# -- staleness weights ---------------------------------------------------------------------------
def test_staleness_weights_by_hand():
    poly = StalenessWeight.parse("polynomial")  # FLSim's default exponent 0.5
    assert (poly(0), poly(3), poly(8)) == (1.0, pytest.approx(0.5), pytest.approx(1 / 3))
    assert StalenessWeight.parse("polynomial:a=1")(4) == pytest.approx(0.2)
    hinge = StalenessWeight.parse("hinge:a=10,b=4")
    assert (hinge(0), hinge(4), hinge(5), hinge(6)) == (1.0, 1.0, pytest.approx(1 / 11), pytest.approx(1 / 21))
    assert StalenessWeight.parse("constant")(50) == 1.0
    assert StalenessWeight.parse("hinge:b=1").describe() == "hinge:a=10,b=1"


@pytest.mark.parametrize("spec", ["linear", "polynomial:b=1", "constant:a=1", "polynomial:a=x", "hinge:a"])
def test_bad_staleness_weight_names_what_is_wrong(spec):
    with pytest.raises(ValueError, match="staleness weight"):
        StalenessWeight.parse(spec)


def test_policy_refuses_stale_and_publishes_every_k():
    p = BufferedAsync(buffer_size=3, concurrency=2, max_staleness=2)
    assert p.accepts(2) and not p.accepts(3)
    assert [p.outcome(n) for n in (0, 2, 3)] == ["open", "open", "publish"]
    assert p.may_admit(1) and not p.may_admit(2)
    assert p.staleness_of(4, 7) == 3
    with pytest.raises(ValueError, match="version 8 while 7"):
        p.staleness_of(8, 7)
    for bad in ({"buffer_size": 0}, {"concurrency": 0}, {"max_staleness": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            BufferedAsync(**dict({"buffer_size": 1, "concurrency": 1, "max_staleness": 0}, **bad))


# -- the buffered server in memory ---------------------------------------------------------------
def test_buffered_server_weights_by_staleness_and_publishes_every_k():
    srv = BufferedServer(_sgd(), [np.zeros(1, np.float32)], population=100,
                         policy=BufferedAsync(2, 10, 1, StalenessWeight.parse("polynomial:a=0.5")))
    a, b, c, e = (srv.check_in(d, 0.0) for d in "abce")
    assert srv.report(a, _u(1.0), 1.0) == ACCEPTED and srv.version == 0
    assert srv.report(b, _u(3.0, 3), 2.0) == ACCEPTED  # K = 2: version 1 = (1*1 + 3*3) / 4
    assert srv.version == 1 and srv.weights[0][0] == pytest.approx(2.5)
    d = srv.check_in("d", 3.0)
    assert d.version == 1
    assert srv.report(c, _u(-1.0, 2), 4.0) == ACCEPTED  # tau 1: weight 2 / sqrt(2)
    assert srv.report(d, _u(4.0, 1), 5.0) == ACCEPTED  # tau 0: weight 1
    w = math.sqrt(2.0)
    assert srv.weights[0][0] == pytest.approx(2.5 + (-1.0 * w + 4.0) / (w + 1.0), rel=1e-6)
    assert srv.version == 2 and srv.published[-1].mean_staleness == 0.5
    assert srv.report(e, _u(9.0), 6.0) == STALE  # trained on v0, now v2 > max_staleness 1
    assert srv.version == 2 and srv._reports == 0


def test_buffered_server_divides_by_unscaled_weights_as_fedbuff_algorithm_1():
    srv = BufferedServer(_sgd(), [np.zeros(1, np.float32)], population=100, normalize="unscaled",
                         policy=BufferedAsync(2, 10, 5, StalenessWeight.parse("polynomial:a=0.5")))
    a, b, c = (srv.check_in(d, 0.0) for d in "abc")
    srv.report(a, _u(1.0), 1.0)
    srv.report(b, _u(3.0, 3), 2.0)  # all fresh: the same step as "scaled", (1*1 + 3*3) / 4
    assert srv.weights[0][0] == pytest.approx(2.5)
    d = srv.check_in("d", 3.0)
    srv.report(c, _u(-1.0, 2), 4.0)  # tau 1: weight 2 / sqrt(2), divided by 2 + 1, not by 2/sqrt(2) + 1
    srv.report(d, _u(4.0, 1), 5.0)
    w = math.sqrt(2.0)
    assert srv.weights[0][0] == pytest.approx(2.5 + (-1.0 * w + 4.0) / 3.0, rel=1e-6)
    e = srv.check_in("e", 6.0)
    f = srv.check_in("f", 6.0)
    srv.report(e, _u(2.0), 7.0)  # the sums restart with each buffer: fresh again, a full step
    srv.report(f, _u(2.0), 8.0)
    assert srv.weights[0][0] == pytest.approx(2.5 + (4.0 - w) / 3.0 + 2.0, rel=1e-6)
    with pytest.raises(ValueError, match="normalize must be one of"):
        BufferedServer(_sgd(), [np.zeros(1, np.float32)], population=1, normalize="K")


def test_buffered_server_admits_up_to_the_concurrency_target():
    srv = BufferedServer(_sgd(), [np.zeros(1, np.float32)], population=10,
                         policy=BufferedAsync(4, 2, 3), expires_s=100.0)
    t1, t2 = srv.check_in("a", 0.0), srv.check_in("b", 0.0)
    assert t1 and t2 and srv.check_in("c", 1.0) is None
    assert srv.report(t1, None, 2.0) == LATE  # a dropout frees its slot
    assert srv.check_in("c", 2.0) is not None and srv.check_in("d", 2.0) is None
    assert srv.check_in("d", 101.0) is not None  # b's ticket expired


def test_buffered_server_accounts_epsilon_per_published_version():
    srv = BufferedServer(_sgd(), [np.zeros(1, np.float32)], population=1000, noise_multiplier=1.0,
                         policy=BufferedAsync(2, 10, 5))
    for i in range(6):
        srv.report(srv.check_in(str(i), i), _u(0.1), i + 0.5)
    q = accounting.sampling_probability(2, 1000)
    assert [p.version for p in srv.published] == [1, 2, 3]
    assert srv.published[-1].epsilon == pytest.approx(accounting.dp_epsilon([(q, 1.0)] * 3, 1000 ** -1.1))
    assert srv.published[0].epsilon < srv.published[-1].epsilon


def test_sync_server_drops_late_reports_and_abandons():
    srv = SyncServer(_sgd(), [np.zeros(1, np.float32)], population=10,
                     policy=SyncRounds(goal_count=2, over_selection=1.5, report_deadline_s=10.0, min_reports=1))
    t = [srv.check_in(d, 0.0) for d in "abc"]
    assert srv.check_in("d", 0.0) is None  # 3 slots
    assert srv.report(t[0], _u(2.0), 1.0) == ACCEPTED
    assert srv.report(t[1], _u(4.0), 2.0) == ACCEPTED and srv.version == 1
    assert srv.weights[0][0] == pytest.approx(3.0)
    assert srv.report(t[2], _u(9.0), 3.0) == LATE  # its round published without it
    x = srv.check_in("x", 4.0)
    srv.tick(15.0)  # round 1's deadline passed with no report: abandoned
    assert srv.abandoned == 1 and srv.version == 1
    assert srv.report(x, _u(1.0), 15.0) == LATE


def test_sync_server_round_times_split_waiting_for_slots_from_waiting_for_reports():
    srv = SyncServer(_sgd(), [np.zeros(1, np.float32)], population=10,
                     policy=SyncRounds(goal_count=2, over_selection=1.5, report_deadline_s=100.0))
    t = [srv.check_in("a", 0.0), srv.check_in("b", 10.0), srv.check_in("c", 30.0)]  # 3 slots, full at 30
    srv.report(t[0], _u(1.0), 40.0)
    srv.report(t[1], _u(1.0), 50.0)  # the goal: published at 50
    srv.check_in("d", 60.0)  # one of 3 slots taken, no report: abandoned at its deadline 160
    srv.tick(200.0)
    assert srv.round_times == [(0.0, 30.0, 50.0, "publish"), (60.0, None, 160.0, "abandon")]
    assert srv.round_time_summary() == {"rounds": 2, "mean_round_s": 75.0, "mean_fill_s": 30.0,
                                        "mean_fill_to_close_s": 20.0, "never_filled": 1, "closed_at_deadline": 1}
