"""Anomaly screening in the real collector: reputation kept in its SQLite database (shared by
workers, kept across a restart) and flagged counts in /metrics (server/reputation.py)."""

from __future__ import annotations

import numpy as np
import pytest

from server.testing import TINY_SHAPES, config_dict, make_bundle, upload_body

SHAPES = [s for _, s in TINY_SHAPES]
DEVICES = ["a", "b", "c", "d", "mallory"]


def _app(tmp_path):
    from server.app import create_app

    bundle = str(tmp_path / "bundle")
    if not (tmp_path / "bundle").exists():
        make_bundle(bundle)
    cfg = config_dict(bundle, str(tmp_path / "state"), server={"goal_count": 5, "over_selection": 1.0},
                      privacy={"mode": "none", "clip_norm": 1e4},
                      train={"aggregator": "screened:inner=weighted_mean", "max_examples_per_client": 100})
    return create_app(test_config=cfg)


def _updates(rng, boost: float):
    """Four honest updates along one direction with different norms; mallory's is `boost` times
    the direction, reversed."""
    direction = [np.ones(s, np.float32) for s in SHAPES]
    ups = [[(d * (1 + 0.3 * i) + rng.normal(0, 0.05, d.shape)).astype(np.float32) for d in direction]
           for i in range(4)]
    return ups + [[(-boost * d).astype(np.float32) for d in direction]]


def _round(col, version, ups):
    for device, u in zip(DEVICES, ups):
        col.register(device) if version == 0 else None
        col.checkin(device, {"idle": True, "charging": True, "unmetered": True, "num_examples": 5})
        col.accept(device, version, upload_body(version, version, u, 5))
    assert col.model_info()["version"] == version + 1


def _reputations(col) -> dict:
    from server.reputation import SqliteReputations

    return dict(SqliteReputations(col.store.conn()))


def test_flagged_update_down_weighted_counted_and_remembered_across_a_restart(tmp_path):
    rng = np.random.default_rng(0)
    app = _app(tmp_path)
    col = app.extensions["fedkeys"]["collector"]
    metrics = app.test_client().get("/metrics").data.decode()
    assert "fedkeys_updates_flagged 0" in metrics  # before any screened round

    _round(col, 0, _updates(rng, boost=20.0))
    assert _reputations(col) == {"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0, "mallory": pytest.approx(0.8)}
    metrics = app.test_client().get("/metrics").data.decode()
    assert "fedkeys_updates_flagged 1" in metrics and "fedkeys_updates_flagged_last_round 1" in metrics
    reasons = col.store.conn().execute("SELECT device_id, reasons FROM flagged_updates").fetchall()
    assert [tuple(r) for r in reasons] == [("mallory", '["norm", "direction"]')]
    # the published step is the honest updates' mean, mallory's at 1% weight: it points along +1
    step = np.concatenate([d.reshape(-1) for d in col.aggregator.last.rows.unflatten(
        col.aggregator.previous)])
    assert np.all(step > 0.5)

    # a collector restarted on the same state directory reads the same reputation and moves it on
    app2 = _app(tmp_path)
    col2 = app2.extensions["fedkeys"]["collector"]
    assert _reputations(col2)["mallory"] == pytest.approx(0.8)
    _round(col2, 1, _updates(rng, boost=20.0))
    assert _reputations(col2)["mallory"] == pytest.approx(0.64)
    assert col2.aggregator.last.multipliers[4] == pytest.approx(0.8 * 0.01)  # reputation x flagged weight
    metrics = app2.test_client().get("/metrics").data.decode()
    assert "fedkeys_updates_flagged 2" in metrics


def test_metrics_show_no_flags_without_screening(tmp_path):
    from server.app import create_app

    bundle = str(tmp_path / "bundle")
    make_bundle(bundle)
    app = create_app(test_config=config_dict(bundle, str(tmp_path / "state")))
    text = app.test_client().get("/metrics").data.decode()
    assert "fedkeys_updates_flagged 0" in text and "fedkeys_devices_low_reputation 0" in text
