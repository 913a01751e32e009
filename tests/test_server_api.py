"""The collector's HTTP API through Flask's test client: every success path and error code of
docs/http_api.md, and a hand-computed FedAvg round."""

from __future__ import annotations

import hashlib
import os
import sqlite3

import numpy as np
import pytest

from fedmath import encodings, wire
from server.app import create_app
from server.testing import TINY_SHAPES, config_dict, make_bundle, upload_body

SHAPES = [s for _, s in TINY_SHAPES]
ELIGIBLE = {"idle": True, "charging": True, "unmetered": True, "num_examples": 10}


def make_app(tmp_path, server=None, privacy=None, collector=None, train=None):
    bundle = str(tmp_path / "bundle")
    if not os.path.exists(bundle):
        make_bundle(bundle)
    server = {"goal_count": 2, "over_selection": 1.5, **(server or {})}
    privacy = {"mode": "device", "clip_norm": 1.0, "noise_multiplier": 0.0, **(privacy or {})}
    train = {"max_examples_per_client": 100, **(train or {})}
    return create_app(test_config=config_dict(bundle, str(tmp_path / "state"), server, privacy, collector, train))


@pytest.fixture
def app(tmp_path):
    return make_app(tmp_path)


@pytest.fixture
def client(app):
    return app.test_client()


def register(client, device_id):
    r = client.post("/v1/devices", json={"device_id": device_id})
    assert r.status_code == 201, r.json
    return {"Authorization": f"Bearer {r.json['token']}"}


def checkin(client, headers, **over):
    return client.post("/v1/checkin", json={**ELIGIBLE, **over}, headers=headers)


def small_update(scale, shapes=SHAPES):
    """A deterministic update of norm well below 1."""
    out, k = [], 0
    for s in shapes:
        n = int(np.prod(s))
        out.append((scale * 0.01 * (np.arange(k, k + n) % 7 - 3)).reshape(s).astype(np.float32))
        k += n
    return out


def snapshot(app):
    """Everything an upload could change: the database rows and the state directory's files.
    Spool slots no record points at are scratch (a float32 payload is received into a free slot
    before its checks), so of the spool only the files the records need are compared."""
    state = app.extensions["fedkeys"]["settings"].state_dir
    db = sqlite3.connect(os.path.join(state, "fedkeys.sqlite3"))
    tables = {t: db.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
              for t in ("devices", "rounds", "selections", "updates", "models")}
    spooled = {r[0] for r in db.execute("SELECT spool FROM updates WHERE spool IS NOT NULL")}
    db.close()
    listing = {}
    for d in ("models", "spool", "sums"):
        for name in sorted(os.listdir(os.path.join(state, d))):
            if d == "spool" and name not in spooled:
                continue
            with open(os.path.join(state, d, name), "rb") as f:
                listing[f"{d}/{name}"] = hashlib.sha256(f.read()).hexdigest()
    cache = app.extensions["fedkeys"]["collector"].sums._cache
    sums = None if cache is None else (cache.seq, [s.copy() for s in cache.rs.sums], cache.rs.total_weight)
    return tables, listing, sums


def same_snapshot(a, b):
    assert a[0] == b[0] and a[1] == b[1]
    if a[2] is None or b[2] is None:
        assert a[2] is None and b[2] is None
    else:
        assert a[2][0] == b[2][0] and a[2][2] == b[2][2]
        assert all(np.array_equal(x, y) for x, y in zip(a[2][1], b[2][1]))


# -- registration, check-in, model ---------------------------------------------------------------

def test_register_returns_token_stored_hashed(app, client):
    r = client.post("/v1/devices", json={"device_id": "phone-1"})
    assert r.status_code == 201 and r.json["device_id"] == "phone-1"
    token = r.json["token"]
    db = sqlite3.connect(os.path.join(app.extensions["fedkeys"]["settings"].state_dir, "fedkeys.sqlite3"))
    (stored,) = db.execute("SELECT token_sha256 FROM devices").fetchone()
    assert stored == hashlib.sha256(token.encode()).hexdigest() and token not in stored


