"""A real collector process: gunicorn on 127.0.0.1, a round over HTTP with `requests`."""

from __future__ import annotations

import numpy as np
import pytest
import requests

from fedmath import encodings
from server.testing import TINY_SHAPES, ServerProcess, config_dict, make_bundle, upload_body

SHAPES = [s for _, s in TINY_SHAPES]


@pytest.mark.parametrize("workers", [1, 2])
def test_round_over_real_http(tmp_path, workers):
    # each worker writes its counters after every request (the default is at most once a second),
    # so /metrics served by either worker counts all three acceptances
    make_bundle(str(tmp_path / "bundle"))
    cfg = config_dict(str(tmp_path / "bundle"), str(tmp_path / "state"), server={"goal_count": 3},
                      privacy={"clip_norm": 1.0}, collector={"metrics_flush_s": 0})
    srv = ServerProcess(str(tmp_path), cfg, workers=workers, access_log=True).start()
    url = srv.url
    try:
        s = requests.Session()
        heads = []
        for i in range(4):
            r = s.post(url + "/v1/devices", json={"device_id": f"phone-{i}"})
            assert r.status_code == 201
            heads.append({"Authorization": f"Bearer {r.json()['token']}"})
        plans = []
        for h in heads:
            r = s.post(url + "/v1/checkin", json={"idle": True, "charging": True, "unmetered": True,
                                                 "num_examples": 8}, headers=h)
            assert r.status_code == 200, r.text
            plans.append(r.json()["plan"])
        r = s.get(url + "/v1/model/0/weights", headers=heads[0])
        assert r.status_code == 200
        w0 = encodings.decode_float32(r.content, SHAPES)
        assert s.get(url + "/v1/model/0/weights", headers={**heads[0], "If-None-Match": r.headers["ETag"]}).status_code == 304
        rng = np.random.default_rng(0)
        updates = [[rng.uniform(-0.1, 0.1, size=sh).astype(np.float32) for sh in SHAPES] for _ in range(3)]
        examples = [3, 5, 8]
        assert s.post(url + "/v1/rounds/0/updates", data=b"garbage", headers=heads[0]).status_code == 400
        answers = []
        for h, u, n in zip(heads, updates, examples):
            r = s.post(url + "/v1/rounds/0/updates", data=upload_body(0, 0, u, n), headers=h)
            assert r.status_code == 202, r.text
            answers.append(r.json()["round_complete"])
        assert answers == [False, False, True]
        r = s.post(url + "/v1/rounds/0/updates", data=upload_body(0, 0, updates[0], 2), headers=heads[3])
        assert r.status_code == 409 and r.json()["error"] == "round_closed"
        assert s.get(url + "/v1/model", headers=heads[0]).json()["version"] == 1
        w1 = encodings.decode_float32(s.get(url + "/v1/model/1/weights", headers=heads[0]).content, SHAPES)
        for t in range(len(SHAPES)):
            mean = sum(n * updates[i][t].astype(np.float64) for i, n in enumerate(examples)) / sum(examples)
            np.testing.assert_allclose(w1[t], (w0[t] + mean).astype(np.float32), rtol=1e-6, atol=1e-7)
        status = s.get(url + "/v1/status").json()
        assert status["round"]["round"] == 1 and status["rounds_closed"] == 1
        metrics = s.get(url + "/metrics").text
        assert "fedkeys_updates_accepted_total 3" in metrics
        assert 'fedkeys_updates_rejected_total{error="malformed"} 1' in metrics
    finally:
        srv.stop()
