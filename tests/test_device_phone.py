"""Phones against the real collector (server.app.create_app) served over HTTP from a thread.

A fake model stands in for the TFLite runtime so that every number the phone uploads can be
worked out by hand: each `train_step` moves the weights by lr * [1, 2] and lr * [2].
"""

from __future__ import annotations

import hashlib
import json
import threading

import numpy as np
import pytest
from werkzeug.serving import make_server

from data.special_ids import PAD_ID
from device_sim import phone as ph
from device_sim.fleet import fetch_published_weights, run_devices
from device_sim.transport import Transport
from fedmath import encodings

SHAPES = [(2,), (1,)]
INITIAL = [np.array([0.1, -0.2], np.float32), np.array([0.3], np.float32)]
STEP = [np.array([1.0, 2.0], np.float32), np.array([2.0], np.float32)]


class FakeModel:
    """Stands in for TFLiteModel: w <- w + lr * STEP per step; records the batches it saw."""

    def __init__(self) -> None:
        self.w = [np.zeros(s, np.float32) for s in SHAPES]
        self.batches: list[tuple[np.ndarray, np.ndarray]] = []
        self.set_calls = 0

    def set_weights(self, weights):
        self.w = [np.array(a, np.float32) for a in weights]
        self.set_calls += 1

    def get_weights(self):
        return [a.copy() for a in self.w]

    def train_step(self, x, y, lr, clip=0.0):
        self.batches.append((np.array(x), np.array(y)))
        self.w = [a + np.float32(lr) * s for a, s in zip(self.w, STEP)]
        return 1.0 + len(self.batches)


class NoisyModel(FakeModel):
    """A fake whose step is lr times seeded Gaussian noise (seeded by the batch): a dense update
    of any `shapes`, for exercising the encodings."""

    def __init__(self, shapes) -> None:
        super().__init__()
        self.w = [np.zeros(s, np.float32) for s in shapes]

    def train_step(self, x, y, lr, clip=0.0):
        r = np.random.default_rng(int(np.sum(x)))
        self.w = [a + np.float32(lr) * r.normal(size=a.shape).astype(np.float32) for a in self.w]
        return 1.0


class FakeFactory:
    def __init__(self) -> None:
        self.models: list[FakeModel] = []
        self.paths: list[str] = []

    def __call__(self, path):
        self.paths.append(path)
        self.models.append(FakeModel())
        return self.models[-1]


def make_bundle(directory, shapes=SHAPES, initial=INITIAL, tflite=b"not really a tflite model"):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "trainable.tflite").write_bytes(tflite)
    names = [f"w{i:03d}" for i in range(len(shapes))]
    np.savez(directory / "weights.npz", **dict(zip(names, initial)))
    manifest = {"model_version": 0,
                "weights": [{"name": n, "shape": list(s), "dtype": "float32"} for n, s in zip(names, shapes)],
                "files": {"trainable.tflite": hashlib.sha256(tflite).hexdigest()}}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


def server_config(tmp_path, bundle_dir, **server):
    # delta fixed: the default 1/N^1.1 is 1 for a population of one device
    privacy = server.pop("privacy", {"mode": "device", "clip_norm": 1.5, "noise_multiplier": 0.5, "delta": 1e-5})
    # scripted phones register plain ids unless a test gives the collector an issuer key
    collector = {"attestation": "off", **server.pop("collector", {})}
    train = {"local_epochs": 2, "batch_size": 2, "client_learning_rate": 0.5, "max_examples_per_client": 3,
             "aggregator": "weighted_mean", **server.pop("train", {})}
    cfg = {"goal_count": 1, "over_selection": 1.0, **server}
    return {"server": cfg, "privacy": privacy, "collector": collector, "train": train,
            "bundle_dir": str(bundle_dir), "state_dir": str(tmp_path / "state")}


class LiveServer:
    """The real Flask app on a werkzeug server thread (127.0.0.1, free port)."""

    def __init__(self, config: dict) -> None:
        from server.app import create_app

        self.app = create_app(test_config=config)
        self.httpd = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def status(self) -> dict:
        return Transport(self.url).status()

    def close(self) -> None:
        self.httpd.shutdown()


@pytest.fixture()
def live(tmp_path):
    servers = []

    def start(**server):
        s = LiveServer(server_config(tmp_path, make_bundle(tmp_path / "bundle"), **server))
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()


