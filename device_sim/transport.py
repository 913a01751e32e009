"""The phone's HTTP client for the collector's /v1 API (docs/http_api.md): bytes in, bytes out.

One method per endpoint, each returning a typed message. Nothing here knows about models,
clipping or encodings; the phone (device_sim/phone.py) does that and hands this module bytes.

Retries follow the two kinds of failure a phone meets:
- transport failures (refused or reset connections, read timeouts) and 500/502/504: retried by
  urllib3's `Retry` with exponential backoff, on every method (uploads are idempotent through
  their `upload_id`, check-ins are repeatable);
- 429/503 with `Retry-After`: the server pacing devices. A check-in returns them as a
  `CheckinResult` with `selected=False` and `retry_after`, because the phone decides when to come
  back (on its simulated clock); an upload waits `Retry-After` (bounded) and tries again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from fedcore.messages import Plan
from fedmath.attestation import DeviceIdentity

DEFAULT_TIMEOUT = (5.0, 120.0)  # (connect, read) seconds
RETRY_STATUSES = (500, 502, 504)  # retried with backoff; 503/429 mean "come back later"
PACING_STATUSES = (429, 503)


class _Retry(Retry):
    """urllib3's Retry, minus its habit of retrying every 413/429/503 that carries Retry-After:
    those are the server pacing this device, which the caller handles (see the module docstring).
    Retry-After is still honoured on the 5xx answers in RETRY_STATUSES."""

    RETRY_AFTER_STATUS_CODES = frozenset()


class TransportError(RuntimeError):
    """An answer the protocol does not allow here (or a server error after all retries).

    Attributes:
        status: the HTTP status (0 when no response arrived).
        error: the server's error code from its JSON body, if any.
        detail: the server's explanation, if any.
    """

    def __init__(self, what: str, status: int, error: str = "", detail: str = "") -> None:
        super().__init__(f"{what}: HTTP {status} {error} {detail}".rstrip())
        self.status, self.error, self.detail = status, error, detail


@dataclass(frozen=True)
class Registration:
    device_id: str
    token: str


@dataclass(frozen=True)
class CheckinResult:
    """A check-in's answer: a plan, or when to come back."""

    status: int
    selected: bool
    round: int | None = None
    plan: Plan | None = None
    retry_after: float | None = None  # seconds, from Retry-After
    error: str = ""
    detail: str = ""
    secure: bool = False  # the round aggregates securely: report through device_sim/secure.py
    secagg: dict | None = None  # then the round's secure-stage info (GET /v1/secagg/<r>), if sent


@dataclass(frozen=True)
class ModelInfo:
    version: int
    sha256: str
    num_params: int


@dataclass(frozen=True)
class Download:
    """A binary download; `content` is None on 304 Not Modified."""

    status: int
    content: bytes | None
    etag: str | None
    nbytes: int  # bytes received (body only)


@dataclass(frozen=True)
class UploadResult:
    """What the server said about an upload. Rejections are results, not exceptions."""

    status: int
    accepted: bool
    round_complete: bool = False
    error: str = ""
    detail: str = ""
    attempts: int = 1


@dataclass
class TransferStats:
    """Bytes this transport moved (bodies only, both directions), and requests made."""

    bytes_up: int = 0
    bytes_down: int = 0
    requests: int = 0
    by_endpoint: dict[str, int] = field(default_factory=dict)

    def count(self, endpoint: str, up: int, down: int) -> None:
        self.bytes_up += up
        self.bytes_down += down
        self.requests += 1
        self.by_endpoint[endpoint] = self.by_endpoint.get(endpoint, 0) + up + down


