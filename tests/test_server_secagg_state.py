"""What a collector worker keeps in memory of a secure round follows its database: a write
transaction that rolls back takes with it the round row it inserted, the stage it closed and the
stage time it moved; a refusal that wrote nothing keeps the replayed round (no replay from disk for
a device that asked too early)."""

from __future__ import annotations

import dataclasses
import os
import time

import pytest

from fedcore.messages import Refusal
from server.app import create_app
from server.testing import config_dict, make_bundle


@pytest.fixture()
def secure(tmp_path):
    bundle = os.path.join(tmp_path, "bundle")
    make_bundle(bundle)
    cfg = config_dict(bundle, os.path.join(tmp_path, "state"), {"goal_count": 3, "over_selection": 1.0},
                      {"mode": "none", "clip_norm": 1.0}, None, {"aggregator": "uniform_mean"})
    cfg["secagg"] = {"enabled": True, "bits": 20, "dropout": 0.1, "stage_timeout_s": 60.0}
    collector = create_app(test_config=cfg, workers=1).extensions["fedkeys"]["collector"]
    rnd = collector.store.open_round()
    assert rnd is not None
    return collector.secure, rnd


def _open_round(sec, rnd) -> float:
    """Open the round's secagg row as a check-in does and load its state; return the time used."""
    now = time.time()
    with sec._write() as c:
        sec._ensure(c, rnd, now)
        sec._state(rnd.round)
    return now


def test_a_rolled_back_insert_is_not_remembered(secure):
    sec, rnd = secure
    with pytest.raises(Refusal):
        with sec._write() as c:
            sec._ensure(c, rnd, time.time())
            raise Refusal("bad_secagg", "refused after the round row was inserted")
    assert sec._row(rnd.round) is None  # not a cached row the database never committed


def test_a_rolled_back_stage_close_is_replayed_away_and_a_clean_refusal_keeps_the_cache(secure):
    sec, rnd = secure
    now = _open_round(sec, rnd)
    assert sec._row(rnd.round) is not None and rnd.round in sec._cache
    with pytest.raises(Refusal):
        with sec._write():
            sec._state(rnd.round)
            raise Refusal("secagg_wait", "nothing written")
    assert rnd.round in sec._cache  # kept: no replay for a device polling early
    with pytest.raises(Refusal):
        with sec._write() as c:
            sr = sec._state(rnd.round)
            sec._log(c, rnd.round, "close", None, now + 1000.0)
            sr.close_stage()  # no device advertised: the round would be abandoned
            assert sr.stage == "abandoned"
            raise Refusal("bad_secagg", "refused after closing the stage")
    assert sec._cache == {} and sec._active == {}
    assert sec._state(rnd.round).stage == "advertise"  # the close rolled back with its transaction
    assert sec._active[rnd.round] == pytest.approx(now)  # and the stage's idle clock with it


def test_the_advertise_stage_idles_only_after_its_first_message_and_the_deadline_ends_a_silent_one(secure):
    sec, rnd = secure
    now = _open_round(sec, rnd)  # a check-in opened the round row; its phones are still training
    sec.advance(rnd, now + 10 * sec.cfg.stage_timeout_s)
    assert sec._state(rnd.round).stage == "advertise"  # not abandoned for the training time
    assert sec.outcome(rnd, now + 10 * sec.cfg.stage_timeout_s) == "open"
    late = dataclasses.replace(rnd, deadline=now + 1.0)
    assert sec.outcome(late, now + 2.0) == "abandon"
    assert "advertised" in sec.note(late)


def test_a_log_of_first_version_json_shares_abandons_its_round_on_replay(secure):
    sec, rnd = secure
    now = _open_round(sec, rnd)
    with sec.store.write() as c:  # share rows as the first message version logged them: JSON text
        for d in ("phone-1", "phone-2"):
            c.execute("INSERT INTO secagg_log (round, kind, device_id, body, digest, at) VALUES (?, 'share', ?, ?, ?, ?)",
                      (rnd.round, d, '{"shares":{}}', d, now))
    sec._cache.clear()  # a worker started by the upgrade replays the log from its first row
    sr = sec._state(rnd.round)
    assert sr.stage == "abandoned" and "upgraded during this round" in sr.note  # not a crash on every request
