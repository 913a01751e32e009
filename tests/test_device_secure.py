"""Phones (device_sim.phone) report through the secure stages when the collector runs secure
aggregation: the published model is the clipped updates' mean, to within a quantization step."""

from __future__ import annotations

import threading

import numpy as np

from device_sim import phone as ph
from device_sim.fleet import fetch_published_weights
from device_sim.transport import Transport
from fedmath.attestation import DeviceIdentity
from tests.test_device_phone import INITIAL, SHAPES, FakeFactory, LiveServer, _examples, make_bundle, server_config


def test_phones_run_the_secure_stages_and_the_mean_is_published(tmp_path):
    cfg = server_config(tmp_path, make_bundle(tmp_path / "bundle"), goal_count=3,
                        privacy={"mode": "none", "clip_norm": 1.5},
                        collector={"rate_limit_per_s": 1000.0, "rate_limit_burst": 1000},
                        train={"aggregator": "uniform_mean"})
    cfg["secagg"] = {"enabled": True, "bits": 24, "stage_timeout_s": 30.0}
    srv = LiveServer(cfg)
    try:
        idents = {d: DeviceIdentity.create(d, None) for d in ("a", "b", "c")}
        x, y = _examples(n=3)
        phones = [ph.Phone(d, x, y, Transport(srv.url, identities=idents.__getitem__), FakeFactory(),
                           np.random.default_rng(i)) for i, d in enumerate(idents)]
        outs: dict[str, ph.Outcome] = {}
        threads = [threading.Thread(target=lambda p=p: outs.__setitem__(p.device_id, p.run_round())) for p in phones]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert all(o.status == ph.ACCEPTED for o in outs.values()), outs
        assert srv.status()["model"]["version"] == 1
        new = fetch_published_weights(srv.url, 1, SHAPES)
        # each delta = 4 steps * 0.5 * ([1, 2], [2]) = ([2, 4], [4]), norm 6, clipped to 1.5
        expected = [np.array([0.5, 1.0]), np.array([1.0])]
        for n, i, e in zip(new, INITIAL, expected):
            np.testing.assert_allclose(n - i, e, atol=1e-4)
    finally:
        srv.close()
