"""Device identity (issue 18, findings 1 and 2): attested registration, proof of key possession,
no takeover of a registered id, token refresh, the cap per attested device, and a privacy
population that Sybil registrations cannot move. Attacks are scripted as an attacker would send
them: plain HTTP bodies, without the issuer's secret key."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from fedcore.messages import Refusal
from fedmath.attestation import AttestationError, Certificate, DeviceIdentity, Issuer, public_key
from server.app import create_app
from server.settings import settings_from_dict
from server.testing import config_dict, make_bundle, upload_body

ELIGIBLE = {"idle": True, "charging": True, "unmetered": True, "num_examples": 10}


@pytest.fixture(scope="module")
def issuer():
    return Issuer.generate()


def make_app(tmp_path, issuer, **collector):
    bundle = str(tmp_path / "bundle")
    if not os.path.exists(bundle):
        make_bundle(bundle)
    collector = {"attestation": "required", "attestation_public_key": issuer.public_hex, **collector}
    return create_app(test_config=config_dict(
        bundle, str(tmp_path / "state"), {"goal_count": 2, "over_selection": 1.0},
        {"mode": "device", "clip_norm": 1.0, "noise_multiplier": 0.0}, collector, {"max_examples_per_client": 100}))


@pytest.fixture
def client(tmp_path, issuer):
    return make_app(tmp_path, issuer).test_client()


def nonce(client):
    r = client.get("/v1/devices/challenge")
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store", r.json
    return r.json["nonce"]


def register(client, ident: DeviceIdentity, expect=201):
    r = client.post("/v1/devices", json=ident.registration_body(nonce(client)))
    assert r.status_code == expect, r.json
    return r


def bearer(resp):
    return {"Authorization": f"Bearer {resp.json['token']}"}


def test_device_takeover_is_refused(client, issuer):
    """Finding 1: `POST /v1/devices {"device_id": "victim"}` handed the id to anyone and revoked
    the owner's token (201 on the old code). Now the id belongs to the key that registered it."""
    victim = DeviceIdentity.create("victim-phone-001", issuer)
    head = bearer(register(client, victim))
    r = client.post("/v1/devices", json={"device_id": "victim-phone-001"})
    assert r.status_code == 403 and r.json["error"] == "key_mismatch", r.json
    # the attacker's own key, even with a genuine certificate for the attacker's own id, gets nothing
    thief = DeviceIdentity.create("victim-phone-001", None)
    r = client.post("/v1/devices", json=thief.registration_body(nonce(client)))
    assert r.status_code == 403 and r.json["error"] == "key_mismatch", r.json
    # a genuine certificate for another key (a second phone claiming the id) cannot replace the key
    other = DeviceIdentity.create("victim-phone-001", issuer)
    register(client, other, expect=403)
    # the owner is untouched
    assert client.post("/v1/checkin", json=ELIGIBLE, headers=head).status_code == 200


def test_sybil_registration_without_attestation_is_refused(client, issuer):
    """Finding 2: anyone could register thousands of ids (201 each on the old code). Without a
    certificate from the platform issuer, or with one the attacker signed himself, none gets in."""
    for i in range(20):
        r = client.post("/v1/devices", json={"device_id": f"sybil-{i}"})
        assert r.status_code == 401 and r.json["error"] == "attestation_required", r.json
    forger = Issuer.generate()
    for i in range(5):
        ident = DeviceIdentity.create(f"sybil-forged-{i}", forger)
        r = client.post("/v1/devices", json=ident.registration_body(nonce(client)))
        assert r.status_code == 401 and r.json["error"] == "bad_attestation", r.json
    # a key without a certificate proves possession but not genuineness
    r = client.post("/v1/devices", json=DeviceIdentity.create("sybil-keyonly", None).registration_body(nonce(client)))
    assert r.status_code == 401 and r.json["error"] == "attestation_required", r.json
    s = client.get("/v1/status").json
    assert s["devices"] == 0 and s["attested_devices"] == 0