@pytest.mark.parametrize("body", [{"device_id": ""}, {"device_id": 3}, {}, [1], {"device_id": "x" * 129}])
def test_register_bad_body(client, body):
    r = client.post("/v1/devices", json=body)
    assert r.status_code == 400 and r.json["error"] == "bad_request" and r.json["detail"]


def test_register_again_rotates_token(client):
    old = register(client, "a")
    new = register(client, "a")
    assert client.get("/v1/model", headers=new).status_code == 200
    r = client.get("/v1/model", headers=old)
    assert r.status_code == 401 and r.json["error"] == "unauthorized"


def test_checkin_accepts_up_to_over_selection_then_turns_away(client):
    heads = [register(client, f"d{i}") for i in range(4)]
    plans = [checkin(client, h) for h in heads[:3]]  # ceil(2 * 1.5) = 3 slots
    for r in plans:
        assert r.status_code == 200
        plan = r.json["plan"]
        assert r.json["round"] == 0 and plan["model_version"] == 0 and plan["encoding"] == "float32"
        assert set(plan) >= {"round", "model_version", "local_epochs", "batch_size", "learning_rate", "clip_norm",
                             "noise_std", "encoding", "max_examples", "deadline_unix"}
    r = checkin(client, heads[3])
    assert r.status_code == 503 and r.json["error"] == "round_full"
    assert int(r.headers["Retry-After"]) >= 1
    again = checkin(client, heads[0])  # a selected device asking again gets its plan again
    assert again.status_code == 200 and again.json == plans[0].json


def test_checkin_ineligible_and_bad_body(client):
    h = register(client, "d")
    r = checkin(client, h, charging=False)
    assert r.status_code == 503 and r.json["error"] == "not_eligible" and "Retry-After" in r.headers
    r = checkin(client, h, num_examples=0)
    assert r.status_code == 503
    r = client.post("/v1/checkin", json={"idle": "yes"}, headers=h)
    assert r.status_code == 400 and r.json["error"] == "bad_request"
    r = client.post("/v1/checkin", data="not json", headers=h)
    assert r.status_code == 400


@pytest.mark.parametrize("auth", [None, "Bearer forged-token", "Basic abc", "Bearer "])
def test_missing_or_forged_token_is_401(client, auth):
    headers = {"Authorization": auth} if auth else {}
    for method, path in [("post", "/v1/checkin"), ("get", "/v1/model"), ("get", "/v1/model/0/weights"),
                         ("get", "/v1/bundle/spm.model"), ("post", "/v1/rounds/0/updates")]:
        r = getattr(client, method)(path, headers=headers, json=ELIGIBLE if method == "post" else None)
        assert r.status_code == 401 and r.json["error"] == "unauthorized", (path, r.json)


def test_model_download_etag_and_304(app, client):
    h = register(client, "d")
    info = client.get("/v1/model", headers=h).json
    assert info["version"] == 0 and info["num_params"] == sum(int(np.prod(s)) for s in SHAPES)
    r = client.get("/v1/model/0/weights", headers=h)
    assert r.status_code == 200 and r.headers["ETag"] == f'"{info["sha256"]}"'
    assert hashlib.sha256(r.data).hexdigest() == info["sha256"]
    initial = np.load(os.path.join(app.extensions["fedkeys"]["settings"].bundle_dir, "weights.npz"))
    got = encodings.decode_float32(r.data, SHAPES)
    assert all(np.array_equal(g, initial[n]) for g, (n, _) in zip(got, TINY_SHAPES))
    r2 = client.get("/v1/model/0/weights", headers={**h, "If-None-Match": r.headers["ETag"]})
    assert r2.status_code == 304 and r2.data == b""
    assert client.get("/v1/model/7/weights", headers=h).status_code == 404
    assert client.get("/v1/model/0", headers=h).json["version"] == 0


