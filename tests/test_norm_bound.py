"""The collector's norm bound (issue 18, finding 4): the chi bound of the declared noise, with a
stated false-rejection probability, a few sigma above the honest norm; no noise: C exactly."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from scipy.stats import ncx2

from fedmath.privacy import max_plausible_norm
from server.app import create_app
from server.testing import TINY_SHAPES, config_dict, make_bundle, random_update, upload_body

SHAPES = [s for _, s in TINY_SHAPES]
DIM = sum(int(np.prod(s)) for s in SHAPES)
ELIGIBLE = {"idle": True, "charging": True, "unmetered": True, "num_examples": 10}


@pytest.mark.parametrize("t", [2.0, 4.0, 6.0])
def test_an_honest_update_is_refused_at_most_as_often_as_stated(t):
    """Worst case over ||u|| <= C (||u|| = C: the noncentral chi^2 grows with its centre), computed
    exactly: P[||u + z|| > bound] = ncx2.sf(bound^2 / s^2, d, C^2 / s^2) <= exp(-t^2 / 2). The old
    bound (C^2 + s^2 d + 6 (s^2 sqrt(2d) + 2 C s), "below 1e-8") refused up to 1 honest device in 500
    with one coordinate, 1 in 250,000 with the 31 values of the tests' fake model."""
    stated = math.exp(-t * t / 2)
    for dim in (1, 2, 10, DIM, 100, 1000, 100_000, 413_272):
        for s in (1e-3, 0.01, 0.1, 1.0, 10.0):
            bound = max_plausible_norm(1.0, s, dim, t)
            refused = ncx2.sf(bound**2 / s**2, dim, 1.0 / s**2)
            assert refused <= stated, (dim, s, bound, refused, stated)


def test_the_bound_sits_a_few_sigma_above_the_honest_norm():
    for dim in (1, DIM, 1000, 413_272):
        for s in (1e-3, 0.0035, 0.1, 1.0):
            honest = math.sqrt(1.0 + s * s * dim)  # sqrt(E ||u + z||^2) with ||u|| = C = 1
            bound = max_plausible_norm(1.0, s, dim, 6.0)
            assert honest <= bound <= (honest + 6.0 * s) * (1 + 1e-5)
    assert max_plausible_norm(2.0, 0.0, 10, 6.0) == pytest.approx(2.0, rel=2e-5)


def make_client(tmp_path, privacy, collector=None):
    bundle = str(tmp_path / "bundle")
    if not os.path.exists(bundle):
        make_bundle(bundle)
    app = create_app(test_config=config_dict(bundle, str(tmp_path / "state"), {"goal_count": 3, "over_selection": 1.0},
                                             privacy, collector, {"max_examples_per_client": 100}))
    client = app.test_client()
    heads = []
    for i in range(3):
        token = client.post("/v1/devices", json={"device_id": f"d{i}"}).json["token"]
        heads.append({"Authorization": f"Bearer {token}"})
        r = client.post("/v1/checkin", json=ELIGIBLE, headers=heads[-1])
        assert r.status_code == 200, r.json
    return client, heads, r.json["plan"]


def test_a_noise_free_device_cannot_exceed_c_by_more_than_the_margin(tmp_path):
    """Device noise: an update that carries no noise is accepted up to the bound and refused above,
    so its signal exceeds C by at most the margin sqrt(C^2 + s^2 d) - C + a few s, and an update
    that carries its noise has almost no room left for more signal."""
    privacy = {"mode": "device", "clip_norm": 1.0, "noise_multiplier": 1.0, "delta": 1e-5}
    client, heads, plan = make_client(tmp_path, privacy)
    s = plan["noise_std"]
    assert s == pytest.approx(1.0 / math.sqrt(3))
    bound = max_plausible_norm(1.0, s, DIM, 6.0)
    margin = bound - 1.0
    assert margin <= math.sqrt(1 + s * s * DIM) - 1 + 6.0 * s + 1e-4
    rng = np.random.default_rng(0)
    r = client.post("/v1/rounds/0/updates", data=upload_body(0, 0, random_update(SHAPES, bound * 1.001, rng), 5),
                    headers=heads[0])
    assert r.status_code == 400 and r.json["error"] == "norm_too_large", r.json
    r = client.post("/v1/rounds/0/updates", data=upload_body(0, 0, random_update(SHAPES, bound * 0.999, rng), 5),
                    headers=heads[0])
    assert r.status_code == 202, r.json
    # an honest phone: clipped to C, then its noise
    for h in heads[1:]:
        u = random_update(SHAPES, 1.0, rng)
        noisy = [(a + rng.normal(0, s, size=a.shape)).astype(np.float32) for a in u]
        r = client.post("/v1/rounds/0/updates", data=upload_body(0, 0, noisy, 5), headers=h)
        assert r.status_code == 202, r.json


@pytest.mark.parametrize("policy", ["reject", "reclip"])
def test_central_noise_devices_send_clipped_updates_and_c_is_enforced_exactly(tmp_path, policy):
    privacy = {"mode": "central", "clip_norm": 1.0, "noise_multiplier": 1.0, "delta": 1e-5}
    client, heads, plan = make_client(tmp_path, privacy, {"norm_policy": policy})
    assert plan["noise_std"] == 0.0 and plan["clip_norm"] == 1.0  # devices add no noise
    rng = np.random.default_rng(1)
    r = client.post("/v1/rounds/0/updates", data=upload_body(0, 0, random_update(SHAPES, 1.001, rng), 5),
                    headers=heads[0])
    if policy == "reject":
        assert r.status_code == 400 and r.json["error"] == "norm_too_large", r.json
    else:
        assert r.status_code == 202
        col = client.application.extensions["fedkeys"]["collector"]
        assert col.store.get_update(0, "d0").clip_to == pytest.approx(1.0, rel=2e-5)
    r = client.post("/v1/rounds/0/updates", data=upload_body(0, 0, random_update(SHAPES, 0.999, rng), 5),
                    headers=heads[1])
    assert r.status_code == 202, r.json
