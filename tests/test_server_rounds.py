"""Round lifecycle depth: deadline and minimum reports, re-clip vs reject, central noise,
privacy accounting, server momentum, pace steering, and restarts that lose and double nothing."""

from __future__ import annotations

import math
import os
import time

import numpy as np
import pytest

from fedcore.messages import Refusal
from fedmath import accounting, encodings
from fedmath.privacy import device_noise_std, global_l2_norm, max_plausible_norm
from server import pace
from server.app import create_app
from server.errors import http_status
from server.testing import (
    TINY_SHAPES,
    config_dict,
    make_bundle,
    random_update,
    upload_body,
)

SHAPES = [s for _, s in TINY_SHAPES]
DIM = sum(int(np.prod(s)) for s in SHAPES)
ELIGIBLE = {"idle": True, "charging": True, "unmetered": True, "num_examples": 10}


def settings(tmp_path, server=None, privacy=None, collector=None, train=None, database=""):
    bundle = str(tmp_path / "bundle")
    if not os.path.exists(bundle):
        make_bundle(bundle)
    server = {"goal_count": 3, "over_selection": 1.3, **(server or {})}
    privacy = {"mode": "device", "clip_norm": 1.0, "noise_multiplier": 0.0, "delta": 1e-6, **(privacy or {})}
    train = {"max_examples_per_client": 100, **(train or {})}
    collector = {**(collector or {}), **({"database": database} if database else {})}
    return config_dict(bundle, str(tmp_path / "state"), server, privacy, collector, train)


def collector_of(app):
    return app.extensions["fedkeys"]["collector"]


def enroll(col, n, prefix="d"):
    """Register and select n devices directly on the Collector; returns their ids."""
    ids = []
    for i in range(n):
        did = f"{prefix}{i}"
        col.register(did)
        ids.append(did)
    return ids


def select_all(col, ids, now=None):
    plans = [col.checkin(d, ELIGIBLE, now=now)["plan"] for d in ids]
    return plans


def weights(col, version):
    return encodings.decode_float32(col.weights_payload(version)[0], SHAPES)


def test_deadline_with_min_reports_publishes_what_arrived(tmp_path, database):
    app = create_app(test_config=settings(tmp_path, collector={"report_deadline_s": 10, "min_reports": 2},
                                          database=database))
    col = collector_of(app)
    ids = enroll(col, 3)
    t0 = time.time()
    plans = select_all(col, ids, now=t0)
    assert plans[0]["deadline_unix"] == pytest.approx(t0 + 10)
    rng = np.random.default_rng(1)
    ups = [random_update(SHAPES, 0.5, rng) for _ in range(2)]
    col.accept(ids[0], 0, upload_body(0, 0, ups[0], 4), now=t0 + 1)
    col.accept(ids[1], 0, upload_body(0, 0, ups[1], 12), now=t0 + 2)
    with pytest.raises(Refusal) as e:  # after the deadline, a report is refused
        col.accept(ids[2], 0, upload_body(0, 0, ups[0], 5), now=t0 + 11)
    assert http_status(e.value) == 409 and e.value.code == "round_closed"
    col.tick(now=t0 + 11)
    st = col.status()
    assert st["model"]["version"] == 1 and st["rounds_closed"] == 1 and st["round"]["round"] == 1
    w0, w1 = weights(col, 0), weights(col, 1)
    for t in range(len(SHAPES)):
        mean = (4 * ups[0][t].astype(np.float64) + 12 * ups[1][t].astype(np.float64)) / 16
        np.testing.assert_allclose(w1[t], (w0[t] + mean).astype(np.float32), rtol=1e-6, atol=1e-7)


def test_deadline_with_too_few_reports_abandons_and_keeps_model(tmp_path, database):
    app = create_app(test_config=settings(tmp_path, collector={"report_deadline_s": 10, "min_reports": 2},
                                          database=database))
    col = collector_of(app)
    ids = enroll(col, 3)
    t0 = time.time()
    select_all(col, ids, now=t0)
    col.accept(ids[0], 0, upload_body(0, 0, random_update(SHAPES, 0.5, np.random.default_rng(0)), 4), now=t0 + 1)
    col.tick(now=t0 + 10.5)
    st = col.status()
    assert st["rounds_abandoned"] == 1 and st["rounds_closed"] == 0
    assert st["model"]["version"] == 0 and st["round"]["round"] == 1 and st["round"]["model_version"] == 0
    rows = col.store.conn().execute("SELECT COUNT(*) FROM updates WHERE spool IS NOT NULL").fetchone()[0]
    assert rows == 0  # the spool slots are free for reuse
    # the next round works from the kept model
    plan = col.checkin(ids[0], ELIGIBLE)["plan"]
    assert plan["round"] == 1 and plan["model_version"] == 0


