"""Phones (device_sim.phone) report through the secure stages when the collector runs secure
aggregation: the published model is the clipped updates' mean, to within a quantization step."""

from __future__ import annotations

import functools
import threading

import numpy as np
import pytest

from device_sim import phone as ph
from device_sim.attestation import transports
from device_sim.fleet import fetch_published_weights
from device_sim.transport import Transport
from fedmath.attestation import DeviceIdentity, Issuer
from tests.test_device_phone import INITIAL, SHAPES, FakeFactory, LiveServer, _examples, make_bundle, server_config


@pytest.mark.parametrize("attested", [False, True])
def test_phones_run_the_secure_stages_and_the_mean_is_published(tmp_path, attested):
    issuer = Issuer.generate() if attested else None
    limits = {"rate_limit_per_s": 1000.0, "rate_limit_burst": 1000}
    if attested:  # the collector and every phone check each neighbour's certificate against the issuer
        limits.update(attestation="required", attestation_public_key=issuer.public_hex)
    cfg = server_config(tmp_path, make_bundle(tmp_path / "bundle"), goal_count=3,
                        privacy={"mode": "none", "clip_norm": 1.5}, collector=limits,
                        train={"aggregator": "uniform_mean"})
    cfg["secagg"] = {"enabled": True, "bits": 24, "stage_timeout_s": 30.0}
    srv = LiveServer(cfg)
    try:
        links = {d: (transports(issuer) if attested else
                     functools.partial(Transport, identities=lambda d: DeviceIdentity.create(d, None)))(srv.url)
                 for d in ("a", "b", "c")}
        assert all(t.issuer_public == (issuer.public_hex if attested else None) for t in links.values())
        x, y = _examples(n=3)
        phones = [ph.Phone(d, x, y, links[d], FakeFactory(), np.random.default_rng(i)) for i, d in enumerate(links)]
        outs: dict[str, ph.Outcome] = {}
        threads = [threading.Thread(target=lambda p=p: outs.__setitem__(p.device_id, p.run_round())) for p in phones]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert all(o.status == ph.ACCEPTED for o in outs.values()), outs
        assert srv.status()["model"]["version"] == 1
        new = fetch_published_weights(srv.url, 1, SHAPES, transport_factory=transports(issuer))
        # each delta = 4 steps * 0.5 * ([1, 2], [2]) = ([2, 4], [4]), norm 6, clipped to 1.5
        expected = [np.array([0.5, 1.0]), np.array([1.0])]
        for n, i, e in zip(new, INITIAL, expected):
            np.testing.assert_allclose(n - i, e, atol=1e-4)
    finally:
        srv.close()