def _json(resp: requests.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _retry_after(resp: requests.Response) -> float | None:
    raw = resp.headers.get("Retry-After")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:  # an HTTP date; the server sends seconds, so treat as "soon"
        return 1.0


class Transport:
    """HTTP client for one device (one bearer token) against one server.

    Args:
        base_url: e.g. "http://127.0.0.1:8000".
        retries: urllib3 retries for connection errors and 500/502/504.
        backoff: urllib3 backoff factor (sleeps backoff * 2**(n-1) seconds).
        timeout: (connect, read) timeouts in seconds.
        max_upload_waits: how many 429/503 answers an upload waits out before giving up.
        max_wait_s: cap on one Retry-After wait during an upload.
        sleep: how to wait (tests pass a fake).
        session: an existing requests.Session to use (e.g. Flask's test client is not one;
            see tests for an in-process adapter).
        identities: device id -> its key and certificate (`device_sim.attestation.Keystore`):
            `register` proves that identity. None: register without a key or certificate
            (a collector with `collector.attestation = "off"` only).
        issuer_public: the attestation issuer's public key (hex) the phone ships with: in a
            secure round it checks every neighbour's certificate against it (secagg/client.py).
    """

    def __init__(self, base_url: str, *, retries: int = 4, backoff: float = 0.2,
                 timeout: tuple[float, float] = DEFAULT_TIMEOUT, max_upload_waits: int = 5,
                 max_wait_s: float = 30.0, sleep: Callable[[float], None] = time.sleep,
                 session: requests.Session | None = None,
                 identities: Callable[[str], DeviceIdentity] | None = None,
                 issuer_public: str | None = None) -> None:
        if retries < 0 or backoff < 0:
            raise ValueError(f"retries and backoff must be >= 0, got {retries} and {backoff}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_upload_waits = max_upload_waits
        self.max_wait_s = max_wait_s
        self.sleep = sleep
        self.token: str | None = None
        self.device_id: str | None = None
        self.identities = identities
        self.identity: DeviceIdentity | None = None  # the device key (and certificate) once registered
        self.issuer_public = issuer_public
        self.stats = TransferStats()
        self.retry = _Retry(total=retries, connect=retries, read=retries, status=retries,
                           backoff_factor=backoff, status_forcelist=RETRY_STATUSES,
                           allowed_methods=None, respect_retry_after_header=True,
                           raise_on_status=False)
        self.session = session or requests.Session()
        adapter = HTTPAdapter(max_retries=self.retry, pool_connections=1, pool_maxsize=2)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    # --- plumbing ---------------------------------------------------------------------------
    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        h = dict(extra or {})
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        return h

    def _request(self, method: str, path: str, endpoint: str, *, data: bytes | None = None,
                 json_body: Any = None, headers: dict[str, str] | None = None) -> requests.Response:
        body = json.dumps(json_body).encode() if json_body is not None else data
        ctype = "application/json" if json_body is not None else "application/octet-stream" if data is not None else None
        resp = self._send(method, path, endpoint, body, ctype, headers)
        if resp.status_code == 401 and self.token and self.identity is not None and endpoint != "register":
            self._register_with(self.identity)  # the token expired: refresh it with the device key, once
            resp = self._send(method, path, endpoint, body, ctype, headers)
        return resp

    def _send(self, method: str, path: str, endpoint: str, body: bytes | None, ctype: str | None,
              headers: dict[str, str] | None) -> requests.Response:
        h = self._headers(headers)
        if ctype is not None:
            h["Content-Type"] = ctype
        try:
            resp = self.session.request(method, self.base_url + path, data=body, headers=h,
                                        timeout=self.timeout)
        except requests.RequestException as e:
            raise TransportError(f"{method} {path} failed after retries ({type(e).__name__}: {e})", 0) from e
        self.stats.count(endpoint, len(body or b""), len(resp.content))
        return resp

    @staticmethod
    def _fail(what: str, resp: requests.Response) -> TransportError:
        body = _json(resp)
        return TransportError(what, resp.status_code, str(body.get("error", "")), str(body.get("detail", "")))

    def close(self) -> None:
        """Drop pooled connections (the session can still be used afterwards)."""
        self.session.close()

    # --- endpoints --------------------------------------------------------------------------
    def register(self, device_id: str, identity: DeviceIdentity | None = None) -> Registration:
        """POST /v1/devices; keeps the token for later calls.

        With an identity (given, held from an earlier registration, or the keystore's for this
        id) the device first asks for a nonce (GET /v1/devices/challenge) and
        sends its certificate and its key's signature of that nonce; the same call with the
        same identity refreshes the token."""
        identity = identity or (self.identity if self.identity and self.identity.device_id == device_id else None)
        if identity is None and self.identities is not None:
            identity = self.identities(device_id)
        if identity is not None:
            return self._register_with(identity)
        resp = self._request("POST", "/v1/devices", "register", json_body={"device_id": device_id})
        return self._registered(device_id, resp)

    def _register_with(self, identity: DeviceIdentity) -> Registration:
        resp = self._request("GET", "/v1/devices/challenge", "register")
        nonce = _json(resp).get("nonce")
        if resp.status_code != 200 or not isinstance(nonce, str):
            raise self._fail(f"registration challenge for {identity.device_id!r}", resp)
        resp = self._request("POST", "/v1/devices", "register", json_body=identity.registration_body(nonce))
        reg = self._registered(identity.device_id, resp)
        self.identity = identity
        return reg

    def _registered(self, device_id: str, resp: requests.Response) -> Registration:
        if resp.status_code not in (200, 201):
            raise self._fail(f"register {device_id!r}", resp)
        body = _json(resp)
        if "token" not in body:
            raise TransportError(f"register {device_id!r}: no token in {body!r}", resp.status_code)
        self.device_id, self.token = str(body.get("device_id", device_id)), str(body["token"])
        return Registration(self.device_id, self.token)

    def checkin(self, idle: bool, charging: bool, unmetered: bool, num_examples: int) -> CheckinResult:
        """POST /v1/checkin: a plan, or (429/503) not selected with Retry-After."""
        resp = self._request("POST", "/v1/checkin", "checkin", json_body={
            "idle": bool(idle), "charging": bool(charging), "unmetered": bool(unmetered),
            "num_examples": int(num_examples)})
        body = _json(resp)
        if resp.status_code == 200:
            try:
                plan = Plan.from_json(body.get("plan") or {})
            except ValueError as e:
                raise TransportError(f"check-in: {e}", 200) from None
            info = body.get("secagg")
            return CheckinResult(200, True, int(body.get("round", plan.round)), plan,
                                 secure=body.get("secure") is True, secagg=info if isinstance(info, dict) else None)
        if resp.status_code in PACING_STATUSES or resp.status_code in (403, 409):
            return CheckinResult(resp.status_code, False, retry_after=_retry_after(resp),
                                 error=str(body.get("error", "")), detail=str(body.get("detail", "")))
        raise self._fail("checkin", resp)

    def model_info(self) -> ModelInfo:
        """GET /v1/model."""
        resp = self._request("GET", "/v1/model", "model")
        if resp.status_code != 200:
            raise self._fail("model info", resp)
        b = _json(resp)
        return ModelInfo(int(b["version"]), str(b.get("sha256", "")), int(b.get("num_params", 0)))

    def model_meta(self, version: int) -> dict[str, Any]:
        """GET /v1/model/<version>: what was published (reports, algorithm, privacy spent)."""
        resp = self._request("GET", f"/v1/model/{int(version)}", "model")
        if resp.status_code != 200:
            raise self._fail(f"model meta v{version}", resp)
        return _json(resp)

    def weights(self, version: int, etag: str | None = None) -> Download:
        """GET /v1/model/<version>/weights (float32 payload), conditional on `etag`."""
        headers = {"If-None-Match": etag} if etag else None
        resp = self._request("GET", f"/v1/model/{int(version)}/weights", "weights", headers=headers)
        if resp.status_code == 304:
            return Download(304, None, etag, 0)
        if resp.status_code != 200:
            raise self._fail(f"weights v{version}", resp)
        return Download(200, resp.content, resp.headers.get("ETag"), len(resp.content))

    def bundle_file(self, name: str) -> Download:
        """GET /v1/bundle/<name> (manifest.json, trainable.tflite, spm.model)."""
        resp = self._request("GET", f"/v1/bundle/{name}", "bundle")
        if resp.status_code != 200:
            raise self._fail(f"bundle file {name!r}", resp)
        return Download(200, resp.content, resp.headers.get("ETag"), len(resp.content))

    def upload(self, round_num: int, body: bytes) -> UploadResult:
        """POST /v1/rounds/<round>/updates with a `fedmath.wire` body.

        429/503 are waited out (Retry-After, at most `max_wait_s` each, `max_upload_waits`
        times); 4xx rejections come back as `UploadResult(accepted=False, error=...)`.
        """
        attempts = 0
        while True:
            attempts += 1
            resp = self._request("POST", f"/v1/rounds/{int(round_num)}/updates", "upload", data=body)
            b = _json(resp)
            if resp.status_code in (200, 202):
                return UploadResult(resp.status_code, bool(b.get("accepted", True)),
                                    bool(b.get("round_complete", False)), attempts=attempts)
            if resp.status_code in PACING_STATUSES and attempts <= self.max_upload_waits:
                self.sleep(min(self.max_wait_s, _retry_after(resp) or 1.0))
                continue
            if 400 <= resp.status_code < 600:
                return UploadResult(resp.status_code, False, error=str(b.get("error", "")),
                                    detail=str(b.get("detail", "")), attempts=attempts)
            raise self._fail("upload", resp)

    def status(self) -> dict[str, Any]:
        """GET /v1/status (no auth)."""
        resp = self._request("GET", "/v1/status", "status")
        if resp.status_code != 200:
            raise self._fail("status", resp)
        return _json(resp)

    def metrics(self) -> str:
        """GET /metrics (Prometheus text)."""
        resp = self._request("GET", "/metrics", "metrics")
        if resp.status_code != 200:
            raise self._fail("metrics", resp)
        return resp.text