def test_reject_vs_reclip(tmp_path):
    privacy = {"mode": "device", "clip_norm": 1.0, "noise_multiplier": 1.0}
    big = random_update(SHAPES, 50.0, np.random.default_rng(0))
    sigma = device_noise_std(1.0, 1.0, 3)
    bound = max_plausible_norm(1.0, sigma, DIM, 6.0)
    assert 1.0 < bound < 50.0

    reject = collector_of(create_app(test_config=settings(tmp_path / "a", privacy=privacy)))
    ids = enroll(reject, 1)
    select_all(reject, ids)
    with pytest.raises(Refusal) as e:
        reject.accept(ids[0], 0, upload_body(0, 0, big, 5))
    assert http_status(e.value) == 400 and e.value.code == "norm_too_large"

    reclip = collector_of(create_app(test_config=settings(tmp_path / "b", privacy=privacy,
                                                          collector={"norm_policy": "reclip"})))
    ids = enroll(reclip, 3)
    select_all(reclip, ids)
    for d in ids:
        assert reclip.accept(d, 0, upload_body(0, 0, big, 5))["accepted"]
    delta = [a.astype(np.float64) - b for a, b in zip(weights(reclip, 1), weights(reclip, 0))]
    assert global_l2_norm(delta) == pytest.approx(bound, rel=1e-4)  # three identical updates, each re-clipped


def test_central_noise_mode(tmp_path):
    cfg = settings(tmp_path, privacy={"mode": "central", "clip_norm": 1.0, "noise_multiplier": 1.0},
                   collector={"norm_policy": "reclip", "population": 100})
    col = collector_of(create_app(test_config=cfg))
    ids = enroll(col, 3)
    plans = select_all(col, ids)
    assert plans[0]["noise_std"] == 0.0  # devices only clip
    for d in ids:
        col.accept(d, 0, upload_body(0, 0, [np.zeros(s, np.float32) for s in SHAPES], 5))
    delta = [a.astype(np.float64) - b for a, b in zip(weights(col, 1), weights(col, 0))]
    # uniform weighting (DP on): mean = noise / 3 with noise std z*C = 1 per coordinate
    flat = np.concatenate([d.ravel() for d in delta]) * 3
    assert 0.5 < flat.std() < 1.6
    meta = col.model_meta(1)
    assert meta["effective_noise_multiplier"] == 1.0 and meta["sampling_probability"] == pytest.approx(0.03)
    assert meta["epsilon"] == pytest.approx(accounting.dp_epsilon([(0.03, 1.0)], 1e-6))
    # first-to-check-in selection is no random sample: beside it, zCDP without amplification,
    # one round at z = 1: rho = 1 / (2 * 1^2)
    assert meta["rho"] == pytest.approx(0.5)
    assert meta["epsilon_unamplified"] == pytest.approx(accounting.zcdp_epsilon(0.5, 1e-6))


def test_device_mode_epsilon_in_status_and_metadata(tmp_path):
    cfg = settings(tmp_path, privacy={"mode": "device", "clip_norm": 1.0, "noise_multiplier": 1.2},
                   collector={"population": 300})
    col = collector_of(create_app(test_config=cfg))
    ids = enroll(col, 4)
    eps = []
    rng = np.random.default_rng(0)
    for r in range(2):
        plans = select_all(col, ids[:3])
        assert plans[0]["noise_std"] == pytest.approx(1.2 / math.sqrt(3))
        for d in ids[:3]:
            col.accept(d, r, upload_body(r, r, random_update(SHAPES, 0.8, rng), 7))
        eps.append(col.model_meta(r + 1)["epsilon"])
    expected = accounting.dp_epsilon([(0.01, 1.2)] * 2, 1e-6)
    assert eps[1] == pytest.approx(expected) and eps[0] < eps[1]
    st = col.status()
    assert st["privacy"]["epsilon"] == pytest.approx(expected) and st["privacy"]["rounds_accounted"] == 2
    with open(os.path.join(col.settings.state_dir, "models", "v2.json")) as f:
        assert '"epsilon"' in f.read()