def _examples(n=3, t=4):
    x = np.arange(1, n * t + 1, dtype=np.int32).reshape(n, t) % 50 + 4
    return x, np.roll(x, -1, axis=1)


def test_phone_trains_clips_noises_and_uploads_hand_checked(live):
    srv = live()
    factory = FakeFactory()
    x, y = _examples(n=5)  # 5 rows, but the plan caps at max_examples = 3
    phone = ph.Phone("alice", x, y, Transport(srv.url), factory, np.random.default_rng(5))
    out = phone.run_round()
    assert out.status == ph.ACCEPTED, out
    assert out.round_complete and out.num_examples == 3 and out.steps == 4

    # Batches: rows [0, 1], then [2, PAD] (padded to the static batch of 2), for 2 epochs.
    model = factory.models[0]
    assert model.set_calls == 1 and factory.paths[0].endswith("trainable.tflite")
    assert len(model.batches) == 4
    np.testing.assert_array_equal(model.batches[0][0], x[:2])
    np.testing.assert_array_equal(model.batches[1][0][0], x[2])
    assert np.all(model.batches[1][0][1] == PAD_ID) and np.all(model.batches[1][1][1] == PAD_ID)

    # delta = 4 steps * 0.5 * ([1, 2], [2]) = ([2, 4], [4]); norm 6 -> clipped to 1.5: ([.5, 1], [1]).
    # noise std = z * C / sqrt(goal) = 0.5 * 1.5 / 1 = 0.75, drawn from the phone's rng in tensor order.
    assert out.update_norm == pytest.approx(6.0)
    noise = np.random.default_rng(5)
    expected = [np.array([0.5, 1.0]) + noise.normal(0, 0.75, 2), np.array([1.0]) + noise.normal(0, 0.75, 1)]
    new = fetch_published_weights(srv.url, 1, SHAPES)
    for n, i, e in zip(new, INITIAL, expected):
        np.testing.assert_allclose(n - i, e, atol=1e-6)

    # bytes: 12 bytes of float32 weights down (+ the bundle), 12-byte payload up (+ header)
    assert out.payload_bytes == 12 and out.bytes_up > 12 and out.bytes_down >= 12
    assert srv.status()["model"]["version"] == 1


def test_weights_and_bundle_are_cached_by_version(live):
    srv = live(goal_count=2, over_selection=1.0, privacy={"mode": "none", "clip_norm": 100.0})
    factory = FakeFactory()
    x, y = _examples()
    t = Transport(srv.url)
    phone = ph.Phone("bob", x, y, t, factory, np.random.default_rng(0))
    phone.ensure_registered()
    model = FakeModel()  # gives the shapes to decode with
    first = phone._weights(0, model)
    requests_after_first = t.stats.by_endpoint.get("weights", 0)
    again = phone._weights(0, model)
    assert again is first and t.stats.by_endpoint.get("weights", 0) == requests_after_first
    p1 = phone._bundle()
    assert phone._bundle() == p1 and t.stats.by_endpoint["bundle"] == len(b"not really a tflite model")


def test_ineligible_phone_never_checks_in_or_trains(live):
    srv = live()
    factory = FakeFactory()
    x, y = _examples()
    phone = ph.Phone("carol", x, y, Transport(srv.url), factory, np.random.default_rng(0))
    for cond in (ph.Conditions(idle=False), ph.Conditions(charging=False), ph.Conditions(unmetered=False)):
        out = phone.run_round(cond)
        assert out.status == ph.INELIGIBLE and out.bytes_up == 0 and out.bytes_down == 0
    assert factory.models == []
    assert srv.status()["round"]["selected"] == 0


def test_phone_without_examples_is_ineligible(live):
    srv = live()
    phone = ph.Phone("dan", np.zeros((0, 4), np.int32), np.zeros((0, 4), np.int32), Transport(srv.url),
                     FakeFactory(), np.random.default_rng(0))
    assert phone.run_round().status == ph.INELIGIBLE


