"""secagg/: Shamir sharing, the neighbour graph, the ring, and whole rounds in process with
dropouts at every stage, tampered shares and signatures, and replayed messages."""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
import pytest

from fedcore.messages import Refusal
from fedmath.attestation import DeviceIdentity, Issuer
from secagg import crypto, graph, messages, ring, shamir
from secagg.client import ClientRound, ProtocolAbort
from secagg.server import ServerRound


def _is_prime(n: int) -> bool:
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for a in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47):
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


# -- Shamir -------------------------------------------------------------------------------------
def test_field_prime_is_the_smallest_prime_above_2_256():
    assert _is_prime(shamir.PRIME)
    assert not any(_is_prime(2**256 + k) for k in range(1, 297, 2))


def test_shamir_recovers_at_threshold_from_any_subset():
    secret = os.urandom(32)
    shares = shamir.split(secret, [1, 2, 3, 4, 5, 6, 7], 4)
    assert shamir.combine(shares[:4], 4) == secret
    assert shamir.combine([shares[6], shares[1], shares[4], shares[2]], 4) == secret
    assert shamir.combine(shares, 4) == secret  # more than t: the first t are used


def test_shamir_below_threshold_refuses_and_says_nothing():
    secret = bytes(range(32))
    shares = shamir.split(secret, [1, 2, 3, 4, 5], 3)
    with pytest.raises(shamir.ShamirError, match="need 3 shares"):
        shamir.combine(shares[:2], 3)
    # t - 1 shares fit every secret: interpolating them with a chosen point at x = 0 always works
    other = bytes(32)
    forged = shamir.combine(shares[:2] + [shamir.Share(6, _value_at(shares[:2], other, 6))], 3)
    assert forged == other


def _value_at(shares, secret, x):
    """The value at x of the degree-2 polynomial through (0, secret) and the two shares."""
    pts = [(0, int.from_bytes(secret, "big"))] + [(s.x, s.y) for s in shares]
    p, y = shamir.PRIME, 0
    for i, (xi, yi) in enumerate(pts):
        num = den = 1
        for j, (xj, _) in enumerate(pts):
            if j != i:
                num, den = num * (x - xj) % p, den * (xi - xj) % p
        y = (y + yi * num * pow(den, -1, p)) % p
    return y


def test_shamir_hand_computed_polynomial():
    # f(x) = s + a1 x + a2 x^2 with the coefficients fixed through the public interface's maths
    s, a1, a2 = 5, 7, 11
    shares = [shamir.Share(x, (s + a1 * x + a2 * x * x) % shamir.PRIME) for x in (1, 2, 3)]
    assert int.from_bytes(shamir.combine(shares, 3), "big") == 5


def test_lagrange_coefficients_hand_computed():
    # points 1, 2, 3: l_1 = 2*3 / ((2-1)(3-1)) = 3, l_2 = 1*3 / ((1-2)(3-2)) = -3, l_3 = 1*2 / ((1-3)(2-3)) = 1
    assert shamir.lagrange_at_zero((1, 2, 3)) == (3, shamir.PRIME - 3, 1)
    # the same secret through two point sets sharing the cache
    secret = os.urandom(32)
    shares = shamir.split(secret, [2, 5, 9, 11], 3)
    assert shamir.combine(shares[1:], 3) == secret == shamir.combine(shares[:3], 3)


def test_shamir_rejects_bad_input():
    with pytest.raises(shamir.ShamirError):
        shamir.split(b"short", [1, 2], 2)
    with pytest.raises(shamir.ShamirError):
        shamir.split(bytes(32), [1, 1, 2], 2)
    with pytest.raises(shamir.ShamirError):
        shamir.split(bytes(32), [1, 2], 3)


