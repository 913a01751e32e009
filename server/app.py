"""The collector's Flask app factory (Flask tutorial style).

    create_app(config_path=None, test_config=None)

`test_config`, when given, is the config dict itself (see server/settings.py); otherwise the
JSON file at `config_path` (or $FEDKEYS_SERVER_CONFIG) is read. All state lives in the
Collector stored on the app (`app.extensions["fedkeys"]`), backed by the state directory, so any
number of apps (gunicorn workers) over one state directory agree. gunicorn runs it as

    gunicorn "server.app:create_app(config_path='server.json')"
"""

from __future__ import annotations

import logging
import os
import secrets
from typing import Any, Optional

from flask import Flask, jsonify, request
from werkzeug.exceptions import BadRequest, ClientDisconnected, HTTPException

from fedcore.messages import Refusal
from fedmath import wire
from server.body import BodyBuffers
from server.bundle import load_bundle
from server.dashboard import dashboard
from server.errors import http_status
from server.keyboard import keyboard
from server.metrics import Metrics
from server.pace import RateLimiter, SharedRateLimiter
from server.buffered import BufferedCollector
from server.edge import EdgeCollector
from server.rounds import Collector
from server.routes import bp, ops
from server.settings import Settings, load_settings, settings_from_dict

log = logging.getLogger("fedkeys.server")


def create_app(config_path: Optional[str] = None, test_config: Optional[dict[str, Any]] = None,
               workers: Optional[int] = None) -> Flask:
    """`workers`: how many processes serve this state directory (gunicorn's --workers, which
    `server.serve.gunicorn_argv` passes here); default `server.workers` of the config."""
    if test_config is not None:
        settings = settings_from_dict(test_config)
    else:
        path = config_path or os.environ.get("FEDKEYS_SERVER_CONFIG")
        if not path:
            raise ValueError("create_app needs config_path, test_config or $FEDKEYS_SERVER_CONFIG")
        settings = load_settings(path)
    return build_app(settings, workers)


def limiter(store: Any, scope: str, rate_per_s: float, burst: int) -> RateLimiter | SharedRateLimiter:
    """Request limits in the store when it has them (PostgreSQL: shared by every worker and
    host), else in this worker's memory (SQLite: per worker, so W workers allow W times the rate)."""
    if hasattr(store, "take_token"):
        return SharedRateLimiter(store, scope, rate_per_s, burst)
    return RateLimiter(rate_per_s, burst)


def build_app(settings: Settings, workers: Optional[int] = None) -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.server.max_body_bytes
    app.config["JSON_SORT_KEYS"] = False
    policy = BufferedCollector if settings.buffered is not None else EdgeCollector if settings.collector.upstream \
        else Collector
    collector = policy(settings, load_bundle(settings.bundle_dir),
                          shared=(workers if workers is not None else settings.server.workers) > 1)
    metrics = Metrics(collector.store, settings.collector.metrics_flush_s)
    cv = settings.collector
    app.extensions["fedkeys"] = {
        "settings": settings,
        "collector": collector,
        "metrics": metrics,
        "device_limiter": limiter(collector.store, "device", cv.rate_limit_per_s, cv.rate_limit_burst),
        "register_limiter": limiter(collector.store, "register", cv.register_rate_per_s, cv.register_burst),
        # a thread keeps a body buffer as large as a float32 upload of this model (and its header)
        "bodies": BodyBuffers(keep_bytes=8 + wire.MAX_HEADER_BYTES + 4 * collector.dim),
    }
    app.register_blueprint(bp, url_prefix="/v1")
    app.register_blueprint(ops)
    app.register_blueprint(dashboard)  # the operator's page at /, reads only /v1/status and /metrics
    if settings.collector.keyboard:
        app.register_blueprint(keyboard)  # /keyboard: suggestions from the latest published model

    @app.errorhandler(Refusal)
    def api_error(e: Refusal):
        if request.blueprint == "v1" and request.endpoint == "v1.upload":
            metrics.inc("fedkeys_updates_rejected_total", error=e.code)
        resp = jsonify(e.body())
        resp.status_code = http_status(e)
        if e.retry_after is not None:
            resp.headers["Retry-After"] = str(e.retry_after)
        return resp

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
                413: "too_large"}.get(e.code or 500, "http_error")
        detail = e.description
        if isinstance(e, ClientDisconnected):
            code = "incomplete_body"
            if detail == BadRequest.description:  # werkzeug's generic text: say what it means here
                detail = "the request body ended early: fewer bytes than its Content-Length, or no last chunk"
        if e.code in (400, 413) and request.endpoint == "v1.upload":
            metrics.inc("fedkeys_updates_rejected_total", error=code)
        resp = jsonify({"error": code, "detail": detail})
        resp.status_code = e.code or 500
        return resp

    @app.errorhandler(Exception)
    def internal_error(e: Exception):
        # The exception's text stays in the server's log: it can hold paths, SQL or request bytes.
        incident = secrets.token_hex(6)
        log.exception("internal error %s on %s %s", incident, request.method, request.path)
        resp = jsonify({"error": "internal", "detail": f"internal error {incident} (the server log has it)"})
        resp.status_code = 500
        return resp

    @app.after_request
    def count(resp):
        metrics.inc("fedkeys_http_requests_total", endpoint=request.endpoint or "none", code=resp.status_code)
        try:
            metrics.flush()
        except Exception:  # counters are best effort; never fail a request over them
            log.exception("could not flush metrics")
        return resp

    return app