def test_dropout_mid_training_leaves_no_upload(live):
    srv = live()
    factory = FakeFactory()
    x, y = _examples()
    phone = ph.Phone("erin", x, y, Transport(srv.url), factory, np.random.default_rng(0))
    out = phone.run_round(fate=lambda plan, steps, n: ph.Fate(drop_after_steps=1))
    assert out.status == ph.DROPPED and out.steps == 1 and out.payload_bytes == 0
    st = srv.status()
    assert st["round"]["selected"] == 1 and st["round"]["reports"] == 0 and st["model"]["version"] == 0
    # and a straggler abandons before upload too
    out = phone.run_round(fate=lambda plan, steps, n: ph.Fate(late=True))
    assert out.status == ph.LATE and srv.status()["round"]["reports"] == 0


def test_second_upload_for_a_closed_round_is_rejected_not_raised(live):
    srv = live(goal_count=1, over_selection=2.0, privacy={"mode": "none", "clip_norm": 100.0})
    x, y = _examples()
    a = ph.Phone("f1", x, y, Transport(srv.url), FakeFactory(), np.random.default_rng(0))
    b = ph.Phone("f2", x, y, Transport(srv.url), FakeFactory(), np.random.default_rng(1))
    # both check in for round 0 (2 slots); a reports and closes it; b's upload is late
    plan_b = {}

    def fate_b(plan, steps, n):
        plan_b["plan"] = plan
        assert a.run_round().status == ph.ACCEPTED  # a finishes first, closing the round
        return ph.Fate()

    out = b.run_round(fate=fate_b)
    assert out.status == ph.REJECTED and out.error in ("round_closed", "stale_version"), out
    assert srv.status()["model"]["version"] == 1


def test_fleet_runs_rounds_and_publishes_versions(live):
    srv = live(goal_count=3, over_selection=1.34, privacy={"mode": "none", "clip_norm": 100.0})
    clients = {f"u{i}": _examples(n=2 + i) for i in range(4)}
    seen = []
    result = run_devices(srv.url, clients, rounds=2, concurrency=2, model_factory=lambda p: FakeModel(),
                         on_round=seen.append, progress=False)
    s = result.summary()
    assert s["rounds_completed"] == 2 and [r["model_version"] for r in s["rounds"]] == [1, 2]
    assert all(r["accepted"] >= 3 for r in s["rounds"]) and len(seen) == 2
    assert s["bytes_up"] > 0 and s["bytes_down"] > 0
    assert srv.status()["model"]["version"] == 2


def test_attested_fleet_runs_where_an_unattested_one_cannot(live):
    """Phones with certificates from the platform issuer train against a collector that requires
    attestation; the same fleet without them cannot even register."""
    from device_sim.attestation import transports
    from fedmath.attestation import Issuer

    issuer = Issuer.generate()
    srv = live(goal_count=3, over_selection=1.34, privacy={"mode": "device", "clip_norm": 1.0, "noise_multiplier": 1.0,
                                                           "delta": 1e-5},
               collector={"attestation": "required", "attestation_public_key": issuer.public_hex})
    clients = {f"u{i}": _examples(n=2 + i) for i in range(4)}
    fleet = transports(issuer)  # one keystore: a phone keeps its key from one call to the next
    result = run_devices(srv.url, clients, rounds=1, concurrency=2, model_factory=lambda p: FakeModel(),
                         progress=False, transport_factory=fleet)
    s = result.summary()
    assert s["rounds_completed"] == 1 and s["accepted"] >= 3, s
    assert set(s["rounds"][0]["errors"]) <= {"round_closed", "stale_version"}, s  # over-selected: late is fine
    assert srv.status()["attested_devices"] == 5  # four phones and the fleet's probe
    run_devices(srv.url, clients, rounds=1, concurrency=2, model_factory=lambda p: FakeModel(),
                progress=False, transport_factory=fleet)
    out = ph.Phone("intruder", *_examples(n=2), Transport(srv.url), FakeFactory(), np.random.default_rng(0)).run_round()
    assert out.status == ph.FAILED and "attestation_required" in (out.error + out.detail), out


def test_lossy_encodings_never_lengthen_the_clipped_update():
    rng = np.random.default_rng(0)
    plan = ph.Plan(round=0, model_version=0, local_epochs=1, batch_size=2, learning_rate=0.1,
                   clip_norm=1.0, noise_std=0.0, encoding="int8", max_examples=0, deadline_unix=0)
    phone = ph.Phone("g", *_examples(), Transport("http://127.0.0.1:9"), FakeFactory(), rng)
    delta = [rng.normal(size=(50, 40)).astype(np.float32), rng.normal(size=(7,)).astype(np.float32)]
    for name in ("int8", "topk:0.1", "topk_int8:0.1", "hadamard:1", "hadamard:1.75", "hadamard_sr:4"):
        payload, _ = phone.privatize_and_encode(delta, plan, name)
        sent = encodings.decode(name, payload, [d.shape for d in delta])
        assert np.sqrt(sum(float(np.sum(s.astype(np.float64) ** 2)) for s in sent)) <= 1.0 + 1e-5