def test_bundle_files(client):
    h = register(client, "d")
    r = client.get("/v1/bundle/spm.model", headers=h)
    assert r.status_code == 200 and r.data == b"fake sentencepiece"
    assert r.headers["ETag"].strip('"') == hashlib.sha256(b"fake sentencepiece").hexdigest()
    assert client.get("/v1/bundle/manifest.json", headers=h).json["model_version"] == 0
    r = client.get("/v1/bundle/weights.npz", headers=h)
    assert r.status_code == 404 and r.json["error"] == "not_found"
    assert client.get("/v1/bundle/..%2Fstate", headers=h).status_code == 404


# -- a whole round ---------------------------------------------------------------------------------

def test_round_publishes_hand_computed_weighted_mean(app, client):
    heads = [register(client, f"d{i}") for i in range(3)]
    for h in heads:
        assert checkin(client, h).status_code == 200
    u1, u2 = small_update(1.0), small_update(-2.0)
    u2[2] = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
    r = client.post("/v1/rounds/0/updates", data=upload_body(0, 0, u1, 10, "up-1"), headers=heads[0])
    assert r.status_code == 202 and r.json == {"accepted": True, "round_complete": False}
    r = client.post("/v1/rounds/0/updates", data=upload_body(0, 0, u2, 30, "up-2"), headers=heads[1])
    assert r.status_code == 202 and r.json == {"accepted": True, "round_complete": True}
    # hand computed: w1 = w0 + 1.0 * (10 * u1 + 30 * u2) / 40
    w0 = client.get("/v1/model/0/weights", headers=heads[0]).data
    w0 = encodings.decode_float32(w0, SHAPES)
    expected = [(a + (10 * b.astype(np.float64) + 30 * c.astype(np.float64)) / 40).astype(np.float32)
                for a, b, c in zip(w0, u1, u2)]
    assert client.get("/v1/model", headers=heads[0]).json["version"] == 1
    got = encodings.decode_float32(client.get("/v1/model/1/weights", headers=heads[0]).data, SHAPES)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-7)
    npz = np.load(os.path.join(app.extensions["fedkeys"]["settings"].state_dir, "models", "v1.npz"))
    assert list(npz.files) == [n for n, _ in TINY_SHAPES]
    status = client.get("/v1/status").json
    assert status["round"]["round"] == 1 and status["round"]["model_version"] == 1 and status["rounds_closed"] == 1
    # the third (over-selected) device is late: the round is closed
    r = client.post("/v1/rounds/0/updates", data=upload_body(0, 0, u1, 5), headers=heads[2])
    assert r.status_code == 409 and r.json["error"] == "round_closed"
    # a retry of the upload that closed the round gets the same answer
    r = client.post("/v1/rounds/0/updates", data=upload_body(0, 0, u2, 30, "up-2"), headers=heads[1])
    assert r.status_code == 202 and r.json == {"accepted": True, "round_complete": True}


# -- refusals --------------------------------------------------------------------------------------

@pytest.fixture
def selected(client):
    """Two selected devices and one registered but not selected; returns their headers."""
    heads = [register(client, f"d{i}") for i in range(3)]
    assert checkin(client, heads[0]).status_code == 200
    assert checkin(client, heads[1]).status_code == 200
    return heads


