"""Two collector hosts (two gunicorn masters on two ports, as two machines would run them) over
one PostgreSQL database and one state directory: a round whose devices alternate hosts, limits
that hold across hosts, and a host killed mid-round losing and doubling nothing."""

from __future__ import annotations

import numpy as np
import pytest
import requests

from fedmath import encodings
from server.testing import TINY_SHAPES, ServerProcess, config_dict, make_bundle, upload_body

SHAPES = [s for _, s in TINY_SHAPES]
ELIGIBLE = {"idle": True, "charging": True, "unmetered": True, "num_examples": 8}


def two_hosts(tmp_path, url, **collector):
    make_bundle(str(tmp_path / "bundle"))
    cfg = config_dict(str(tmp_path / "bundle"), str(tmp_path / "state"), server={"goal_count": 4},
                      privacy={"clip_norm": 1.0}, collector={"database": url, **collector})
    return [ServerProcess(str(tmp_path / f"host{h}"), cfg, workers=1, threads=2).start() for h in range(2)]


def test_a_round_with_devices_alternating_hosts_closes_once(tmp_path, postgres):
    hosts = two_hosts(tmp_path, postgres.create_database())
    try:
        s = requests.Session()
        heads = []
        for i in range(5):  # registration, check-in and upload of each device on alternating hosts
            r = s.post(hosts[i % 2].url + "/v1/devices", json={"device_id": f"phone-{i}"})
            assert r.status_code == 201, r.text
            heads.append({"Authorization": f"Bearer {r.json()['token']}"})
        for i, h in enumerate(heads):  # slots = ceil(4 * 1.3) = 6: all five are selected
            assert s.post(hosts[(i + 1) % 2].url + "/v1/checkin", json=ELIGIBLE, headers=h).status_code == 200
        w0 = encodings.decode_float32(s.get(hosts[1].url + "/v1/model/0/weights", headers=heads[0]).content, SHAPES)
        rng = np.random.default_rng(3)
        updates = [[rng.uniform(-0.1, 0.1, size=sh).astype(np.float32) for sh in SHAPES] for _ in range(4)]
        examples = [2, 3, 5, 7]
        answers = []
        for i, (u, n) in enumerate(zip(updates, examples)):
            body = upload_body(0, 0, u, n, f"up-{i}")
            r = s.post(hosts[i % 2].url + "/v1/rounds/0/updates", data=body, headers=heads[i])
            assert r.status_code == 202, r.text
            answers.append(r.json()["round_complete"])
            retry = s.post(hosts[(i + 1) % 2].url + "/v1/rounds/0/updates", data=body, headers=heads[i])
            assert retry.status_code == 202 and retry.json() == r.json()  # the other host knows it: counted once
        assert answers == [False, False, False, True]
        late = s.post(hosts[0].url + "/v1/rounds/0/updates", data=upload_body(0, 0, updates[0], 1), headers=heads[4])
        assert late.status_code == 409 and late.json()["error"] == "round_closed"
        w1 = encodings.decode_float32(s.get(hosts[0].url + "/v1/model/1/weights", headers=heads[0]).content, SHAPES)
        for t in range(len(SHAPES)):
            mean = sum(n * updates[i][t].astype(np.float64) for i, n in enumerate(examples)) / sum(examples)
            np.testing.assert_allclose(w1[t], (w0[t] + mean).astype(np.float32), rtol=1e-6, atol=1e-7)
        for h in hosts:
            st = s.get(h.url + "/v1/status").json()
            assert (st["round"]["round"], st["rounds_closed"], st["model"]["version"], st["devices"]) == (1, 1, 1, 5)
    finally:
        for h in hosts:
            h.stop()


def test_rate_limits_hold_across_hosts(tmp_path, postgres):
    """A device that spreads its requests over both hosts still gets one bucket (burst 3, then
    429 from either host); so does an address registering through both."""
    hosts = two_hosts(tmp_path, postgres.create_database(), rate_limit_per_s=0.01, rate_limit_burst=3,
                      register_rate_per_s=0.01, register_burst=2)
    try:
        s = requests.Session()
        token = s.post(hosts[0].url + "/v1/devices", json={"device_id": "greedy"}).json()["token"]
        h = {"Authorization": f"Bearer {token}"}
        codes = [s.get(hosts[i % 2].url + "/v1/model", headers=h).status_code for i in range(4)]
        assert codes == [200, 200, 200, 429]
        again = s.get(hosts[0].url + "/v1/model", headers=h)
        assert again.status_code == 429 and 1 <= int(again.headers["Retry-After"]) <= 100
        r = s.post(hosts[1].url + "/v1/devices", json={"device_id": "second"})
        assert r.status_code == 201  # the address's second registration, on the other host
        r = s.post(hosts[0].url + "/v1/devices", json={"device_id": "third"})
        assert r.status_code == 429 and r.json()["error"] == "rate_limited"
    finally:
        for h in hosts:
            h.stop()


@pytest.mark.slow
def test_killing_one_host_mid_round_loses_and_doubles_nothing(tmp_path, postgres):
    """benchmarks/server_faults.py's crash round on two hosts, the first SIGKILLed 4 times (master
    and workers) while devices retry on whichever host answers."""
    from benchmarks import server_faults
    crash = server_faults.crash_round(str(tmp_path / "crash"), goal=24, kills=4, workers=1, seed=3,
                                      server_threads=2, hosts=2, database=postgres.create_database())
    assert crash["kills_during_round"] >= 1, crash["kill_log"]
    assert crash["acked_lost"] == 0 and crash["accepted_answers"] == 24
    assert crash["recorded"] == crash["unique_devices"] == 24  # nothing counted twice...
    assert crash["round_closed"] and crash["model_exact"]  # ...in the published sum either