def test_phone_error_feedback_keeps_residual_across_sessions():
    rng = np.random.default_rng(0)
    plan = ph.Plan(round=0, model_version=0, local_epochs=1, batch_size=2, learning_rate=0.1,
                   clip_norm=100.0, noise_std=0.0, encoding="topk", max_examples=0, deadline_unix=0)
    phone = ph.Phone("h", *_examples(), Transport("http://127.0.0.1:9"), FakeFactory(), rng)
    d1 = [np.array([3.0, 2.0, 1.0], np.float32)]
    p1, _ = phone.privatize_and_encode(d1, plan, "topk:0.3")
    np.testing.assert_array_equal(encodings.decode("topk", p1, [(3,)])[0], [3.0, 0, 0])
    np.testing.assert_array_equal(phone.feedback.residual[0], [0.0, 2.0, 1.0])
    p2, _ = phone.privatize_and_encode([np.array([1.0, 0.5, 2.0], np.float32)], plan, "topk:0.3")
    np.testing.assert_array_equal(encodings.decode("topk", p2, [(3,)])[0], [0, 0, 3.0])
    np.testing.assert_array_equal(phone.feedback.residual[0], [1.0, 2.5, 0.0])


def test_unbiased_quantizer_may_use_the_whole_clip_bound():
    # A delta shorter than the clip (norm 0.5 < C = 1): "hadamard" lengthens it (its error adds
    # energy), and the phone lets it, up to C, rather than shrinking it back to 0.5.
    rng = np.random.default_rng(1)
    plan = ph.Plan(round=0, model_version=0, local_epochs=1, batch_size=2, learning_rate=0.1,
                   clip_norm=1.0, noise_std=0.0, encoding="hadamard:1", max_examples=0, deadline_unix=0)
    phone = ph.Phone("g2", *_examples(), Transport("http://127.0.0.1:9"), FakeFactory(), rng)
    d = rng.normal(size=4096)
    delta = [(0.5 * d / np.linalg.norm(d)).astype(np.float32)]
    payload, _ = phone.privatize_and_encode(delta, plan, "hadamard:1")
    sent = encodings.decode("hadamard", payload, [(4096,)])[0]
    # one level pair everywhere: relative error 0.57, so ||sent|| ~ 0.5 * sqrt(1.57) = 0.63
    assert 0.55 < np.linalg.norm(sent.astype(np.float64)) <= 1.0


def test_hadamard_uploads_are_decoded_by_the_real_collector(tmp_path):
    """A phone sends "hadamard:1.75"; the server (server/validation.py through
    fedmath.encodings.DECODERS) decodes it and publishes initial + exactly what was sent."""
    shapes, initial = [(2048,), (3,)], [np.zeros(2048, np.float32), np.array([0.1, 0.2, 0.3], np.float32)]
    bundle = make_bundle(tmp_path / "hb", shapes=shapes, initial=initial)
    srv = LiveServer(server_config(tmp_path, bundle, privacy={"mode": "none", "clip_norm": 1.0}))
    try:
        sent = []

        class Recording(Transport):
            def upload(self, round_num, body):
                sent.append(body)
                return super().upload(round_num, body)

        phone = ph.Phone("hana", *_examples(), Recording(srv.url), lambda p: NoisyModel(shapes),
                         np.random.default_rng(0), encoding="hadamard:1.75")
        out = phone.run_round()
        assert out.status == ph.ACCEPTED, out
        from fedmath import wire

        header, payload = wire.unpack(sent[0])
        assert header.encoding == "hadamard" and out.payload_bytes == len(payload) < 4 * 2051 / 10
        delta = encodings.decode(header.encoding, payload, shapes)
        assert np.sqrt(sum(np.sum(d.astype(np.float64) ** 2) for d in delta)) <= 1.0 + 1e-5
        for new, w0, d in zip(fetch_published_weights(srv.url, 1, shapes), initial, delta):
            np.testing.assert_allclose(new, w0 + d, rtol=1e-6, atol=1e-7)
    finally:
        srv.close()