def test_certificate_must_match_id_and_key(client, issuer):
    honest = DeviceIdentity.create("phone-a", issuer)
    # someone else's certificate (copied off the wire) with the attacker's key
    copied = DeviceIdentity.create("phone-a", None)
    body = copied.registration_body(nonce(client))
    body["certificate"] = honest.certificate.to_json()
    r = client.post("/v1/devices", json=body)
    assert r.status_code == 401 and r.json["error"] == "bad_attestation", r.json
    body["public_key"] = honest.public_hex  # claims the honest key, but signed with its own
    body["nonce"] = nonce(client)
    body["signature"] = copied.sign_registration(body["nonce"])
    r = client.post("/v1/devices", json=body)
    assert r.status_code == 401 and r.json["error"] == "bad_proof", r.json
    # a certificate for another id
    body = honest.registration_body(nonce(client))
    body["device_id"] = "phone-b"
    r = client.post("/v1/devices", json=body)
    assert r.status_code == 401 and r.json["error"] in ("bad_attestation", "bad_proof"), r.json
    # a tampered certificate field
    body = honest.registration_body(nonce(client))
    body["certificate"] = dict(body["certificate"], attestation_id="another-phone")
    r = client.post("/v1/devices", json=body)
    assert r.status_code == 401 and r.json["error"] == "bad_attestation", r.json
    register(client, honest)


def test_nonces_are_single_use_fresh_and_this_servers(tmp_path, client, issuer):
    ident = DeviceIdentity.create("phone-n", issuer)
    body = ident.registration_body(nonce(client))
    assert client.post("/v1/devices", json=body).status_code == 201
    r = client.post("/v1/devices", json=body)  # the same signed body again: a replay
    assert r.status_code == 401 and r.json["error"] == "bad_proof" and "already used" in r.json["detail"], r.json
    for bad in ("", "1.2", "x" * 200, "123.abc.0123456789abcdef0123456789abcdef"):
        r = client.post("/v1/devices", json=ident.registration_body(bad))
        assert r.status_code == 401 and r.json["error"] == "bad_proof", (bad, r.json)
    other = make_app(tmp_path / "other", issuer).test_client()  # another collector's nonce
    r = client.post("/v1/devices", json=ident.registration_body(nonce(other)))
    assert r.status_code == 401 and r.json["error"] == "bad_proof", r.json
    col = client.application.extensions["fedkeys"]["collector"]
    old = col.identity.challenge(now=1_000_000.0)["nonce"]  # issued long ago
    r = client.post("/v1/devices", json=ident.registration_body(old))
    assert r.status_code == 401 and "expired" in r.json["detail"], r.json


def test_token_refresh_needs_the_same_key_and_revokes_the_old_token(client, issuer):
    ident = DeviceIdentity.create("phone-r", issuer)
    first = bearer(register(client, ident))
    # refresh: a new nonce signed by the same key; no certificate needed any more
    body = ident.registration_body(nonce(client))
    del body["certificate"]
    second = bearer(client.post("/v1/devices", json=body))
    assert client.get("/v1/model", headers=first).status_code == 401
    assert client.get("/v1/model", headers=second).status_code == 200


def test_tokens_expire(tmp_path, issuer):
    app = make_app(tmp_path, issuer, token_ttl_s=60.0)
    client = app.test_client()
    ident = DeviceIdentity.create("phone-t", issuer)
    token = register(client, ident).json["token"]
    reg = app.extensions["fedkeys"]["collector"].identity
    assert reg.authenticate(f"Bearer {token}", now=time.time() + 30) == "phone-t"
    with pytest.raises(Refusal) as e:
        reg.authenticate(f"Bearer {token}", now=time.time() + 61)
    assert e.value.code == "unauthorized"


def test_cap_on_device_ids_per_attested_device(client, issuer):
    """Defence in depth: one attested phone may hold at most max_devices_per_attestation ids."""
    for i in range(2):
        register(client, DeviceIdentity.create(f"profile-{i}", issuer, attestation_id="hw-1"))
    r = client.post("/v1/devices", json=DeviceIdentity.create("profile-2", issuer, attestation_id="hw-1")
                    .registration_body(nonce(client)))
    assert r.status_code == 403 and r.json["error"] == "attestation_cap", r.json
    register(client, DeviceIdentity.create("profile-3", issuer, attestation_id="hw-2"))


def test_population_counts_attested_devices_only(tmp_path, issuer):
    """Finding 2, privacy: 50 unattested ids (attestation "off" lets them in) no longer move the
    accountant's N, so q = goal / N stays what the attested population gives (old code: N = 52)."""
    app = make_app(tmp_path, issuer, attestation="off")
    client = app.test_client()
    heads = [bearer(register(client, DeviceIdentity.create(f"real-{i}", issuer))) for i in range(2)]
    for i in range(50):
        assert client.post("/v1/devices", json={"device_id": f"sybil-{i}"}).status_code == 201
    s = client.get("/v1/status").json
    assert s["devices"] == 52 and s["attested_devices"] == 2
    for h in heads:
        r = client.post("/v1/checkin", json=ELIGIBLE, headers=h)
        assert r.status_code == 200, r.json
    rng = np.random.default_rng(0)
    for h in heads:
        update = [rng.normal(0, 0.01, size=s).astype(np.float32) for s in ((5, 3), (3, 4), (4,))]
        r = client.post("/v1/rounds/0/updates", data=upload_body(0, 0, update, 5), headers=h)
        assert r.status_code == 202, r.json
    meta = client.get("/v1/model/1", headers=heads[0]).json
    assert meta["population"] == 2 and meta["sampling_probability"] == 1.0


