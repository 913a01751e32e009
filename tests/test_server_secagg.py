"""Secure rounds through the real collector (gunicorn over loopback): the published model is the
dequantized sum of the survivors' encodings, dropouts at each stage, replayed stage messages,
tampered signatures, kill -9 between stages, and no file in the state directory holding a
device's individual update."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from device_sim.secure import SecureReport
from device_sim.transport import Transport, TransportError
from fedcore import aggregator
from fedcore.secure import SecureSum
from fedmath.attestation import DeviceIdentity, Issuer
from secagg import messages, ring
from secagg.client import ProtocolAbort
from server import files
from server.testing import ServerProcess, TINY_SHAPES, config_dict, make_bundle

ELIGIBLE = dict(idle=True, charging=True, unmetered=True, num_examples=5)
SHAPES = [s for _, s in TINY_SHAPES]


class Fleet:
    """`n` attested phones against one collector; `encoded[d]` is what phone d put into the sum."""

    def __init__(self, root, n=6, bits=32, dropout=0.3, timeout_s=30.0, issuer=None):
        self.root = str(root)
        self.bundle = os.path.join(self.root, "bundle")
        self.v0 = make_bundle(self.bundle)
        self.issuer = issuer or Issuer.generate()
        self.n = n
        cfg = config_dict(self.bundle, os.path.join(self.root, "state"),
                          {"goal_count": n, "over_selection": 1.0},
                          {"mode": "none", "clip_norm": 1.0},
                          {"attestation": "required", "attestation_public_key": self.issuer.public_hex,
                           "rate_limit_per_s": 1000.0, "rate_limit_burst": 1000},
                          {"aggregator": "uniform_mean", "max_examples_per_client": 100})
        cfg["secagg"] = {"enabled": True, "bits": bits, "dropout": dropout, "stage_timeout_s": timeout_s}
        self.server = ServerProcess(os.path.join(self.root, "srv"), cfg).start()
        self.rng = np.random.default_rng(0)
        self.ids = [f"phone-{i}" for i in range(n)]
        self.idents = {d: DeviceIdentity.create(d, self.issuer) for d in self.ids}
        self.links, self.reports, self.updates, self.encoded = {}, {}, {}, {}
        for d in self.ids:
            t = Transport(self.server.url, retries=2)
            t.register(d, self.idents[d])
            self.links[d] = t

    def checkin(self):
        checks = {}
        for d in self.ids:
            r = self.links[d].checkin(**ELIGIBLE)
            assert r.selected and r.secure and r.secagg is not None and r.secagg["round"] == r.round, r
            checks[d] = r
        (self.round,) = {r.round for r in checks.values()}
        # every other phone takes the stage info from its check-in; the rest GET it
        self.reports = {d: SecureReport(self.links[d], self.idents[d], self.round, self.issuer.public_hex,
                                        max_wait_s=30, info=checks[d].secagg if i % 2 else None)
                        for i, d in enumerate(self.ids)}
        self.updates = {d: [self.rng.normal(0, 0.1, size=s).astype(np.float32) for s in SHAPES] for d in self.ids}

    def stage(self, name, alive, drop=()):
        out = set()
        for d in sorted(alive):
            if d in drop:
                continue
            rep = self.reports[d]
            try:
                if name == "advertise":
                    rep.advertise()
                elif name == "share":
                    rep.share()
                elif name == "masked":
                    self.encoded[d] = rep.encode(self.updates[d], 1, np.random.default_rng(hash(d) % 1000))
                    rep.masked(self.encoded[d])
                else:
                    rep.unmask()
            except ProtocolAbort:
                continue
            out.add(d)
        return out

    def run(self, drop=None, stages=("advertise", "share", "masked", "unmask"), alive=None):
        drop = drop or {}
        alive = set(self.ids) if alive is None else alive
        for name in stages:
            alive = self.stage(name, alive, drop.get(name, ()))
            if name == "masked":
                self.uploaded = set(alive)
        return alive

    def expected_delta(self, q: ring.Quantizer):
        total = np.zeros(sum(int(np.prod(s)) for s in SHAPES) + 1, np.uint32)
        for d in self.uploaded:
            total = ring.add_mod(total, self.encoded[d], q.bits)
        rule = SecureSum(aggregator.build("uniform_mean"), q)
        return rule.decode(total, len(self.uploaded), [np.zeros(s) for s in SHAPES]).delta

    def published_delta(self, version=1):
        t = self.links[self.ids[0]]
        info = t.model_info()
        assert info.version == version, info
        got = np.frombuffer(t.weights(version).content, "<f4")
        start = np.concatenate([w.reshape(-1) for w in self.v0])
        return got - start

    def status(self):
        return self.links[self.ids[0]].status()

    def wait_closed(self, limit_s=60.0):
        """The status once the secure round has ended (a stage waiting on dropped devices closes
        at its timeout, on the next request)."""
        deadline = time.monotonic() + limit_s
        while True:
            s = self.status()
            if s["rounds_closed"] + s["rounds_abandoned"] >= 1 or time.monotonic() > deadline:
                return s
            time.sleep(0.5)

    def close(self):
        self.server.stop()


@pytest.fixture
def fleet(tmp_path):
    f = Fleet(tmp_path)
    yield f
    f.close()


def _check_published(f):
    assert f.wait_closed()["rounds_closed"] == 1
    q = f.reports[sorted(f.uploaded)[0]].quantizer
    want = np.concatenate([x.reshape(-1) for x in f.expected_delta(q)])
    got = f.published_delta()
    assert np.allclose(got, want, atol=1e-6), np.max(np.abs(got - want))
    # and it is the survivors' mean to within the quantization step
    mean = np.mean([np.concatenate([u.reshape(-1) for u in f.updates[d]]) for d in f.uploaded], axis=0)
    assert np.max(np.abs(got - mean)) < 2 / q.scale + 1e-6


def test_secure_round_publishes_the_exact_sum(fleet):
    fleet.checkin()
    assert fleet.run() == set(fleet.ids)
    _check_published(fleet)
    status = fleet.status()
    assert status["rounds_closed"] == 1 and status["round"]["round"] == fleet.round + 1


@pytest.mark.parametrize("stage", ["advertise", "share", "masked", "unmask"])
def test_dropout_at_each_stage(tmp_path, stage):
    f = Fleet(tmp_path, n=7, dropout=0.3, timeout_s=3.0)  # the stage closes on the timeout
    try:
        f.checkin()
        f.run({stage: {"phone-2"}})
        _check_published(f)
        assert len(f.uploaded) == (7 if stage == "unmask" else 6)
    finally:
        f.close()


def test_too_many_dropouts_abandon_the_round_with_a_reason(tmp_path):
    f = Fleet(tmp_path, n=5, dropout=0.1, timeout_s=3.0)
    try:
        f.checkin()
        f.run({"unmask": {"phone-0", "phone-1", "phone-2"}})
        t = f.links["phone-4"]
        assert f.wait_closed()["rounds_abandoned"] == 1
        assert t.model_info().version == 0
    finally:
        f.close()


def test_plain_uploads_are_refused_and_tampered_signatures_too(fleet):
    fleet.checkin()
    from server.testing import upload_body
    body = upload_body(fleet.round, 0, [np.zeros(s, np.float32) for s in SHAPES], 5)
    result = fleet.links["phone-0"].upload(fleet.round, body)
    assert (result.status, result.accepted, result.error) == (409, False, "secure_only")
    rep = fleet.reports["phone-0"]
    info = rep.get()
    from secagg.client import ClientRound
    keys = ClientRound(fleet.idents["phone-0"], messages.unb64(info["session"], 16, "s"), info["size"], 32).advertise()
    keys["mask_key"] = messages.b64(os.urandom(32))
    with pytest.raises(TransportError) as e:
        rep.post("keys", keys)
    assert e.value.status == 403 and e.value.error == "bad_signature"
    with pytest.raises(TransportError) as e:  # the first version's JSON form of a binary stage message
        rep.post("shares", {"shares": {"2": messages.b64(bytes(messages.SHARE_MESSAGE))}})
    assert e.value.status == 400 and e.value.error == "bad_secagg" and "octet-stream" in str(e.value)


def test_replayed_stage_messages_are_answered_alike(fleet):
    fleet.checkin()
    rep = fleet.reports["phone-0"]
    info = rep.get()
    from secagg.client import ClientRound
    rep.client = ClientRound(fleet.idents["phone-0"], messages.unb64(info["session"], 16, "s"), info["size"], 32,
                             fleet.issuer.public_hex)
    rep.quantizer = ring.Quantizer(**info["quantizer"])
    keys = rep.client.advertise()
    first = rep.post("keys", keys)
    assert rep.post("keys", keys) == first
    other = ClientRound(fleet.idents["phone-0"], rep.client.session, info["size"], 32).advertise()
    with pytest.raises(TransportError) as e:
        rep.post("keys", other)
    assert e.value.status == 409 and e.value.error == "duplicate"
    alive = fleet.run(stages=("advertise",), alive=set(fleet.ids) - {"phone-0"}) | {"phone-0"}
    shares = rep.client.share_keys(rep.get("roster"))  # binary, as every message whose size grows with k
    assert rep.post("shares", shares) == rep.post("shares", shares)
    with pytest.raises(TransportError) as e:
        rep.post("shares", shares[:-1] + bytes([shares[-1] ^ 1]))
    assert e.value.status == 409 and e.value.error == "duplicate"
    alive = fleet.run(stages=("share",), alive=alive - {"phone-0"}) | {"phone-0"}
    q = rep.encode(fleet.updates["phone-0"], 1, np.random.default_rng(5))
    packed = rep.client.masked_input(rep.get("inbox"), q)
    assert rep.post("masked", packed)["accepted"]
    assert rep.post("masked", packed)["accepted"]  # a retry: same answer, counted once
    fleet.encoded["phone-0"] = q
    rest = fleet.run(stages=("masked",), alive=alive - {"phone-0"})
    fleet.uploaded = rest | {"phone-0"}
    fleet.run(stages=("unmask",), alive=fleet.uploaded)
    _check_published(fleet)
    assert rep.post("masked", packed)["accepted"]  # even after the round ended


@pytest.mark.parametrize("after", ["share", "masked", "half of unmask"])
def test_kill_9_between_stages_loses_nothing_acknowledged(tmp_path, after):
    f = Fleet(tmp_path, n=5, timeout_s=30)
    try:
        f.checkin()
        stages = ("advertise", "share", "masked", "unmask")
        if after == "half of unmask":  # the binary unmask messages replayed from the log
            alive = f.run(stages=stages[:3])
            first = set(sorted(alive)[:len(alive) // 2])
            f.run(stages=("unmask",), alive=first)
            f.server.kill()
            f.server.start()
            f.run(stages=("unmask",), alive=alive - first)
        else:
            cut = stages.index(after) + 1
            alive = f.run(stages=stages[:cut])
            f.server.kill()
            f.server.start()
            f.run(stages=stages[cut:], alive=alive)
        _check_published(f)
    finally:
        f.close()


def _windows(raw: bytes, size: int):
    """Every run of `size` little-endian 4-byte values in `raw`, at every byte offset: (k, size) uint32."""
    out = []
    for align in range(4):
        n = (len(raw) - align) // 4
        if n >= size:
            a = np.frombuffer(raw, "<u4", count=n, offset=align)
            out.append(np.lib.stride_tricks.sliding_window_view(a, size))
    return out


def _leaks(state_dir, secrets_by_device, bits=32, tolerance=1 << 12):
    """(file, device) pairs where a stored run of values is within `tolerance` (in the ring, every
    coordinate) of a device's encoded update, or its float32 reading within 1e-4 of its update."""
    found = []
    for top, _, names in os.walk(state_dir):
        for name in names:
            path = os.path.join(top, name)
            with open(path, "rb") as fh:
                raw = fh.read()
            for d, (q, flat) in secrets_by_device.items():
                near = any(np.any(np.max(np.abs(ring.signed(w - q, bits)), axis=1) < tolerance)
                           for w in _windows(raw, q.size))
                with np.errstate(invalid="ignore", over="ignore"):
                    near = near or any(np.any(np.max(np.abs(w.view("<f4") - flat), axis=1) < 1e-4)
                                       for w in _windows(raw, flat.size))
                if near:
                    found.append((path, d))
    return found


def test_the_state_directory_never_holds_an_individual_update(tmp_path):
    fleet = Fleet(tmp_path, timeout_s=120)
    try:
        _inspect_state_dir(fleet)
    finally:
        fleet.close()


def _inspect_state_dir(fleet):
    fleet.checkin()
    alive = fleet.run(stages=("advertise", "share", "masked"))
    state = os.path.join(fleet.root, "state")
    secrets_by_device = {d: (fleet.encoded[d], np.concatenate([u.reshape(-1) for u in fleet.updates[d]]))
                         for d in fleet.uploaded}
    assert _leaks(state, secrets_by_device) == []  # mid-round: masked vectors, shares, keys
    fleet.run(stages=("unmask",), alive=alive)
    assert fleet.status()["rounds_closed"] == 1
    assert _leaks(state, secrets_by_device) == []  # after publication
    # the check can fail: a planted copy of one device's encoding is found
    d = sorted(fleet.uploaded)[0]
    files.atomic_write(os.path.join(state, "planted.bin"), [b"xyz" + fleet.encoded[d].astype("<u4").tobytes()], False)
    assert (os.path.join(state, "planted.bin"), d) in _leaks(state, secrets_by_device)
