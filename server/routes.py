"""HTTP routes (docs/http_api.md): a blueprint that only moves bytes and JSON in and out of the
Collector owned by the app. Every refusal is JSON `{error, detail}` with its status code."""

from __future__ import annotations

import time

from flask import Blueprint, Response, current_app, g, jsonify, request, send_file

from fedcore.messages import Refusal
from server import reputation, validation
from server.body import read_whole
from server.rounds import Collector

bp = Blueprint("v1", __name__)
ops = Blueprint("ops", __name__)


def collector() -> Collector:
    return current_app.extensions["fedkeys"]["collector"]


def _state(name: str):
    return current_app.extensions["fedkeys"][name]


def _device() -> str:
    """Authenticate the request and spend one of the device's rate-limit tokens."""
    device, wait = collector().authenticate(request.headers.get("Authorization"), _state("device_limiter"))
    g.device_id = device
    if wait is not None:
        raise Refusal("rate_limited", "too many requests from this device", retry_after=wait)
    return device


def _number(value: int, what: str) -> int:
    """A round or version number from the URL; beyond SQLite's range it cannot exist."""
    if value >= 2**63:
        raise Refusal("not_found", f"no {what} {value}")
    return value


def _json_body() -> object:
    """The request's JSON body (server/validation.py `json_body`), at most MAX_JSON_BYTES."""
    if not request.is_json:
        raise Refusal("bad_request", "the body must be JSON with Content-Type: application/json")
    limit = request.max_content_length  # the app's MAX_CONTENT_LENGTH, unless set lower
    request.max_content_length = min(limit, validation.MAX_JSON_BYTES) if limit else validation.MAX_JSON_BYTES
    return validation.json_body(read_whole(request))


def _registration_pace() -> None:
    wait = _state("register_limiter").take(request.remote_addr or "?", time.monotonic())
    if wait is not None:
        raise Refusal("rate_limited", "too many registrations from this address", retry_after=wait)


@bp.get("/devices/challenge")
def registration_challenge():
    _registration_pace()
    resp = jsonify(collector().identity.challenge())
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.post("/devices")
def register():
    _registration_pace()
    body = _json_body()
    if not isinstance(body, dict):
        raise Refusal("bad_request", f"registration body must be a JSON object, got {type(body).__name__}")
    token = collector().identity.register(body)
    return jsonify({"device_id": body["device_id"], "token": token}), 201


@bp.post("/checkin")
def checkin():
    device = _device()
    try:
        answer = collector().checkin(device, _json_body())
    except Refusal as e:
        _state("metrics").inc("fedkeys_checkins_total", result=e.code)
        raise
    _state("metrics").inc("fedkeys_checkins_total", result="accepted")
    return jsonify(answer)


@bp.get("/model")
def model():
    _device()
    return jsonify(collector().model_info())


@bp.get("/model/<int:version>")
def model_meta(version: int):
    _device()
    return jsonify(collector().model_meta(_number(version, "model version")))


@bp.get("/model/<int:version>/weights")
def model_weights(version: int):
    _device()
    payload, sha = collector().weights_payload(_number(version, "model version"))
    resp = Response(payload, mimetype="application/octet-stream")
    resp.set_etag(sha)
    resp.headers["Cache-Control"] = "private, max-age=31536000, immutable"
    return resp.make_conditional(request)


@bp.get("/bundle/<name>")
def bundle_file(name: str):
    _device()
    path = collector().bundle.path(name)
    if path is None:
        raise Refusal("not_found", f"the bundle has no file {name!r}; it has {sorted(collector().bundle.files)}")
    mimetype = "application/json" if name.endswith(".json") else "application/octet-stream"
    return send_file(path, mimetype=mimetype, etag=collector().bundle.files[name],
                     conditional=True, max_age=0)


@bp.post("/rounds/<int:round_number>/updates")
def upload(round_number: int):
    started = time.perf_counter()
    device = _device()
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    length = request.content_length
    if length is not None and length > limit:
        raise Refusal("too_large", f"body of {length} bytes exceeds the {limit}-byte limit")
    if length is not None:  # read front to back, each part where it is used (server/body.py)
        body_stream = _state("bodies").stream(request.environ, length)
        answer = collector().receive(device, _number(round_number, "round"), body_stream)
    else:  # no Content-Length (chunked): werkzeug reads it, enforcing the limit
        body = read_whole(request)
        length = len(body)
        answer = collector().accept(device, _number(round_number, "round"), body)
    m = _state("metrics")
    m.inc("fedkeys_updates_accepted_total")
    m.inc("fedkeys_update_bytes_total", length)
    m.inc("fedkeys_upload_seconds_total", time.perf_counter() - started)
    return jsonify(answer), 202