def test_accounting_kernels():
    assert accounting.dp_epsilon([], 1e-5) == 0.0
    assert math.isinf(accounting.dp_epsilon([(0.1, 0.0)], 1e-5))
    one = accounting.dp_epsilon([(0.01, 1.0)], 1e-5)
    assert 0 < one < accounting.dp_epsilon([(0.01, 1.0)] * 10, 1e-5)
    assert accounting.dp_epsilon([(0.01, 2.0)], 1e-5) < one
    # k equal weights with device noise sized for n reports: z * sqrt(k / n)
    sd = device_noise_std(2.0, 1.5, 8)
    assert accounting.device_noise_multiplier(sd, 1.5, [1.0] * 8) == pytest.approx(2.0)
    assert accounting.device_noise_multiplier(sd, 1.5, [1.0] * 2) == pytest.approx(1.0)
    assert accounting.sampling_probability(10, 5) == 1.0
    with pytest.raises(ValueError):
        accounting.dp_epsilon([(0.1, 1.0)], 0.0)


@pytest.mark.parametrize("algorithm,steps", [
    ("fedavg", 1.0 + 1.9),  # heavy ball: a1 = g, a2 = 0.9 g + g
    ("fedavgm", 1.9 + 2.71),  # Nesterov: g + 0.9 a with a1 = g, then a2 = 1.9 g: g + 1.71 g
])
def test_server_momentum(tmp_path, algorithm, steps):
    train = {"algorithm": algorithm, "server_learning_rate": 0.5, "server_momentum": 0.9}
    col = collector_of(create_app(test_config=settings(tmp_path, server={"goal_count": 1}, train=train)))
    (d,) = enroll(col, 1)
    u = random_update(SHAPES, 0.5, np.random.default_rng(3))
    for r in range(2):
        col.checkin(d, ELIGIBLE)
        col.accept(d, r, upload_body(r, r, u, 5))
    w0, w2 = weights(col, 0), weights(col, 2)
    for t in range(len(SHAPES)):  # the same delta u twice: w2 = w0 + lr * steps * u
        np.testing.assert_allclose(w2[t], w0[t] + 0.5 * steps * u[t], rtol=1e-5, atol=1e-6)
    meta = col.model_meta(2)["algorithm"]["server_optimizer"]
    assert meta["name"] == ("momentum" if algorithm == "fedavg" else "nesterov") and meta["momentum"] == 0.9


def test_restart_replays_spool_and_checkpoint_exactly_once(tmp_path, database):
    cfg = settings(tmp_path, server={"goal_count": 7, "over_selection": 1.0}, collector={"checkpoint_every": 3},
                   database=database)
    col = collector_of(create_app(test_config=cfg))
    ids = enroll(col, 7)
    select_all(col, ids)
    rng = np.random.default_rng(5)
    ups = [random_update(SHAPES, 0.7, rng) for _ in ids]
    bodies = [upload_body(0, 0, u, 3 + i, f"up{i}") for i, u in enumerate(ups)]
    for i in range(5):  # checkpoint after 3, two updates only in the spool
        col.accept(ids[i], 0, bodies[i])
    st = col.store.get_round(0)
    assert st.ckpt_count == 3 and st.reports == 5
    # a crash between spool write and commit leaves an orphan file: it must not count
    with open(os.path.join(col.spool_dir, "r0-orphan.bin"), "wb") as f:
        f.write(bodies[6][100:])
    del col  # "kill -9": nothing flushed, no shutdown hook
    col = collector_of(create_app(test_config=cfg))
    assert col.accept(ids[4], 0, bodies[4]) == {"accepted": True, "round_complete": False}  # retry: idempotent
    for i in (5, 6):
        col.accept(ids[i], 0, bodies[i])
    assert col.status()["model"]["version"] == 1
    w0, w1 = weights(col, 0), weights(col, 1)
    n = [3 + i for i in range(7)]
    for t in range(len(SHAPES)):
        mean = sum(k * u[t].astype(np.float64) for k, u in zip(n, ups)) / sum(n)
        np.testing.assert_allclose(w1[t], (w0[t] + mean).astype(np.float32), rtol=1e-6, atol=1e-7)


