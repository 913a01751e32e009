"""A phone's side of a secure round over HTTP: the four stages of secagg/client.py against the
collector's /v1/secagg endpoints (docs/http_api.md, "Secure aggregation").

    info = the check-in's "secagg" (else GET /v1/secagg/<r>): session, quantizer, sizes
    POST keys     <- ClientRound.advertise()                         (JSON)
    GET  roster   -> ClientRound.share_keys()      -> POST shares    (binary both ways)
    GET  inbox    -> ClientRound.masked_input(q)   -> POST masked    (binary both ways)
    GET  survivors-> ClientRound.unmask()          -> POST unmask    (JSON, then binary)

A GET answered 503 `secagg_wait` (the stage before is still open) is retried after its
Retry-After. The update is encoded by `fedcore.secure.encode`, the same function the
simulation's `SecureSum` runs, so both quantize alike. Every request goes through the phone's
`Transport`, which counts the bytes each way.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

import numpy as np

from device_sim.transport import Transport, TransportError, _json, _retry_after
from fedcore import secure
from fedmath.attestation import DeviceIdentity
from fedmath.types import Weights
from secagg import messages, ring
from secagg.client import ClientRound

BINARY_ANSWERS = ("roster", "inbox")  # secagg/messages.py


class SecureReport:
    """One device's secure report for one round; call the stages in order, or `run`."""

    def __init__(self, transport: Transport, identity: DeviceIdentity, round_number: int,
                 issuer_public: Optional[str] = None, max_wait_s: float = 600.0,
                 sleep: Callable[[float], None] = time.sleep, info: Optional[dict] = None) -> None:
        self.t = transport
        self.identity = identity
        self.round = round_number
        self.issuer_public = issuer_public
        self.max_wait_s = max_wait_s
        self.sleep = sleep
        self.client: Optional[ClientRound] = None
        self.quantizer: Optional[ring.Quantizer] = None
        self.max_weight = 1.0
        self.info = info  # the check-in's secure-stage info; None: GET it

    # -- plumbing -----------------------------------------------------------------------------
    def _path(self, what: str = "") -> str:
        return f"/v1/secagg/{self.round}" + (f"/{what}" if what else "")

    def get(self, what: str = "") -> Any:
        """A stage's answer: `roster` and `inbox` as their binary bodies, the others as JSON."""
        waited = 0.0
        while True:
            resp = self.t._request("GET", self._path(what), f"secagg_{what or 'info'}")
            if resp.status_code == 200:
                return resp.content if what in BINARY_ANSWERS else _json(resp)
            body = _json(resp)
            wait = _retry_after(resp)
            if resp.status_code == 503 and body.get("error") == "secagg_wait" and waited < self.max_wait_s:
                wait = min(wait or 1.0, self.max_wait_s - waited)
                self.sleep(wait)
                waited += wait
                continue
            raise Transport._fail(f"GET {self._path(what)}", resp)

    def post(self, what: str, body: Any) -> dict:
        if isinstance(body, bytes):
            resp = self.t._request("POST", self._path(what), f"secagg_{what}", data=body)
        else:
            resp = self.t._request("POST", self._path(what), f"secagg_{what}", json_body=body)
        if resp.status_code != 202:
            raise Transport._fail(f"POST {self._path(what)}", resp)
        return _json(resp)

    # -- stages -------------------------------------------------------------------------------
    def advertise(self) -> dict:
        info = self.info if self.info is not None and self.info.get("round") == self.round else self.get()
        q = info["quantizer"]
        self.quantizer = ring.Quantizer(bits=int(q["bits"]), clip_norm=float(q["clip_norm"]),
                                        coord_bound=float(q["coord_bound"]), max_devices=int(q["max_devices"]),
                                        noise_std=float(q["noise_std"]))
        self.max_weight = float(info["max_weight"])
        session = messages.unb64(info["session"], 16, "session")
        self.client = ClientRound(self.identity, session, int(info["size"]), self.quantizer.bits, self.issuer_public)
        return self.post("keys", self.client.advertise())

    def share(self) -> dict:
        assert self.client is not None
        return self.post("shares", self.client.share_keys(self.get("roster")))

    def encode(self, update: Weights, weight: float, rng: Optional[np.random.Generator] = None) -> np.ndarray:
        """The update's ring values (fedcore.secure.encode with the round's quantizer)."""
        assert self.quantizer is not None
        return secure.encode(update, weight, self.quantizer, self.max_weight, rng)

    def masked(self, encoded: np.ndarray) -> dict:
        """Upload `encoded` (from `encode`) masked."""
        assert self.client is not None
        return self.post("masked", self.client.masked_input(self.get("inbox"), encoded))

    def unmask(self) -> dict:
        assert self.client is not None
        return self.post("unmask", self.client.unmask(self.get("survivors")))

    def run(self, update: Weights, num_examples: int) -> dict:
        """All four stages; raises TransportError or secagg.client.ProtocolAbort (a dropout). The
        weight is 1 under a uniform rule, else the examples up to the round's largest weight."""
        self.advertise()
        self.share()
        weight = 1 if self.max_weight == 1 else max(1, min(int(num_examples), int(self.max_weight)))
        self.masked(self.encode(update, weight))
        return self.unmask()


__all__ = ["SecureReport", "TransportError"]
