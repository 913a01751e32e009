"""Hierarchical aggregation (server/edge.py): edge collectors forward partial sums to a root;
the two-level model equals the flat one, and an edge killed mid-round loses nothing."""

from __future__ import annotations

import threading

import numpy as np
import requests

from fedmath import encodings
from server.testing import ServerProcess, config_dict, make_bundle, random_update, upload_body
from tests.test_server_rounds import ELIGIBLE, SHAPES

PRIVACY = {"mode": "none", "clip_norm": 1.0}


def _cfg(tmp_path, name, goal, **collector):
    return config_dict(str(tmp_path / "bundle"), str(tmp_path / name), {"goal_count": goal, "over_selection": 1.0},
                       PRIVACY, {"report_deadline_s": 600.0, "checkpoint_every": 1, **collector},
                       {"aggregator": "weighted_mean", "max_examples_per_client": 0})


class Device:
    def __init__(self, url: str, device_id: str) -> None:
        self.url, self.s = url, requests.Session()
        tok = self.s.post(url + "/v1/devices", json={"device_id": device_id}).json()["token"]
        self.h = {"Authorization": f"Bearer {tok}"}

    def checkin(self) -> dict:
        r = self.s.post(self.url + "/v1/checkin", json=ELIGIBLE, headers=self.h)
        assert r.status_code == 200, r.text
        return r.json()["plan"]

    def upload(self, plan, update, n, upload_id) -> int:
        body = upload_body(plan["round"], plan["model_version"], update, n, upload_id)
        return self.s.post(self.url + f"/v1/rounds/{plan['round']}/updates", data=body, headers=self.h,
                           timeout=120).status_code


def _weights(url: str, version: int):
    d = Device(url, f"reader-{version}")
    return encodings.decode_float32(d.s.get(f"{url}/v1/model/{version}/weights", headers=d.h).content, SHAPES)


def test_two_level_equals_flat_and_an_edge_killed_mid_round_loses_nothing(tmp_path):
    make_bundle(str(tmp_path / "bundle"))
    rng = np.random.default_rng(7)
    ups = [random_update(SHAPES, 0.5, rng) for _ in range(6)]
    n = [3, 1, 4, 1, 5, 9]
    with ServerProcess(str(tmp_path / "flat_p"), _cfg(tmp_path, "flat", 6)) as flat:
        devs = [Device(flat.url, f"p{i}") for i in range(6)]
        plans = [d.checkin() for d in devs]
        assert [d.upload(p, u, k, f"u{i}") for i, (d, p, u, k) in enumerate(zip(devs, plans, ups, n))] == [202] * 6
        flat_w1 = _weights(flat.url, 1)
    root = ServerProcess(str(tmp_path / "root_p"), _cfg(tmp_path, "root", 2))
    with root:
        edges = [ServerProcess(str(tmp_path / f"edge{e}_p"),
                               _cfg(tmp_path, f"edge{e}", 3, upstream=root.url, upstream_device_id=f"edge{e}",
                                    upstream_timeout_s=60.0)) for e in range(2)]
        for e in edges:
            e.start()
        try:
            region = {0: [0, 2, 4], 1: [1, 3, 5]}  # device i -> edge i % 2
            devs = {i: Device(edges[i % 2].url, f"p{i}") for i in range(6)}
            plans = {i: devs[i].checkin() for i in range(6)}
            codes: dict[int, int] = {}
            # edge 1 completes its round; the last upload waits for the root's version 1
            for i in region[1][:2]:
                codes[i] = devs[i].upload(plans[i], ups[i], n[i], f"u{i}")
            waiter = threading.Thread(target=lambda: codes.__setitem__(5, devs[5].upload(plans[5], ups[5], n[5], "u5")))
            waiter.start()
            # edge 0 acknowledges two updates, then is killed (master and workers, SIGKILL)
            for i in region[0][:2]:
                codes[i] = devs[i].upload(plans[i], ups[i], n[i], f"u{i}")
            edges[0].kill()
            edges[0].start()  # same state directory, a new port
            for i in region[0]:
                devs[i].url = edges[0].url
            assert devs[2].upload(plans[2], ups[2], n[2], "u2") == 202  # a retry of an acknowledged upload
            codes[4] = devs[4].upload(plans[4], ups[4], n[4], "u4")
            waiter.join(90)
            assert codes == {i: 202 for i in range(6)}, codes
            two_level = _weights(root.url, 1)
            st = requests.get(root.url + "/v1/status").json()
            assert st["model"]["version"] == 1 and st["rounds_closed"] == 1
            for e in edges:  # each edge adopted the root's version
                assert requests.get(e.url + "/v1/status").json()["model"]["version"] == 1
                np.testing.assert_array_equal(np.concatenate([w.ravel() for w in _weights(e.url, 1)]),
                                              np.concatenate([w.ravel() for w in two_level]))
        finally:
            for e in edges:
                e.stop()
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(two_level, flat_w1))
    assert diff <= 1e-6, diff
    # and both are the weighted mean of the six updates (edges counted each acknowledged update once)
    w0 = make_bundle(str(tmp_path / "again"))
    for t in range(len(SHAPES)):
        mean = sum(k * u[t].astype(np.float64) for k, u in zip(n, ups)) / sum(n)
        np.testing.assert_allclose(two_level[t], (w0[t] + mean).astype(np.float32), rtol=1e-6, atol=1e-6)


def test_edge_settings_are_checked(tmp_path):
    import pytest

    from server.app import create_app

    make_bundle(str(tmp_path / "bundle"))
    for collector, match in (({"upstream": "root:8000"}, "collector.upstream"),
                             ({"upstream": "http://127.0.0.1:9", "policy": "fedbuff"}, "runs policy 'sync'"),
                             ({"upstream": "http://127.0.0.1:9", "upstream_timeout_s": 0}, "upstream_timeout_s")):
        with pytest.raises(ValueError, match=match):
            create_app(test_config=_cfg(tmp_path, "bad", 2, **collector))
    cfg = _cfg(tmp_path, "median", 2, upstream="http://127.0.0.1:9")
    cfg["train"]["aggregator"] = "median"
    with pytest.raises(ValueError, match="must be linear"):
        create_app(test_config=cfg)