def _secure():
    secure = collector().secure
    if secure is None:
        raise Refusal("not_found", "this collector does not run secure aggregation (secagg.enabled is false)")
    return secure


@bp.get("/secagg/<int:round_number>")
def secagg_info(round_number: int):
    device = _device()
    c = collector()
    now = time.time()
    return jsonify(_secure().info(device, _number(round_number, "round"), c.tick(now), now))


@bp.post("/secagg/<int:round_number>/<any(keys, shares, masked, unmask):stage>")
def secagg_post(round_number: int, stage: str):
    device = _device()
    kind = {"keys": "advertise", "shares": "share", "masked": "masked", "unmask": "unmask"}[stage]
    if kind == "advertise":
        body = _json_body()
    elif request.mimetype != "application/octet-stream":
        raise Refusal("bad_secagg", f"a {stage} message is binary, with Content-Type: application/octet-stream "
                                    f"(docs/http_api.md); got {request.mimetype or 'none'}")
    elif kind == "masked":
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        length = request.content_length
        if length is not None and length > limit:
            raise Refusal("too_large", f"body of {length} bytes exceeds the {limit}-byte limit")
        # a known length: straight from the socket into the thread's buffer, as an upload (server/body.py)
        body = (_state("bodies").stream(request.environ, length).read_all() if length is not None
                else read_whole(request))
    else:  # shares, unmask: k fixed-size parts
        limit = request.max_content_length
        request.max_content_length = min(limit, validation.MAX_STAGE_BYTES) if limit else validation.MAX_STAGE_BYTES
        body = read_whole(request)
    c = collector()
    now = time.time()
    answer = _secure().post(device, _number(round_number, "round"), c.tick(now), kind, body, now)
    if answer.get("stage") in ("done", "abandoned"):
        c.tick()  # this message finished the sum (or ended the round): publish before answering
    return jsonify(answer), 202


@bp.get("/secagg/<int:round_number>/<any(roster, inbox, survivors):what>")
def secagg_get(round_number: int, what: str):
    device = _device()
    c = collector()
    now = time.time()
    answer = _secure().get(device, _number(round_number, "round"), c.tick(now), what, now)
    return Response(answer, mimetype="application/octet-stream") if isinstance(answer, bytes) else jsonify(answer)


@bp.get("/status")
def status():
    return jsonify(collector().status())


@ops.get("/metrics")
def metrics():
    s = collector().status()
    gauges = {
        "fedkeys_round": ("The open round's number.", s["round"]["round"]),
        "fedkeys_round_selected": ("Devices selected for the open round.", s["round"]["selected"]),
        "fedkeys_round_reports": ("Updates accepted in the open round.", s["round"]["reports"]),
        "fedkeys_model_version": ("Latest published model version.", s["model"]["version"]),
        "fedkeys_rounds_closed": ("Rounds closed with a published model.", s["rounds_closed"]),
        "fedkeys_rounds_abandoned": ("Rounds abandoned with too few reports.", s["rounds_abandoned"]),
        "fedkeys_devices_registered": ("Registered devices.", s["devices"]),
        "fedkeys_devices_attested": ("Devices registered with an attestation certificate.", s["attested_devices"]),
    }
    flags = reputation.flag_counts(collector().store.conn())
    gauges["fedkeys_updates_flagged"] = ("Updates anomaly screening flagged, all rounds (fedcore/anomaly.py).",
                                         flags["flagged"])
    gauges["fedkeys_updates_flagged_last_round"] = ("Updates flagged in the latest round with a flag.",
                                                    flags["flagged_last_round"])
    gauges["fedkeys_devices_low_reputation"] = ("Devices whose reputation is below 0.5.", flags["low_reputation"])
    eps = s["privacy"]["epsilon"]
    if eps is not None:
        gauges["fedkeys_privacy_epsilon"] = ("Epsilon spent by the latest model (at the configured delta).", eps)
    text = _state("metrics").render(gauges)
    return Response(text, mimetype="text/plain; version=0.0.4")
