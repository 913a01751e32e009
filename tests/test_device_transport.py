"""The phone's HTTP client against a scripted stub server (unit test of retries and parsing only;
tests/test_device_phone.py drives the real collector)."""

import socket
import threading

import pytest
from flask import Flask, jsonify, request
from werkzeug.serving import make_server

from device_sim.transport import Transport, TransportError

PLAN = {"round": 3, "model_version": 2, "local_epochs": 1, "batch_size": 8, "learning_rate": 0.5,
        "clip_norm": 5.0, "noise_std": 0.0, "encoding": "float32", "max_examples": 32,
        "deadline_unix": 1e10}


@pytest.fixture()
def stub():
    """A Flask app whose answers each test scripts through `script[endpoint]` (a list of replies)."""
    app = Flask("stub")
    script: dict[str, list] = {}
    seen: list = []

    def reply(name):
        seen.append((name, request.headers.get("Authorization"), request.get_data()))
        status, body, headers = script[name].pop(0) if len(script[name]) > 1 else script[name][0]
        return (jsonify(body) if isinstance(body, dict) else body), status, headers

    app.add_url_rule("/v1/devices", "register", lambda: reply("register"), methods=["POST"])
    app.add_url_rule("/v1/checkin", "checkin", lambda: reply("checkin"), methods=["POST"])
    app.add_url_rule("/v1/model/<int:v>/weights", "weights", lambda v: reply("weights"))
    app.add_url_rule("/v1/rounds/<int:r>/updates", "upload", lambda r: reply("upload"), methods=["POST"])
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    script["register"] = [(201, {"device_id": "d1", "token": "tok"}, {})]
    yield f"http://127.0.0.1:{server.server_port}", script, seen
    server.shutdown()


def _transport(url, sleeps=None):
    t = Transport(url, retries=3, backoff=0.0, sleep=(sleeps.append if sleeps is not None else lambda s: None))
    t.register("d1")
    return t


def test_register_then_bearer_token_and_plan_parsing(stub):
    url, script, seen = stub
    script["checkin"] = [(200, {"round": 3, "plan": PLAN}, {})]
    t = _transport(url)
    res = t.checkin(True, True, True, 40)
    assert res.selected and res.round == 3 and res.plan.batch_size == 8 and res.plan.clip_norm == 5.0
    assert seen[-1][1] == "Bearer tok"
    assert b'"num_examples": 40' in seen[-1][2]


def test_checkin_turned_away_reports_retry_after_without_retrying(stub):
    url, script, seen = stub
    script["checkin"] = [(503, {"error": "not_selected", "detail": "round full"}, {"Retry-After": "7"})]
    t = _transport(url)
    res = t.checkin(True, True, True, 1)
    assert not res.selected and res.retry_after == 7.0 and res.error == "not_selected"
    assert sum(1 for s in seen if s[0] == "checkin") == 1


def test_5xx_is_retried_with_backoff_then_succeeds(stub):
    url, script, seen = stub
    script["weights"] = [(502, "bad gateway", {}), (500, "oops", {}), (200, b"\x00" * 8, {"ETag": '"abc"'})]
    t = _transport(url)
    dl = t.weights(2)
    assert dl.content == b"\x00" * 8 and dl.etag == '"abc"'
    assert sum(1 for s in seen if s[0] == "weights") == 3


def test_upload_waits_out_429_then_reports_rejection_as_a_result(stub):
    url, script, _ = stub
    script["upload"] = [(429, {"error": "rate_limited"}, {"Retry-After": "2"}),
                        (409, {"error": "stale_version", "detail": "round 3 is closed"}, {})]
    sleeps: list = []
    t = _transport(url, sleeps)
    res = t.upload(3, b"FKU1....")
    assert not res.accepted and res.status == 409 and res.error == "stale_version" and res.attempts == 2
    assert sleeps == [2.0]
    assert t.stats.bytes_up >= 16


def test_upload_accepted(stub):
    url, script, _ = stub
    script["upload"] = [(202, {"accepted": True, "round_complete": True}, {})]
    res = _transport(url).upload(3, b"x")
    assert res.accepted and res.round_complete


def test_connection_refused_raises_after_retries():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = Transport(f"http://127.0.0.1:{port}", retries=2, backoff=0.0)
    with pytest.raises(TransportError) as e:
        t.register("d1")
    assert e.value.status == 0
