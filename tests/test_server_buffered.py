"""The collector under FedBuff (server/buffered.py): admission, staleness refusal and weighting,
a version every K updates, idempotent retries, and kill -9 mid-buffer losing nothing acknowledged."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import requests

from fedcore.messages import Refusal
from server.app import create_app
from server.buffered import BufferedCollector
from server.errors import http_status
from server.testing import ServerProcess, random_update, upload_body
from tests.test_server_rounds import ELIGIBLE, SHAPES, collector_of, enroll, settings, weights


def fedbuff(tmp_path, k=2, concurrency=10, max_staleness=1, weight="polynomial:a=0.5", **collector):
    return settings(tmp_path, server={"goal_count": k},
                    collector={"policy": "fedbuff", "concurrency": concurrency, "max_staleness": max_staleness,
                               "staleness_weight": weight, **collector},
                    train={"aggregator": "weighted_mean"})


def admit(col, ids, now=None):
    return {d: col.checkin(d, ELIGIBLE, now=now)["plan"] for d in ids}


def send(col, d, plan, update, n, upload_id=None):
    return col.accept(d, plan["round"], upload_body(plan["round"], plan["model_version"], update, n, upload_id))


def mean_step(w, pairs):
    """w + sum(f_i u_i) / sum(f_i), in float64 then float32 (the collector's arithmetic)."""
    out = []
    for t in range(len(SHAPES)):
        s = sum(f * u[t].astype(np.float64) for f, u in pairs) / sum(f for f, _ in pairs)
        out.append((w[t].astype(np.float64) + s).astype(np.float32))
    return out


def test_staleness_refusal_and_weighting(tmp_path):
    col = collector_of(create_app(test_config=fedbuff(tmp_path)))
    assert isinstance(col, BufferedCollector)
    ids = enroll(col, 5)
    plans = admit(col, ids[:4])
    assert {p["model_version"] for p in plans.values()} == {0} and plans["d0"]["deadline_unix"] == 0.0
    rng = np.random.default_rng(1)
    u = [random_update(SHAPES, 0.5, rng) for _ in range(5)]
    assert send(col, "d0", plans["d0"], u[0], 2)["staleness"] == 0
    assert send(col, "d1", plans["d1"], u[1], 6)["round_complete"] is True
    w0, w1 = weights(col, 0), weights(col, 1)
    expect1 = mean_step(w0, [(2, u[0]), (6, u[1])])
    for t in range(len(SHAPES)):
        np.testing.assert_allclose(w1[t], expect1[t], rtol=1e-6, atol=1e-7)
    late = admit(col, ["d4"])["d4"]
    assert late["model_version"] == 1 and late["round"] == 1
    assert send(col, "d2", plans["d2"], u[2], 4)["staleness"] == 1  # weight 4 / sqrt(2)
    assert send(col, "d4", late, u[4], 3)["staleness"] == 0
    expect2 = mean_step(w1, [(4 / math.sqrt(2), u[2]), (3, u[4])])
    w2 = weights(col, 2)
    for t in range(len(SHAPES)):
        np.testing.assert_allclose(w2[t], expect2[t], rtol=1e-6, atol=1e-7)
    with pytest.raises(Refusal) as e:  # trained on v0, latest v2: 2 > max_staleness 1
        send(col, "d3", plans["d3"], u[3], 1)
    assert e.value.code == "too_stale" and http_status(e.value) == 409
    st = col.status()
    assert st["policy"]["policy"] == "fedbuff" and st["buffer"]["last_published_staleness"]["histogram"] == {"0": 1, "1": 1}
    assert st["buffer"]["last_published_staleness"]["mean"] == 0.5


def test_a_version_every_k_updates(tmp_path):
    col = collector_of(create_app(test_config=fedbuff(tmp_path, k=3, max_staleness=5, weight="constant")))
    rng = np.random.default_rng(2)
    versions = []
    for i, d in enumerate(enroll(col, 8)):
        plan = admit(col, [d])[d]
        send(col, d, plan, random_update(SHAPES, 0.3, rng), 1 + i)
        versions.append(col.status()["model"]["version"])
    assert versions == [0, 0, 1, 1, 1, 2, 2, 2]
    assert col.status()["round"]["reports"] == 2 and col.status()["rounds_abandoned"] == 0
    assert [col.model_meta(v)["reports"] for v in (1, 2)] == [3, 3]


def test_admission_up_to_the_concurrency_target(tmp_path):
    col = collector_of(create_app(test_config=fedbuff(tmp_path, k=5, concurrency=2,
                                                      report_deadline_s=100.0)))
    ids = enroll(col, 4)
    plans = admit(col, ids[:2], now=1000.0)
    assert col.checkin("d0", ELIGIBLE, now=1001.0)["plan"] == plans["d0"]  # a repeated check-in: same plan
    with pytest.raises(Refusal) as e:
        col.checkin("d2", ELIGIBLE, now=1001.0)
    assert e.value.code == "round_full" and e.value.retry_after >= 1
    send(col, "d0", plans["d0"], random_update(SHAPES, 0.2, np.random.default_rng(0)), 3)
    assert col.checkin("d2", ELIGIBLE, now=1002.0)["round"] == 0  # d0's report freed its slot
    with pytest.raises(Refusal):
        col.checkin("d3", ELIGIBLE, now=1002.0)
    assert col.checkin("d3", ELIGIBLE, now=1101.0)["round"] == 0  # d1's admission expired
    with pytest.raises(Refusal) as e:
        col.checkin("d0", ELIGIBLE, now=1102.0)  # already has an update in the open buffer
    assert e.value.code == "already_reported"


def test_retries_are_idempotent_across_buffers_and_forged_uploads_fail(tmp_path):
    col = collector_of(create_app(test_config=fedbuff(tmp_path, k=1, max_staleness=3)))
    ids = enroll(col, 3)
    plans = admit(col, ids)
    rng = np.random.default_rng(3)
    u = random_update(SHAPES, 0.4, rng)
    assert send(col, "d0", plans["d0"], u, 2, "up-0")["round_complete"] is True
    assert col.status()["model"]["version"] == 1
    # the retry arrives after its buffer was published: the same answer, nothing counted twice
    assert send(col, "d0", plans["d0"], u, 2, "up-0") == {"accepted": True, "round_complete": True}
    assert col.status()["model"]["version"] == 1
    with pytest.raises(Refusal) as e:  # a second, different upload for the same admission
        send(col, "d0", plans["d0"], u, 2, "up-other")
    assert e.value.code == "duplicate"
    with pytest.raises(Refusal) as e:  # claims a version it was not handed (to look fresher)
        col.accept("d1", 0, upload_body(0, 1, u, 2))
    assert e.value.code == "stale_version"
    with pytest.raises(Refusal) as e:  # a registered device never admitted
        col.register("intruder")
        col.accept("intruder", 1, upload_body(1, 1, u, 2))
    assert e.value.code == "not_selected"


def test_bad_policy_config_names_the_field(tmp_path):
    for bad, field in (({"policy": "async"}, "collector.policy"), ({"max_staleness": -1}, "max_staleness"),
                       ({"concurrency": -2}, "collector.concurrency"), ({"staleness_weight": "cubic"}, "staleness")):
        with pytest.raises(ValueError, match=field):
            create_app(test_config=settings(tmp_path, collector=bad))


def test_secure_aggregation_is_refused_with_the_fedbuff_policy(tmp_path):
    cfg = fedbuff(tmp_path, k=3)
    cfg["secagg"] = {"enabled": True}
    cfg["train"] = dict(cfg.get("train") or {}, aggregator="uniform_mean")
    with pytest.raises(ValueError, match="collector.policy 'sync'"):
        create_app(test_config=cfg)


def test_restart_mid_buffer_loses_nothing_acknowledged(tmp_path):
    """In-process: the collector object dropped mid-buffer (checkpoint plus spooled updates)."""
    cfg = fedbuff(tmp_path, k=5, max_staleness=4, checkpoint_every=2)
    col = collector_of(create_app(test_config=cfg))
    ids = enroll(col, 5)
    plans = admit(col, ids)
    rng = np.random.default_rng(4)
    u = [random_update(SHAPES, 0.6, rng) for _ in ids]
    for i in range(3):
        send(col, ids[i], plans[ids[i]], u[i], 1 + i, f"up{i}")
    del col  # no shutdown: what was acknowledged is on disk or nowhere
    col = collector_of(create_app(test_config=cfg))
    assert send(col, ids[2], plans[ids[2]], u[2], 3, "up2")["accepted"]  # the retry: answered, not re-added
    for i in (3, 4):
        send(col, ids[i], plans[ids[i]], u[i], 1 + i, f"up{i}")
    assert col.status()["model"]["version"] == 1
    expect = mean_step(weights(col, 0), [(1 + i, u[i]) for i in range(5)])
    for t in range(len(SHAPES)):
        np.testing.assert_allclose(weights(col, 1)[t], expect[t], rtol=1e-6, atol=1e-7)


def test_kill_9_mid_buffer_over_http_loses_nothing_acknowledged(tmp_path):
    """gunicorn SIGKILLed (master and workers) between acknowledged uploads of one buffer."""
    cfg = fedbuff(tmp_path, k=6, max_staleness=4, checkpoint_every=2)
    srv = ServerProcess(str(tmp_path / "srv"), cfg, workers=2)
    rng = np.random.default_rng(5)
    u = [random_update(SHAPES, 0.6, rng) for _ in range(6)]
    s = requests.Session()
    heads, plans = [], []
    with srv:
        for i in range(6):
            tok = s.post(srv.url + "/v1/devices", json={"device_id": f"p{i}"}).json()["token"]
            heads.append({"Authorization": f"Bearer {tok}"})
            r = s.post(srv.url + "/v1/checkin", json=ELIGIBLE, headers=heads[-1])
            assert r.status_code == 200, r.text
            plans.append(r.json()["plan"])
        w0 = s.get(srv.url + "/v1/model/0/weights", headers=heads[0]).content
        for i in range(3):
            r = s.post(srv.url + f"/v1/rounds/{plans[i]['round']}/updates",
                       data=upload_body(0, 0, u[i], 1 + i, f"up{i}"), headers=heads[i])
            assert r.status_code == 202, r.text
        srv.kill()
        srv.start()
        for i in range(2, 6):  # the first is a retry of an acknowledged upload
            r = s.post(srv.url + "/v1/rounds/0/updates", data=upload_body(0, 0, u[i], 1 + i, f"up{i}"),
                       headers=heads[i])
            assert r.status_code == 202, r.text
        st = s.get(srv.url + "/v1/status").json()
        assert st["model"]["version"] == 1 and st["buffer"]["last_published_staleness"]["updates"] == 6
        w1 = s.get(srv.url + "/v1/model/1/weights", headers=heads[0]).content
    from fedmath import encodings
    w0, w1 = encodings.decode_float32(w0, SHAPES), encodings.decode_float32(w1, SHAPES)
    expect = mean_step(w0, [(1 + i, u[i]) for i in range(6)])
    for t in range(len(SHAPES)):
        np.testing.assert_allclose(w1[t], expect[t], rtol=1e-6, atol=1e-7)
    assert os.path.exists(tmp_path / "state" / "models" / "v1.npz")
