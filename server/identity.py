"""Device identity: who may register, and whose bearer token is whose (docs/http_api.md).

    GET  /v1/devices/challenge  -> nonce = "<issued ms>.<random>.<HMAC>", valid NONCE_TTL_S
    POST /v1/devices {device_id, public_key, nonce, signature, certificate}
         new id, attestation "required": the certificate must be the issuer's signature over this
             id and this key (fedmath/attestation.py), the signature the key's over the nonce and id,
             and the certificate's physical device below `max_devices_per_attestation` ids;
         known id with a key: only a proof by that same key gets a new token (token refresh);
             another key, or none, is refused, so an id cannot be taken over;
         attestation "off": a new id may also register without key or certificate (as before
             attestation existed); such an id stays open to whoever registers it again.
    -> a bearer token (stored as sha256), expiring after `token_ttl_s`; the old one is revoked.

Nonces are stateless to hand out (an HMAC under a secret all workers read from SQLite) and
single-use: a registration records its nonce in the same transaction, so a replay (or two
workers racing with one nonce) is refused. Only attested devices count in the privacy
accountant's population (server/privacy.py).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Any, Optional

from fedcore.messages import Refusal
from fedmath import attestation
from server import validation
from server.settings import Settings
from server.storage import StoreQueries

NONCE_TTL_S = 120.0
NONCE_SKEW_S = 5.0  # a nonce issued by a worker whose clock runs slightly ahead is still fine


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class DeviceRegistry:
    def __init__(self, settings: Settings, store: StoreQueries) -> None:
        cv = settings.collector
        self.store = store
        self.required = cv.attestation == "required"
        issuer = settings.issuer_key
        self.issuer = attestation.public_key(issuer) if issuer else None
        self.max_per_attestation = cv.max_devices_per_attestation
        self.token_ttl_s = cv.token_ttl_s
        self._nonce_key = store.secret("registration_nonce", lambda: secrets.token_bytes(32))

    # -- nonces --------------------------------------------------------------------------------
    def _mac(self, text: str) -> str:
        return hmac.new(self._nonce_key, text.encode(), hashlib.sha256).hexdigest()[:32]

    def challenge(self, now: Optional[float] = None) -> dict:
        now = time.time() if now is None else now
        body = f"{int(now * 1000)}.{secrets.token_hex(12)}"
        return {"nonce": f"{body}.{self._mac(body)}", "expires_unix": int(now * 1000) / 1000 + NONCE_TTL_S}

    def _nonce_expiry(self, nonce: Any, now: float) -> float:
        """When a nonce this server issued expires; Refusal "bad_proof" if it is not one, or old."""
        if not isinstance(nonce, str) or len(nonce) > 80 or nonce.count(".") != 2:
            raise Refusal("bad_proof", "nonce missing or malformed: get one from GET /v1/devices/challenge")
        issued, rand, mac = nonce.split(".")
        if not issued.isdigit() or not hmac.compare_digest(mac, self._mac(f"{issued}.{rand}")):
            raise Refusal("bad_proof", "this server did not issue that nonce")
        t = int(issued) / 1000
        if not t - NONCE_SKEW_S <= now <= t + NONCE_TTL_S:
            raise Refusal("bad_proof", f"nonce expired ({now - t:.0f} s old, valid {NONCE_TTL_S:.0f} s)")
        return t + NONCE_TTL_S

    # -- registration --------------------------------------------------------------------------
    def register(self, body: Any, now: Optional[float] = None) -> str:
        """Check a registration body (module docstring) and return a new token; Refusal otherwise."""
        now = time.time() if now is None else now
        if not isinstance(body, dict):
            raise Refusal("bad_request", f"registration body must be a JSON object, got {type(body).__name__}")
        device_id = body.get("device_id")
        if not isinstance(device_id, str) or not 0 < len(device_id) <= 128 or not device_id.isprintable():
            raise Refusal("bad_request", f"device_id must be a printable string of 1 to 128 chars, got {validation.shown(device_id)}")
        key, cert, nonce_exp = self._proof(body, device_id, now)
        token = secrets.token_urlsafe(32)
        expires = now + self.token_ttl_s if self.token_ttl_s > 0 else None
        with self.store.write() as c:
            known = self.store.get_device(device_id, c)
            if known is not None and known.public_key is not None and known.public_key != key:
                raise Refusal("key_mismatch", f"device {device_id!r} is registered with another key: registering it "
                              "again (or refreshing its token) needs a signature by that key")
            if known is None or known.public_key is None:  # a new id, or a keyless one ("off") taking a key
                if key is None and self.required:
                    raise Refusal("attestation_required", "registration needs a certificate from the device "
                                  "attestation issuer and a signature by the certified key (docs/http_api.md)")
                if cert is None and self.required:
                    raise Refusal("attestation_required", f"device {device_id!r} is new: it needs a certificate")
                if cert is not None and self.store.devices_with_attestation(c, cert.attestation_id, device_id) \
                        >= self.max_per_attestation:
                    raise Refusal("attestation_cap", f"attested device {validation.shown(cert.attestation_id)} "
                                  f"already registered {self.max_per_attestation} device ids")
                attested = cert is not None
                attestation_id = cert.attestation_id if cert else None
            else:  # the same key proved itself again: a token refresh, attestation as it was
                attested, attestation_id = known.attested, known.attestation_id
            if nonce_exp is not None and not self.store.spend_nonce(c, body["nonce"], nonce_exp, now):
                raise Refusal("bad_proof", "nonce already used: get a new one from GET /v1/devices/challenge")
            self.store.add_device(c, device_id, token_hash(token), now, public_key=key, attestation_id=attestation_id,
                                  attested=attested, token_expires=expires)
        return token

    def _proof(self, body: dict, device_id: str, now: float
               ) -> tuple[Optional[str], Optional[attestation.Certificate], Optional[float]]:
        """(device key, verified certificate, nonce expiry) of a body; all None without a proof."""
        if "signature" not in body and "certificate" not in body and "public_key" not in body:
            return None, None, None
        key = body.get("public_key")
        cert = None
        if body.get("certificate") is not None:
            if self.issuer is None:
                raise Refusal("bad_attestation", "this collector has no attestation issuer key configured")
            try:
                cert = attestation.Certificate.from_json(body["certificate"])
                cert.verify(self.issuer)
            except attestation.AttestationError as e:
                raise Refusal("bad_attestation", str(e)) from None
            if cert.device_id != device_id:
                raise Refusal("bad_attestation", f"the certificate is for device {validation.shown(cert.device_id)}")
            if key is not None and key != cert.public_key:
                raise Refusal("bad_attestation", "the certificate is for another public key")
            key = cert.public_key
        try:
            attestation.public_key(key)
        except ValueError as e:
            raise Refusal("bad_proof", f"public_key: {e}") from None
        expiry = self._nonce_expiry(body.get("nonce"), now)
        try:
            attestation.verify_proof(key, body["nonce"], device_id, body.get("signature"))
        except attestation.AttestationError as e:
            raise Refusal("bad_proof", str(e)) from None
        return key, cert, expiry

    # -- tokens --------------------------------------------------------------------------------
    def authenticate(self, authorization: Optional[str], now: Optional[float] = None) -> str:
        """The device id behind an `Authorization: Bearer <token>` header; else Refusal "unauthorized"."""
        # no cache: a re-registration in another worker revokes the token at once
        device = self.store.device_for_token(bearer_hash(authorization), time.time() if now is None else now)
        if device is None:
            raise _unknown_token()
        return device

    def authenticate_paced(self, authorization: Optional[str], limiter: Any,
                           now: Optional[float] = None) -> tuple[str, Optional[int]]:
        """`authenticate`, then one of the device's rate-limit tokens spent: (device, seconds to
        wait, None when the request may go on). A limiter kept in the store (PostgreSQL's
        `take_for_token`) does both in one statement: one round trip to the database, not two.
        An unknown, revoked or expired token spends nothing."""
        fused = getattr(limiter, "take_for_token", None)
        if fused is None:
            device = self.authenticate(authorization, now)
            return device, limiter.take(device, time.monotonic())
        device, wait = fused(bearer_hash(authorization), time.time() if now is None else now)
        if device is None:
            raise _unknown_token()
        return device, wait


def bearer_hash(authorization: Optional[str]) -> str:
    """The stored hash of an `Authorization: Bearer <token>` header's token; Refusal "unauthorized"
    for a missing or malformed header."""
    if not authorization or not authorization.startswith("Bearer ") or len(authorization) > 512:
        raise Refusal("unauthorized", "missing 'Authorization: Bearer <token>' header")
    return token_hash(authorization[len("Bearer "):].strip())


def _unknown_token() -> Refusal:
    return Refusal("unauthorized", "unknown, revoked or expired token (a device refreshes it by "
                   "registering again with a proof of its key)")