def test_transport_registers_with_a_certificate_and_an_attacker_cannot(tmp_path, issuer):
    import requests

    from device_sim.attestation import Keystore
    from device_sim.transport import Transport, TransportError
    from tests.test_device_phone import LiveServer

    make_bundle(str(tmp_path / "bundle"))
    srv = LiveServer(config_dict(str(tmp_path / "bundle"), str(tmp_path / "state"), {"goal_count": 1},
                                 {"mode": "none"}, {"attestation": "required",
                                                    "attestation_public_key": issuer.public_hex}))
    try:
        phone = Transport(srv.url, identities=Keystore(issuer).identity)
        phone.register("phone-x")
        assert phone.model_info().version == 0
        token = phone.token
        phone.register("phone-x")  # refresh with the key it holds
        assert phone.token != token
        with pytest.raises(TransportError) as e:
            Transport(srv.url).register("phone-x")
        assert e.value.status == 403 and e.value.error == "key_mismatch"
        with pytest.raises(TransportError) as e:
            Transport(srv.url).register("attacker")
        assert e.value.status == 401 and e.value.error == "attestation_required"
        r = requests.post(srv.url + "/v1/devices", json={"device_id": "phone-x"}, timeout=10)
        assert r.status_code == 403
    finally:
        srv.close()


def test_settings_name_the_attestation_problem(tmp_path, issuer):
    base = config_dict("b", "s")
    with pytest.raises(ValueError, match="attestation_public_key"):
        settings_from_dict({**base, "collector": {"attestation": "required"}})
    with pytest.raises(ValueError, match="attestation_public_key"):
        settings_from_dict({**base, "collector": {"attestation": "required", "attestation_public_key": "zz"}})
    with pytest.raises(ValueError, match="collector.attestation must be"):
        settings_from_dict({**base, "collector": {"attestation": "maybe"}})
    path = tmp_path / "issuer.pub"
    path.write_text(issuer.public_hex + "\n")
    s = settings_from_dict({**base, "collector": {"attestation": "required", "attestation_public_key": str(path)}})
    assert s.issuer_key == issuer.public_hex


def test_certificate_round_trip_and_issuer_file(tmp_path, issuer):
    ident = DeviceIdentity.create("d", issuer)
    cert = Certificate.from_json(json.loads(json.dumps(ident.certificate.to_json())))
    cert.verify(public_key(issuer.public_hex))
    with pytest.raises(AttestationError, match="issuer signature"):
        cert.verify(public_key(Issuer.generate().public_hex))
    loaded = Issuer.load(issuer.save(str(tmp_path / "k")))
    assert loaded.public_hex == issuer.public_hex and os.stat(tmp_path / "k").st_mode & 0o777 == 0o600


def test_hostile_registration_bodies_get_4xx_and_change_nothing(client, issuer):
    good = DeviceIdentity.create("phone-h", issuer).registration_body(nonce(client))
    junk = [None, 5, "x", [], {}, {"a": 1}, "0" * 64, "g" * 64, "0" * 128, -1.0, True, {"x": [1] * 3}]
    bodies = [{"device_id": 5}, {"device_id": "p", "certificate": None}, {"device_id": "p", "public_key": None}]
    for field in ("public_key", "nonce", "signature", "certificate"):
        for value in junk:
            if (field, value) != ("public_key", None):  # no public_key: the certificate's is the key
                bodies.append(dict(good, **{field: value}))
    for field in ("device_id", "public_key", "attestation_id", "issued_unix", "signature"):
        for value in junk + [1e300, float("nan")]:
            bodies.append(dict(good, certificate=dict(good["certificate"], **{field: value})))
    bodies.append(dict(good, certificate=dict(good["certificate"], extra=1)))
    for body in bodies:
        r = client.post("/v1/devices", data=json.dumps(body), headers={"Content-Type": "application/json"})
        assert 400 <= r.status_code < 500 and r.json["error"] in ("bad_request", "bad_attestation", "bad_proof",
                                                                  "attestation_required"), (body, r.json)
    assert client.get("/v1/status").json["devices"] == 0
    assert client.post("/v1/devices", json=good).status_code == 201  # its nonce was never spent