@pytest.mark.parametrize("name", ["int8", "hadamard:1.75", "topk_int8:0.1"])
def test_an_encoded_clipped_update_never_exceeds_the_clip(name):
    """The collector refuses an update longer than the clip; stochastic rounding lengthens one.

    An update clipped to exactly the bound (the usual case) must still decode within it, for
    every draw: a fixed safety margin of the rounding's own size failed about half the time.
    """
    from device_sim.phone import encode_within_norm
    from fedmath.privacy import global_l2_norm

    rng = np.random.default_rng(0)
    shapes = [(200, 16), (16,), (300,)]
    for seed in range(200):  # heavy-tailed values: int8's rounding noise is largest against their norm
        update = [rng.standard_t(2, size=s).astype(np.float32) for s in shapes]
        scale = 1.0 / global_l2_norm(update)
        update = [(u * scale).astype(np.float32) for u in update]
        _, decoded = encode_within_norm(name, update, np.random.default_rng(seed), limit=1.0)
        assert global_l2_norm(decoded) <= 1.0 + 1e-6, (name, seed)


def test_phones_keep_their_own_fine_tuned_weights_beside_the_global_ones(live):
    srv = live(goal_count=3, over_selection=1.34, privacy={"mode": "none", "clip_norm": 100.0})
    clients = {f"u{i}": _examples(n=2 + i) for i in range(4)}
    from device_sim.fleet import ModelPool, make_phones

    phones = make_phones(srv.url, clients, ModelPool(lambda p: FakeModel()), keep_personal=True)
    plain = make_phones(srv.url, clients, ModelPool(lambda p: FakeModel()))
    result = run_devices(srv.url, clients, rounds=1, concurrency=2, phones=phones, progress=False)
    outcomes = result.rounds[0].outcomes
    # phones that trained once, from version 0 (a phone of a later wave may have trained round 1's model)
    trained = [p for p in phones.values()
               if [(o.status, o.model_version) for o in outcomes if o.device_id == p.device_id and o.steps] ==
               [(ph.ACCEPTED, 0)]]
    assert len(trained) >= 3
    for p in trained:
        # the global version 0 plus lr * STEP per local step: what the phone trained, kept on the phone
        steps = sum(o.steps for o in outcomes if o.device_id == p.device_id)
        assert p.personal_version == 0 and steps > 0
        for kept, start, step in zip(p.personal, INITIAL, STEP):  # client rate 0.5 (the fixture's plan)
            np.testing.assert_allclose(kept, start + 0.5 * steps * step, rtol=1e-5)
    assert all(p.personal is None for p in plain.values())


def test_personalization_report_scores_personal_against_global():
    from types import SimpleNamespace

    from data.special_ids import BOS_ID, EOS_ID
    from device_sim.personal import personalization_report
    from keyboard.testing import random_weights

    def flat(bias):
        arrays = [np.zeros_like(a) for a in random_weights("lstm", len(bias), 2, 3)]
        arrays[-1] = np.asarray(bias, np.float32)
        return arrays

    glob = flat([0, 0, 0, 0, 2, 1, 1, 1])  # always suggests 4
    mine = flat([0, 0, 0, 0, 1, 1, 1, 2])  # always suggests 7
    phones = {"a": SimpleNamespace(personal=mine, personal_version=3), "b": SimpleNamespace(personal=None)}
    x = np.array([[BOS_ID, 7, 7]])
    y = np.array([[7, 7, EOS_ID]])
    r = personalization_report(phones, glob, {"a": (x, y), "b": (x, y)}, "lstm", keystroke_rows=0)
    assert r["users"] == 2 and r["users_personalized"] == 1 and r["personal_versions"] == [3]
    by = {u["user"]: u for u in r["per_user"]}
    assert (by["a"]["global_top1"], by["a"]["personalized_top1"]) == (0.0, 1.0)
    assert by["b"]["personalized_top1"] == by["b"]["global_top1"] == 0.0  # no weights of its own: global
    assert r["share_improved"] == 0.5
    with pytest.raises(ValueError, match="holdout must name phones"):
        personalization_report(phones, glob, {"c": (x, y)}, "lstm")