def test_crash_while_publishing_is_finished_on_restart(tmp_path, monkeypatch, database):
    cfg = settings(tmp_path, server={"goal_count": 2}, database=database)
    app = create_app(test_config=cfg)
    col = collector_of(app)
    ids = enroll(col, 2)
    select_all(col, ids)
    rng = np.random.default_rng(9)
    ups = [random_update(SHAPES, 0.5, rng) for _ in ids]
    col.accept(ids[0], 0, upload_body(0, 0, ups[0], 2))

    def boom(*a, **k):
        raise RuntimeError("killed while publishing")

    monkeypatch.setattr(col.store, "insert_model", boom)
    with pytest.raises(RuntimeError):
        col.accept(ids[1], 0, upload_body(0, 0, ups[1], 6, "last"))
    monkeypatch.undo()
    assert col.store.latest_model().version == 0  # the model file may exist, but nothing announced it
    col2 = collector_of(create_app(test_config=cfg))  # restart closes the full round
    assert col2.status()["model"]["version"] == 1
    assert col2.accept(ids[1], 0, upload_body(0, 0, ups[1], 6, "last")) == {"accepted": True, "round_complete": True}
    w0, w1 = weights(col2, 0), weights(col2, 1)
    for t in range(len(SHAPES)):
        mean = (2 * ups[0][t].astype(np.float64) + 6 * ups[1][t].astype(np.float64)) / 8
        np.testing.assert_allclose(w1[t], (w0[t] + mean).astype(np.float32), rtol=1e-6, atol=1e-7)


def test_two_apps_on_one_state_dir_agree(tmp_path, database):
    """Two workers (apps) over one state directory: selection slots and the sum are shared."""
    cfg = settings(tmp_path, server={"goal_count": 4, "over_selection": 1.0}, collector={"checkpoint_every": 2},
                   database=database)
    a, b = collector_of(create_app(test_config=cfg)), collector_of(create_app(test_config=cfg))
    ids = enroll(a, 5)
    for i, d in enumerate(ids[:4]):
        (a if i % 2 else b).checkin(d, ELIGIBLE)
    with pytest.raises(Refusal) as e:
        a.checkin(ids[4], ELIGIBLE)
    assert e.value.code == "round_full"
    rng = np.random.default_rng(2)
    ups = [random_update(SHAPES, 0.5, rng) for _ in range(4)]
    for i, d in enumerate(ids[:4]):
        (a if i in (0, 2, 3) else b).accept(d, 0, upload_body(0, 0, ups[i], 1 + i))
    w0, w1 = weights(b, 0), weights(b, 1)
    for t in range(len(SHAPES)):
        mean = sum((1 + i) * ups[i][t].astype(np.float64) for i in range(4)) / 10
        np.testing.assert_allclose(w1[t], (w0[t] + mean).astype(np.float32), rtol=1e-6, atol=1e-7)


def test_a_state_dir_from_another_bundle_is_refused(tmp_path):
    """Restarting on one's own state resumes; a state left by another bundle is refused by name."""
    cfg = settings(tmp_path)
    collector_of(create_app(test_config=cfg))
    collector_of(create_app(test_config=cfg))  # the same bundle: resumes
    other = str(tmp_path / "other_bundle")
    make_bundle(other, seed=1)  # same shapes, other initial weights
    with pytest.raises(ValueError, match="started from another bundle"):
        create_app(test_config={**cfg, "bundle_dir": other})
    wider = str(tmp_path / "wider_bundle")
    make_bundle(wider, [(n, (s[0] + 1,) + tuple(s[1:])) for n, s in TINY_SHAPES])  # another vocabulary
    with pytest.raises(ValueError, match="parameters"):
        create_app(test_config={**cfg, "bundle_dir": wider})


def test_pace_steering_spreads_devices():
    kw = dict(base=2, cap=600, population=1000, slots=10, goal=8, reports=4, first_checkin=100.0, deadline=160.0)
    waits = [pace.retry_after(f"d{i}", 3, 110.0, **kw) for i in range(200)]
    assert all(1 <= w <= 600 for w in waits)
    assert len(set(waits)) > 50  # spread out, not all at once
    assert min(waits) >= 2 + 10  # 4 more reports at 0.4/s: about 10 s until the round needs devices
    assert pace.retry_after("d1", 3, 110.0, **kw) == waits[1]  # stable for one device and round
    limiter = pace.RateLimiter(1.0, 2)
    assert [limiter.take("k", 0.0) for _ in range(3)] == [None, None, 1]
    assert limiter.take("k", 1.0) is None


@pytest.mark.parametrize("bad", [{"privacy": {"mode": "secure"}}, {"server": {"goal_count": 0}},
                                 {"collector": {"norm_policy": "maybe"}}, {"collector": {"nope": 1}}, {"extra": 1}])
def test_bad_config_raises_value_error(tmp_path, bad):
    cfg = settings(tmp_path)
    for k, v in bad.items():
        if isinstance(cfg.get(k), dict):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    with pytest.raises(ValueError):
        create_app(test_config=cfg)