def _bad_bodies():
    good = small_update(1.0)
    ok_payload = encodings.encode_float32(good)
    header = wire.UploadHeader(round=0, model_version=0, num_examples=5, encoding="float32", upload_id="x")
    nan = [g.copy() for g in good]
    nan[0][0, 0] = np.nan
    inf = [g.copy() for g in good]
    inf[2][1] = np.inf
    return {
        "garbage": (400, "malformed", b"hello world"),
        "empty": (400, "malformed", b""),
        "bad_magic": (400, "malformed", b"XXXX" + wire.pack(header, ok_payload)[4:]),
        "header_not_json": (400, "malformed", b"FKU1" + (5).to_bytes(4, "little") + b"{nope" + ok_payload),
        "header_too_long": (400, "malformed", b"FKU1" + (10**6).to_bytes(4, "little") + ok_payload),
        "missing_field": (400, "malformed", b"FKU1" + (13).to_bytes(4, "little") + b'{"round": 0}' + b" " + ok_payload),
        "round_mismatch": (400, "malformed", upload_body(3, 0, good, 5)),
        "short_payload": (400, "bad_payload", wire.pack(header, ok_payload[:-4])),
        "wrong_shape": (400, "bad_payload", upload_body(0, 0, good + [np.zeros(2, np.float32)], 5)),
        "float64": (400, "bad_payload", wire.pack(header, b"".join(g.astype(np.float64).tobytes() for g in good))),
        "nan": (400, "non_finite", upload_body(0, 0, nan, 5)),
        "inf": (400, "non_finite", upload_body(0, 0, inf, 5)),
        "examples_cap": (400, "too_many_examples", upload_body(0, 0, good, 101)),
        "zero_examples": (400, "malformed", upload_body(0, 0, good, 1).replace(b'"num_examples": 1', b'"num_examples": 0')),
        "encoding": (400, "bad_encoding", upload_body(0, 0, good, 5, encoding="bf16")),
        "wrong_codec": (400, "bad_payload", upload_body(0, 0, good, 5, encoding="int8")),
        "norm": (400, "norm_too_large", upload_body(0, 0, [g * 1000 for g in good], 5)),
        "stale_version": (409, "stale_version", upload_body(0, 3, good, 5)),
    }


@pytest.mark.parametrize("case", sorted(_bad_bodies()))
def test_bad_upload_is_refused_and_changes_nothing(app, client, selected, case):
    status, code, body = _bad_bodies()[case]
    # one good update first, so there is a running sum that must stay as it is
    assert client.post("/v1/rounds/0/updates", data=upload_body(0, 0, small_update(0.5), 4), headers=selected[1]).status_code == 202
    before = snapshot(app)
    r = client.post("/v1/rounds/0/updates", data=body, headers=selected[0])
    assert r.status_code == status and r.json["error"] == code and r.json["detail"], r.json
    same_snapshot(before, snapshot(app))


def test_not_selected_is_403(app, client, selected):
    before = snapshot(app)
    r = client.post("/v1/rounds/0/updates", data=upload_body(0, 0, small_update(1.0), 5), headers=selected[2])
    assert r.status_code == 403 and r.json["error"] == "not_selected"
    same_snapshot(before, snapshot(app))


def test_wrong_round_is_409(client, selected):
    r = client.post("/v1/rounds/5/updates", data=upload_body(5, 0, small_update(1.0), 5), headers=selected[0])
    assert r.status_code == 409 and r.json["error"] == "round_closed"


def test_duplicate_is_409_but_same_upload_id_is_idempotent(app, client, selected):
    body = upload_body(0, 0, small_update(1.0), 5, "first")
    assert client.post("/v1/rounds/0/updates", data=body, headers=selected[0]).status_code == 202
    before = snapshot(app)
    r = client.post("/v1/rounds/0/updates", data=body, headers=selected[0])
    assert r.status_code == 202 and r.json == {"accepted": True, "round_complete": False}
    r = client.post("/v1/rounds/0/updates", data=upload_body(0, 0, small_update(2.0), 5, "second"), headers=selected[0])
    assert r.status_code == 409 and r.json["error"] == "duplicate"
    same_snapshot(before, snapshot(app))
    assert client.get("/v1/status").json["round"]["reports"] == 1


def test_oversize_body_is_413(tmp_path):
    app = make_app(tmp_path, server={"max_body_bytes": 2048})
    client = app.test_client()
    h = register(client, "d")
    assert checkin(client, h).status_code == 200
    before = snapshot(app)
    r = client.post("/v1/rounds/0/updates", data=b"FKU1" + b"\0" * 4096, headers=h)
    assert r.status_code == 413 and r.json["error"] == "too_large"
    same_snapshot(before, snapshot(app))


def test_unknown_route_and_method_are_json(client):
    r = client.get("/v1/nope")
    assert r.status_code == 404 and r.json["error"] == "not_found"
    r = client.get("/v1/rounds/0/updates")
    assert r.status_code == 405 and r.json["error"] == "method_not_allowed"