# -- graph --------------------------------------------------------------------------------------
def test_graph_parameters_meet_their_bounds():
    p = graph.choose(1000, 0.3)
    assert p.degree % 2 == 0 and p.degree < 999
    assert p.threshold > p.degree // 2
    assert p.correctness_bits >= 20 and p.security_bits >= 40
    smaller = p.degree - 2  # no threshold on a smaller degree meets both bounds
    assert all(graph.bits(smaller, t, 0.3, 0.05)[0] < 20 or graph.bits(smaller, t, 0.3, 0.05)[1] < 40
               for t in range(smaller // 2 + 1, smaller + 1))
    assert graph.choose(1000, 0.0).degree < graph.choose(1000, 0.1).degree < p.degree
    small = graph.choose(5, 0.1)
    assert (small.degree, small.threshold) == (4, 3)  # complete graph, t just above k/2


def test_graph_is_regular_and_symmetric():
    near = graph.neighbours(50, 10, seed=3)
    for i, ns in enumerate(near):
        assert len(ns) == 10 and i not in ns
        assert all(i in near[j] for j in ns)
    assert graph.neighbours(50, 10, seed=3) == near != graph.neighbours(50, 10, seed=4)


# -- ring ---------------------------------------------------------------------------------------
def test_quantize_is_unbiased_and_sums_without_wraparound():
    q = ring.Quantizer(bits=16, clip_norm=1.0, coord_bound=1.0, max_devices=4)
    # scale = (2^15 - 1 - 4) / (4 * 1.0) = 8190.75
    assert q.scale == pytest.approx(8190.75)
    u = np.array([0.5, -0.25, 0.0001, -1.0])
    u = u / np.linalg.norm(u) * 0.999
    rng = np.random.default_rng(0)
    mean = np.mean([ring.signed(ring.quantize(u, q, rng), 16) for _ in range(4000)], axis=0) / q.scale
    assert np.allclose(mean, u, atol=2e-4)
    total = np.zeros(4, np.uint32)
    worst = np.array([1.0, 0, 0, 0])
    for _ in range(4):
        total = ring.add_mod(total, ring.quantize(worst, q, rng), 16)
    assert ring.dequantize(total, q)[0] == pytest.approx(4.0, abs=1e-3)


def test_pack_round_trips_at_every_width():
    rng = np.random.default_rng(1)
    for bits in (2, 7, 8, 16, 20, 31, 32):
        v = rng.integers(0, 2**bits, size=37, dtype=np.uint64).astype(np.uint32)
        raw = ring.pack(v, bits)
        assert len(raw) == ring.packed_bytes(37, bits)
        assert np.array_equal(ring.unpack(raw, 37, bits), v)


def test_discrete_gaussian_moments():
    rng = np.random.default_rng(2)
    x = ring.discrete_gaussian(3.0, (200000,), rng)
    assert x.dtype == np.int64
    assert abs(x.mean()) < 0.05 and abs(x.std() - 3.0) < 0.05


def test_expand_is_deterministic_and_bounded():
    seed = bytes(32)
    a, b = crypto.expand(seed, 1000, 20), crypto.expand(seed, 1000, 20)
    assert np.array_equal(a, b) and a.max() < 2**20 and a.max() > 2**19
    assert not np.array_equal(a, crypto.expand(b"\x01" + bytes(31), 1000, 20))


@pytest.mark.parametrize("bits", [7, 20, 32])
def test_apply_masks_in_place_equals_adding_the_expanded_mask(bits):
    seed = bytes(range(32))
    values = np.random.default_rng(0).integers(0, 2**bits, 1001, dtype=np.uint64).astype(np.uint32)
    mask = crypto.expand(seed, 1001, bits)
    plus, minus = values.copy(), values.copy()
    crypto.apply_masks(plus, [(seed, 1)], bits)
    crypto.apply_masks(minus, [(seed, -1)], bits)
    assert np.array_equal(plus, ring.add_mod(values, mask, bits))
    assert np.array_equal(minus, ring.sub_mod(values, mask, bits))
    total = values.copy()
    ring.add_into(total, mask, bits)
    assert np.array_equal(total, plus)
    with pytest.raises(ValueError):
        crypto.apply_masks(values.astype(np.int64), [(seed, 1)], bits)


def test_graph_tails_in_one_pass_equal_the_direct_bounds():
    for k, dropout in ((4, 0.1), (10, 0.0), (28, 0.1), (41, 0.3)):
        correct, secure = graph._tails(k, dropout, 0.05)
        for t in range(k // 2 + 1, k + 1):
            c_bits, s_bits = graph.bits(k, t, dropout, 0.05)
            assert correct[t] == pytest.approx(c_bits, rel=1e-9) or correct[t] == c_bits
            assert secure[t] == pytest.approx(s_bits, rel=1e-9)


# -- whole rounds -------------------------------------------------------------------------------
SIZE, BITS = 64, 20


class Round:
    """n devices and a server in process; `drop` maps a stage to the device indices that stop
    before sending it."""

    def __init__(self, n: int, dropout: float = 0.1, issuer: Issuer | None = None, seed: int = 7):
        self.issuer = issuer or Issuer.generate()
        self.ids = [f"phone-{i:03d}" for i in range(n)]
        self.idents = {d: DeviceIdentity.create(d, self.issuer) for d in self.ids}
        self.session = os.urandom(16)
        self.server = ServerRound(self.session, SIZE, BITS, seed, dropout,
                                  lambda d: self.idents[d].public_hex if d in self.idents else None)
        self.clients = {d: ClientRound(self.idents[d], self.session, SIZE, BITS, self.issuer.public_hex)
                        for d in self.ids}
        rng = np.random.default_rng(seed)
        self.q = {d: rng.integers(0, 2**BITS, size=SIZE, dtype=np.int64).astype(np.uint32) for d in self.ids}
        self.alive = set(self.ids)

    def stage(self, name, send, drop=()):
        if self.server.stage == "abandoned":
            return
        for d in sorted(self.alive):
            if d in drop:
                self.alive.discard(d)
                continue
            try:
                send(d)
            except ProtocolAbort:
                self.alive.discard(d)
            assert self.server.all_answered() == (not self.server.waiting_on())  # the count the collector reads
        self.server.close_stage()

    def run(self, drop: dict | None = None):
        drop = drop or {}
        s, c = self.server, self.clients
        self.stage("advertise", lambda d: s.advertise(d, c[d].advertise()), drop.get("advertise", ()))
        self.stage("share", lambda d: s.share(d, c[d].share_keys(s.roster(d))), drop.get("share", ()))
        self.uploaded = set()

        def masked(d):
            s.masked(d, c[d].masked_input(s.inbox(d), self.q[d]))
            self.uploaded.add(d)
        self.stage("masked", masked, drop.get("masked", ()))
        self.stage("unmask", lambda d: s.unmask(d, c[d].unmask(s.survivors(d))), drop.get("unmask", ()))
        return s

    def expected(self):
        total = np.zeros(SIZE, np.uint32)
        for d in self.uploaded:
            total = ring.add_mod(total, self.q[d], BITS)
        return total


def test_round_without_dropouts_is_exact():
    r = Round(8)
    s = r.run()
    assert s.stage == "done", s.note
    for d in r.ids:  # each roster: the device's index, the threshold, its neighbours' signed keys
        index, t, entries = messages.parse_roster(s.roster(d))
        assert (index, t) == (s.index[d], s.params.threshold)
        assert [e.index for e in entries] == sorted(s.nbrs[index])
        for e in entries:
            cert = r.idents[e.device_id].certificate
            assert (e.device_id, e.identity_key.hex()) == (s.ids[e.index], r.idents[e.device_id].public_hex)
            assert e.certificate() == cert.to_json()  # rebuilt whole from the entry
    assert np.array_equal(s.result, r.expected())
    assert len(r.uploaded) == 8


@pytest.mark.parametrize("stage", ["advertise", "share", "masked", "unmask"])
def test_dropout_at_each_stage_keeps_the_sum_exact(stage):
    r = Round(12, dropout=0.3)
    s = r.run({stage: {"phone-003", "phone-007"}})
    assert s.stage == "done", s.note
    assert np.array_equal(s.result, r.expected())
    survivors = 12 if stage == "unmask" else 10
    assert len(r.uploaded) == survivors


def test_dropout_after_sharing_unmasks_pairwise_masks():
    r = Round(10, dropout=0.3)
    s = r.run({"masked": {"phone-001"}})
    assert s.stage == "done" and len(s.u2 - s.u3) == 1
    assert np.array_equal(s.result, r.expected())


def test_too_many_unmask_dropouts_abandon_with_a_reason():
    r = Round(8, dropout=0.1)
    s = r.run({"unmask": {f"phone-00{i}" for i in range(5)}})
    assert s.stage == "abandoned"
    assert "fewer than the threshold" in s.note and s.result is None


def test_too_few_devices_abandon():
    r = Round(4)
    s = r.run({"advertise": {"phone-000", "phone-001"}})
    assert s.stage == "abandoned" and "only 2 devices advertised" in s.note


def test_tampered_key_signature_is_refused_by_server_and_client():
    r = Round(5)
    s, c = r.server, r.clients
    body = c["phone-000"].advertise()
    forged = dict(body, mask_key=messages.b64(os.urandom(32)))
    with pytest.raises(Refusal) as e:
        s.advertise("phone-000", forged)
    assert e.value.code == "bad_signature"
    for d in r.ids:
        s.advertise(d, body if d == "phone-000" else c[d].advertise())
    s.close_stage()
    index, t, entries = messages.parse_roster(s.roster("phone-001"))
    entries[0] = dataclasses.replace(entries[0], cipher_key=os.urandom(32))  # a server swapping a key
    with pytest.raises(ProtocolAbort, match="not signed"):
        c["phone-001"].share_keys(messages.pack_roster(index, t, [e.pack() for e in entries]))


def test_server_refuses_a_certificate_of_another_device_or_a_malformed_one():
    r = Round(4)
    s, c = r.server, r.clients
    body = c["phone-000"].advertise()
    with pytest.raises(Refusal, match="this device's id and its key"):  # the roster would rebind it to this id
        s.advertise("phone-000", dict(body, certificate=r.idents["phone-001"].certificate.to_json()))
    with pytest.raises(Refusal, match="certificate: a certificate is an object"):
        s.advertise("phone-000", dict(body, certificate={"device_id": "phone-000"}))
    own = r.idents["phone-000"].certificate.to_json()
    for key in (r.idents["phone-001"].public_hex, own["public_key"].upper()):  # another key; the same, upper-case
        with pytest.raises(Refusal, match="this device's id and its key"):
            s.advertise("phone-000", dict(body, certificate=dict(own, public_key=key)))
    assert s.advertise("phone-000", body) == {"accepted": True}


def test_a_server_that_knows_the_issuer_refuses_what_every_neighbour_would():
    r = Round(4)
    s = ServerRound(r.session, SIZE, BITS, 7, 0.1, lambda d: r.idents[d].public_hex, issuer_public=r.issuer.public_hex)
    body = r.clients["phone-000"].advertise()
    foreign = Issuer.generate().certify("phone-000", r.idents["phone-000"].public_hex).to_json()  # a fake issuer
    for cert in (None, foreign):
        with pytest.raises(Refusal, match="against the issuer") as e:
            s.advertise("phone-000", dict(body, certificate=cert))
        assert e.value.code == "bad_signature"
    forged = dict(body["certificate"], attestation_id="another-phone")  # the issuer signed another id
    with pytest.raises(Refusal, match="against the issuer"):
        s.advertise("phone-000", dict(body, certificate=forged))
    assert s.advertise("phone-000", body) == {"accepted": True}


def test_device_without_issuer_certificate_is_refused_by_neighbours():
    r = Round(4)
    stranger = DeviceIdentity.create("phone-001", Issuer.generate())  # another issuer: a fake device
    r.idents["phone-001"] = stranger
    r.clients["phone-001"] = ClientRound(stranger, r.session, SIZE, BITS)
    s, c = r.server, r.clients
    for d in r.ids:
        s.advertise(d, c[d].advertise())
    s.close_stage()
    with pytest.raises(ProtocolAbort, match="not signed|certificate"):
        c["phone-000"].share_keys(s.roster("phone-000"))


def test_tampered_share_makes_the_receiver_drop_and_the_round_still_sums():
    r = Round(8, dropout=0.3)
    s, c = r.server, r.clients
    r.stage("advertise", lambda d: s.advertise(d, c[d].advertise()))
    r.stage("share", lambda d: s.share(d, c[d].share_keys(s.roster(d))))
    victim = s.index["phone-002"]
    sender = next(iter(s.mail[victim]))
    raw = bytearray(s.mail[victim][sender])
    raw[-1] ^= 1
    s.mail[victim][sender] = bytes(raw)
    with pytest.raises(ProtocolAbort, match="does not authenticate"):
        c["phone-002"].masked_input(s.inbox("phone-002"), r.q["phone-002"])
    r.alive.discard("phone-002")
    r.uploaded = set()

    def masked(d):
        s.masked(d, c[d].masked_input(s.inbox(d), r.q[d]))
        r.uploaded.add(d)
    r.stage("masked", masked)
    r.stage("unmask", lambda d: s.unmask(d, c[d].unmask(s.survivors(d))))
    assert s.stage == "done" and np.array_equal(s.result, r.expected())


def test_replayed_stage_messages_are_answered_alike_and_changed_ones_refused():
    r = Round(4)
    s, c = r.server, r.clients
    bodies = {d: c[d].advertise() for d in r.ids}
    for d in r.ids:
        assert s.advertise(d, bodies[d]) == {"accepted": True}
    assert s.advertise("phone-000", bodies["phone-000"]) == {"accepted": True, "repeat": True}
    other = ClientRound(r.idents["phone-000"], r.session, SIZE, BITS).advertise()
    with pytest.raises(Refusal) as e:
        s.advertise("phone-000", other)
    assert e.value.code == "duplicate"
    s.close_stage()
    assert s.advertise("phone-000", bodies["phone-000"])["repeat"]  # a late retry after the stage closed


def test_client_refuses_a_second_different_survivor_list():
    r = Round(6, dropout=0.3)
    s, c = r.server, r.clients
    r.stage("advertise", lambda d: s.advertise(d, c[d].advertise()))
    r.stage("share", lambda d: s.share(d, c[d].share_keys(s.roster(d))))
    r.stage("masked", lambda d: s.masked(d, c[d].masked_input(s.inbox(d), r.q[d])))
    asked = s.survivors("phone-000")
    first = c["phone-000"].unmask(asked)
    assert c["phone-000"].unmask(asked) == first
    moved = {"survivors": [i for i in asked["survivors"] if i != asked["survivors"][-1] or
                           i == s.index["phone-000"]], "dropped": asked["dropped"]}
    moved["dropped"] = asked["dropped"] + [x for x in asked["survivors"] if x not in moved["survivors"]]
    with pytest.raises(ProtocolAbort, match="second, different"):
        c["phone-000"].unmask(moved)


def test_server_refuses_masked_vectors_of_the_wrong_size_and_non_members():
    r = Round(4)
    s, c = r.server, r.clients
    r.stage("advertise", lambda d: s.advertise(d, c[d].advertise()))
    r.stage("share", lambda d: s.share(d, c[d].share_keys(s.roster(d))))
    with pytest.raises(Refusal) as e:
        s.masked("phone-000", b"\x00" * 10)
    assert e.value.code == "bad_payload"
    with pytest.raises(Refusal) as e:
        s.masked("stranger", ring.pack(np.zeros(SIZE, np.uint32), BITS))
    assert e.value.code == "not_selected"


@pytest.mark.parametrize("bits", [2, 7, 8, 12, 16, 20, 24, 28, 31, 32])
def test_add_packed_sums_mod_2_bits_straight_from_the_bytes(bits):
    rng = np.random.default_rng(bits)
    mod = np.uint64(2**bits)
    for size in (1, 2, 3, 5, 17, 64, 101):
        v = rng.integers(0, 2**bits, size=size, dtype=np.uint64).astype(np.uint32)
        total = rng.integers(0, 2**32, size=size, dtype=np.uint64).astype(np.uint32)
        want = (total.astype(np.uint64) + v) % mod
        ring.add_packed(total, ring.pack(v, bits), bits)
        assert np.array_equal(total.astype(np.uint64) % mod, want)  # the high bits are the caller's to drop
    with pytest.raises(ValueError, match="pack into"):
        ring.add_packed(np.zeros(5, np.uint32), bytes(ring.packed_bytes(5, bits) + 1), bits)


def test_apply_masks_equals_each_expanded_mask_added_in_turn():
    rng = np.random.default_rng(4)
    masks = [(bytes([i]) * 32, 1 if i % 2 else -1) for i in range(5)]
    for bits, size in ((20, 1), (20, 1000), (32, 777), (7, 70)):
        values = rng.integers(0, 2**bits, size, dtype=np.uint64).astype(np.uint32)
        one = values.copy()
        for seed, sign in masks:  # each mask expanded and added (or subtracted) on its own
            one = (ring.add_mod if sign > 0 else ring.sub_mod)(one, crypto.expand(seed, size, bits), bits)
        together = values.copy()
        crypto.apply_masks(together, masks, bits, chunk=64)  # many chunks, a short last one
        assert np.array_equal(together, one)
    with pytest.raises(ValueError):
        crypto.apply_masks(np.zeros(4, np.uint32), [(bytes(32), 2)], 20)


def test_lagrange_denominators_equal_the_direct_products():
    rng = np.random.default_rng(5)
    for t, high in ((8, 9), (69, 1000), (136, 2**20 - 1), (20, 2**40)):  # the last: the plain loop
        xs = tuple(sorted({int(x) for x in rng.integers(1, high + 1, 4 * t)})[:t])
        xs = xs[1::2] + xs[::2]  # not in order
        direct = [xi * math.prod(xj - xi for xj in xs[:i] + xs[i + 1:]) for i, xi in enumerate(xs)]
        assert shamir._denominators(xs) == direct


def test_grouped_packing_is_the_plain_bit_string():
    rng = np.random.default_rng(3)
    for bits in (7, 12, 20, 24):
        v = rng.integers(0, 2**bits, size=53, dtype=np.uint64).astype(np.uint32)
        planes = ((v[:, None] >> np.arange(bits, dtype=np.uint32)) & 1).astype(np.uint8)
        assert ring.pack(v, bits) == np.packbits(planes.reshape(-1), bitorder="little").tobytes()


def _entry(index, cert=True, device_id="phone-\u00e9"):
    rnd = np.random.default_rng(index)
    raw = lambda n: rnd.bytes(n)  # noqa: E731
    own = ("attest-1", 1_700_000_000.5, raw(64)) if cert else ()
    return messages.Entry(index, device_id, raw(32), raw(32), raw(32), raw(64), *own)


def test_roster_packs_and_parses_back_and_every_malformed_form_is_refused():
    entries = [_entry(2), _entry(5, cert=False), _entry(9, device_id="x" * 128)]
    raw = messages.pack_roster(7, 2, [e.pack() for e in entries])
    assert messages.parse_roster(raw) == (7, 2, entries)
    assert entries[0].certificate()["issued_unix"] == 1_700_000_000.5 and entries[1].certificate() is None
    # the binary entry is what the bytes goal needs: fixed keys, signatures and two short ids
    assert len(entries[1].pack()) == 4 + 3 * 32 + 64 + 2 + len("phone-\u00e9".encode()) + 1
    for cut in range(len(raw)):  # every truncation names where it ends
        with pytest.raises(Refusal, match="ends inside"):
            messages.parse_roster(raw[:cut])
    with pytest.raises(Refusal, match="bytes after"):
        messages.parse_roster(raw + b"\0")
    swapped = messages.pack_roster(7, 2, [entries[1].pack(), entries[0].pack()])
    with pytest.raises(Refusal, match="not ascending"):
        messages.parse_roster(swapped)
    flag_at = 4 + 3 * 32 + 64 + 2 + len("phone-\u00e9".encode())
    bad_flag = bytearray(entries[1].pack())
    bad_flag[flag_at] = 2
    with pytest.raises(Refusal, match="certificate flag 2"):
        messages.parse_roster(messages.pack_roster(7, 2, [bytes(bad_flag)]))
    with pytest.raises(Refusal, match="binary"):
        messages.parse_roster({"index": 7})  # the JSON form of the first version
    with pytest.raises(Refusal, match="index 0 out of range"):
        messages.parse_roster(messages.pack_roster(0, 2, []))
    for issued in ("[" * 60_000, '"hello"', "true", ""):  # a hostile server's issue time: refused, never raised
        zero = dataclasses.replace(entries[0], issued_unix=0).pack()
        at = len(zero) - 64 - 3  # the issue time "0" (u16 length, one character) before the issuer signature
        bad = zero[:at] + _text(issued) + zero[at + 3:]
        with pytest.raises(Refusal, match="issue time"):
            messages.parse_roster(messages.pack_roster(7, 2, [bad]))


def _text(value: str) -> bytes:
    raw = value.encode()
    return len(raw).to_bytes(2, "big") + raw


def test_client_refuses_a_roster_that_lists_itself():
    r = Round(4)
    s, c = r.server, r.clients
    r.stage("advertise", lambda d: s.advertise(d, c[d].advertise()))
    index, t, entries = messages.parse_roster(s.roster("phone-000"))
    me = dataclasses.replace(entries[0], index=index)
    with pytest.raises(ProtocolAbort, match="lists this device"):
        c["phone-000"].share_keys(messages.pack_roster(index, t, [me.pack()] + [e.pack() for e in entries[1:]]))


def test_shares_inbox_and_unmask_are_checked_part_by_part():
    m = messages.SHARE_MESSAGE
    parts = [bytes([i]) * m for i in range(3)]
    assert messages.parse_shares(b"".join(parts), 3) == parts
    for body in (b"".join(parts[:2]), b"".join(parts) + b"\0"):
        with pytest.raises(Refusal, match="each of the roster's 3 neighbours"):
            messages.parse_shares(body, 3)
    mail = {4: parts[0], 2: parts[1]}
    inbox = messages.pack_inbox(mail)
    assert messages.parse_inbox(inbox, {2, 4, 6}) == mail
    with pytest.raises(Refusal, match="sender 4 is not a neighbour"):
        messages.parse_inbox(inbox, {2, 6})
    step = 4 + m
    with pytest.raises(Refusal, match="not in ascending order"):
        messages.parse_inbox(inbox[step:] + inbox[:step], {2, 4})
    with pytest.raises(Refusal, match="whole number"):
        messages.parse_inbox(inbox[:-1], {2, 4})
    seeds, keys = [b"a" * 33, b"b" * 33], [b"c" * 33]
    body = messages.pack_unmask(seeds, keys)
    assert messages.parse_unmask(body, [3, 8], [5]) == ({3: seeds[0], 8: seeds[1]}, {5: keys[0]})
    with pytest.raises(Refusal, match="2 surviving and 2 dropped"):
        messages.parse_unmask(body, [3, 8], [5, 6])
