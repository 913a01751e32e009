"""The keyboard page at `/keyboard`: type, see the strip of the latest published model, tap.

`GET /keyboard` is one static page (templates/keyboard.html: inline CSS and script, nothing
loaded from elsewhere). As the person types, it posts the text to `POST /keyboard/suggest` and
shows the three suggestions; tapping one inserts it. The suggestions come from
`keyboard.strip.Keyboard` (the numpy forward pass: the collector imports no TensorFlow) over the
newest model version in the store, with the bundle's vocabulary and the phone's normalisation.

The endpoint is open to anyone who can reach the collector, so it is bounded on every axis:
a body of at most MAX_BODY_BYTES (413, checked before reading when the length is announced),
a JSON object `{"text": str}` and nothing else, of at most MAX_TEXT_CHARS characters (400),
`Content-Type: application/json` only (so another site's page cannot post to it without a CORS
preflight, which this server never answers), and a token bucket per client address
(`collector.keyboard_rate_per_s` / `keyboard_burst`; 429 with Retry-After). Whatever the text,
the model runs over at most T (the bundle's seq_len) ids, so one request's work is bounded.
"""

from __future__ import annotations

import threading
import time

from flask import Blueprint, Response, current_app, jsonify, request

from fedcore.messages import Refusal
from keyboard.strip import Keyboard
from server.dashboard import static_page
from server.pace import RateLimiter
from server.validation import json_body

keyboard = Blueprint("keyboard", __name__)

CSP = ("default-src 'none'; connect-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
MAX_TEXT_CHARS = 500  # the page sends the tail of longer texts; the model sees the last T words anyway
MAX_BODY_BYTES = 8192  # 500 characters escaped as JSON surrogate pairs (12 bytes each) fit
EXTENSION = "fedkeys_keyboard"


class KeyboardModels:
    """The Keyboard of the newest published version, rebuilt when a newer one is published."""

    def __init__(self, bundle_dir: str) -> None:
        self.bundle_dir = bundle_dir
        self._lock = threading.Lock()
        self._current: Keyboard | None = None

    def latest(self, store) -> Keyboard:
        record = store.latest_model()
        if record is None:
            raise Refusal("not_found", "no model is published yet")
        current = self._current
        if current is not None and current.version == record.version:
            return current
        with self._lock:
            if self._current is None or self._current.version != record.version:
                try:
                    self._current = Keyboard.from_bundle(self.bundle_dir, weights_path=record.path,
                                                         version=record.version)
                except (ValueError, KeyError, OSError) as e:
                    raise Refusal("not_found", f"the bundle cannot run the keyboard (it needs a fedkeys "
                                               f"export: manifest model and seq_len, spm.model): {e}") from None
            return self._current


@keyboard.record_once
def _setup(state) -> None:
    cv = state.app.extensions["fedkeys"]["settings"].collector
    state.app.extensions[EXTENSION] = {
        "models": KeyboardModels(state.app.extensions["fedkeys"]["settings"].bundle_dir),
        "limiter": RateLimiter(cv.keyboard_rate_per_s, cv.keyboard_burst),
    }


@keyboard.get("/keyboard")
def page() -> Response:
    return static_page("keyboard.html", CSP)


def read_text() -> str:
    """The request's `text`, or a Refusal saying what is wrong with the request."""
    if request.mimetype != "application/json":
        raise Refusal("bad_request", f"expected Content-Type application/json, got {request.mimetype or 'none'!r}")
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise Refusal("too_large", f"the body may hold at most {MAX_BODY_BYTES} bytes, "
                                   f"got a Content-Length of {request.content_length}")
    data = request.stream.read(MAX_BODY_BYTES + 1)
    if len(data) > MAX_BODY_BYTES:
        raise Refusal("too_large", f"the body may hold at most {MAX_BODY_BYTES} bytes")
    body = json_body(data)
    if not isinstance(body, dict) or set(body) != {"text"}:
        got = sorted(body) if isinstance(body, dict) else type(body).__name__
        raise Refusal("bad_request", f'expected a JSON object {{"text": str}}, got {got}')
    text = body["text"]
    if not isinstance(text, str):
        raise Refusal("bad_request", f"text must be a string, got {type(text).__name__}")
    if len(text) > MAX_TEXT_CHARS:
        raise Refusal("bad_request", f"text may hold at most {MAX_TEXT_CHARS} characters, got {len(text)}")
    return text


@keyboard.post("/keyboard/suggest")
def suggest():
    started = time.perf_counter()
    state = current_app.extensions[EXTENSION]
    wait = state["limiter"].take(request.remote_addr or "?", time.monotonic())
    if wait is not None:
        raise Refusal("rate_limited", "too many suggestion requests from this address", retry_after=wait)
    text = read_text()
    kb = state["models"].latest(current_app.extensions["fedkeys"]["collector"].store)
    strip = kb.suggest(text)
    return jsonify({"model_version": kb.version, "kind": strip.kind, "prefix": strip.prefix,
                    "suggestions": [{"word": s.word, "prob": round(s.prob, 6)} for s in strip.suggestions],
                    "server_ms": round(1000 * (time.perf_counter() - started), 3)})