def test_rate_limit_is_429_with_retry_after(tmp_path):
    app = make_app(tmp_path, collector={"rate_limit_per_s": 0.01, "rate_limit_burst": 3})
    client = app.test_client()
    h = register(client, "d")
    codes = [client.get("/v1/model", headers=h).status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    r = client.get("/v1/model", headers=h)
    assert r.json["error"] == "rate_limited" and int(r.headers["Retry-After"]) >= 1


def test_status_and_metrics(client, selected):
    client.post("/v1/rounds/0/updates", data=b"junk", headers=selected[0])
    client.post("/v1/rounds/0/updates", data=upload_body(0, 0, small_update(1.0), 5), headers=selected[0])
    s = client.get("/v1/status").json
    assert s["round"]["reports"] == 1 and s["round"]["selected"] == 2 and s["devices"] == 3
    text = client.get("/metrics").data.decode()
    assert 'fedkeys_updates_rejected_total{error="malformed"} 1' in text
    assert "fedkeys_updates_accepted_total 1" in text
    assert "fedkeys_round_reports 1" in text
    assert '# TYPE fedkeys_http_requests_total counter' in text


def test_numbers_beyond_sqlite_range_are_4xx(client, selected):
    h = selected[0]
    assert client.get(f"/v1/model/{2**64}/weights", headers=h).status_code == 404
    assert client.get(f"/v1/model/{2**64}", headers=h).status_code == 404
    big = 2**63
    r = client.post(f"/v1/rounds/{big}/updates", data=upload_body(big, 0, small_update(1.0), 5), headers=h)
    assert r.status_code in (400, 404)
    r = client.post("/v1/rounds/0/updates", data=upload_body(0, 2**70, small_update(1.0), 5), headers=h)
    assert r.status_code == 400 and r.json["error"] == "malformed"


def test_compressed_uploads_are_decoded_by_the_header_encoding(app, client):
    """int8 and top-k uploads are decoded as their header says and averaged like float32 ones."""
    heads = [register(client, f"c{i}") for i in range(2)]
    for h in heads:
        assert checkin(client, h).status_code == 200
    rng = np.random.default_rng(3)
    u1, u2 = small_update(1.0), small_update(-0.5)
    bodies = []
    for i, (u, name) in enumerate([(u1, "int8"), (u2, "topk:0.5")]):
        payload = encodings.encode(name, u, rng)
        header = wire.UploadHeader(round=0, model_version=0, num_examples=10, encoding=encodings.base_name(name),
                                   upload_id=f"cmp-{i}")
        bodies.append((wire.pack(header, payload), encodings.decode(name, payload, SHAPES)))
    for (body, _), h in zip(bodies, heads):
        assert client.post("/v1/rounds/0/updates", data=body, headers=h).status_code == 202
    w0 = encodings.decode_float32(client.get("/v1/model/0/weights", headers=heads[0]).data, SHAPES)
    got = encodings.decode_float32(client.get("/v1/model/1/weights", headers=heads[0]).data, SHAPES)
    for a, g, d1, d2 in zip(w0, got, bodies[0][1], bodies[1][1]):
        np.testing.assert_allclose(g, a + (d1 + d2) / 2, rtol=1e-6, atol=1e-7)


def test_every_refusal_code_has_one_http_status():
    """Domain code raises `Refusal(code, ...)`; server/errors.py is the one table of statuses."""
    import glob
    import re

    from server.errors import STATUS

    raised = set()
    for path in glob.glob(os.path.join(os.path.dirname(os.path.dirname(__file__)), "server", "*.py")):
        with open(path) as f:
            text = f.read()
        raised |= set(re.findall(r'Refusal\(\s*"([a-z_]+)"', text))
        raised |= set(re.findall(r'_turn_away\([^)]*?"([a-z_]+)"', text, flags=re.S))
    assert raised, "no Refusal codes found: the pattern no longer matches the code"
    assert raised <= set(STATUS), sorted(raised - set(STATUS))
    assert {"round_full", "not_eligible", "already_reported"} <= raised  # the turn-away codes were seen
