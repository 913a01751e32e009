"""Device attestation: certificates from a (simulated) platform issuer and proofs of key possession.

A real fleet trusts a platform's attestation service (Android Key Attestation, Play Integrity):
it signs a statement that a key lives in a genuine device's secure hardware. fedkeys simulates
that service with one Ed25519 issuer key pair (`Issuer`):

    issuer (platform)                 phone                              collector
    secret key ──certify(device_id, device public key, attestation_id)──> certificate
                                      key pair + certificate
                                      GET /v1/devices/challenge ───────> nonce (HMAC, 2 min)
                                      sign(purpose, nonce, device_id) ──> POST /v1/devices
                                                                         checks the certificate
                                                                         with the issuer's PUBLIC key,
                                                                         the nonce, the proof

`attestation_id` names the physical device the certificate was issued to (a phone may hold
several device ids, e.g. work and personal profiles); the collector caps device ids per
attestation id. Every signed message starts with its purpose, so a signature made for one step
cannot be replayed as another. Keys and signatures travel as lowercase hex.

This module is the contract both sides share (like `fedmath.wire`); it needs `cryptography`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

CERT_PURPOSE = b"fedkeys-attestation-v1\x00"
REGISTER_PURPOSE = b"fedkeys-register-v1\x00"
KEY_HEX = 64  # an Ed25519 public key: 32 bytes
SIG_HEX = 128  # an Ed25519 signature: 64 bytes
MAX_ID = 128  # device and attestation ids: printable, 1..128 characters


class AttestationError(ValueError):
    """A certificate or proof that does not verify; the message says which part and why."""


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _printable_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID or not value.isprintable():
        raise AttestationError(f"{what} must be a printable string of 1 to {MAX_ID} characters")
    return value


def _hex(value: Any, length: int, what: str) -> bytes:
    if not isinstance(value, str) or len(value) != length:
        raise AttestationError(f"{what} must be {length} hex digits")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise AttestationError(f"{what} must be {length} hex digits") from None


def public_key(hex_key: str) -> Ed25519PublicKey:
    """An Ed25519 public key from its 64 hex digits (AttestationError otherwise)."""
    return Ed25519PublicKey.from_public_bytes(_hex(hex_key, KEY_HEX, "public key"))


def _verify(key: Ed25519PublicKey, signature: bytes, message: bytes, what: str) -> None:
    try:
        key.verify(signature, message)
    except InvalidSignature:
        raise AttestationError(f"{what} does not verify") from None


@dataclass(frozen=True)
class Certificate:
    """The issuer's signature over a device id, the device's public key and its attestation id."""

    device_id: str
    public_key: str  # hex, 32 bytes
    attestation_id: str  # the physical device the platform attested
    issued_unix: float  # as the issuer wrote it (int or float): the signed JSON repeats it
    signature: str  # hex, 64 bytes: issuer's Ed25519 signature over `signed_bytes()`

    def signed_bytes(self) -> bytes:
        body = {"device_id": self.device_id, "public_key": self.public_key,
                "attestation_id": self.attestation_id, "issued_unix": self.issued_unix}
        return CERT_PURPOSE + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: Any) -> "Certificate":
        """Parse a certificate's fields (AttestationError naming the bad one); does not verify it."""
        if not isinstance(raw, dict) or set(raw) != {f for f in cls.__dataclass_fields__}:
            raise AttestationError(f"a certificate is an object with exactly the fields "
                                   f"{sorted(cls.__dataclass_fields__)}")
        issued = raw["issued_unix"]
        if isinstance(issued, bool) or not isinstance(issued, (int, float)) or not 0 <= issued < 1e11:
            raise AttestationError("certificate issued_unix must be a number of seconds")
        _hex(raw["public_key"], KEY_HEX, "certificate public_key")
        _hex(raw["signature"], SIG_HEX, "certificate signature")
        return cls(_printable_id(raw["device_id"], "certificate device_id"), raw["public_key"],
                   _printable_id(raw["attestation_id"], "certificate attestation_id"), issued,
                   raw["signature"])

    def verify(self, issuer: Ed25519PublicKey) -> None:
        """AttestationError unless the issuer signed exactly these fields."""
        _verify(issuer, bytes.fromhex(self.signature), self.signed_bytes(), "the certificate's issuer signature")


def registration_message(nonce: str, device_id: str) -> bytes:
    """What a device signs to register (or refresh its token): purpose, server nonce, its id."""
    return REGISTER_PURPOSE + nonce.encode() + b"\x00" + device_id.encode()


def verify_proof(device_key_hex: str, nonce: str, device_id: str, signature_hex: Any) -> None:
    """AttestationError unless `signature_hex` is the device key's signature of the registration
    message for this nonce and id."""
    sig = _hex(signature_hex, SIG_HEX, "signature")
    _verify(public_key(device_key_hex), sig, registration_message(nonce, device_id), "the device's signature")


class Issuer:
    """The simulated platform attestation service: one Ed25519 key pair. The collector is given
    only `public_hex`; the secret key stays with whoever plays the platform (the fleet)."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public_hex = _raw_public(key.public_key()).hex()

    @classmethod
    def generate(cls) -> "Issuer":
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: str) -> "Issuer":
        """An issuer from the 64 hex digits of its secret key in `path` (as `save` writes it)."""
        with open(path) as f:
            raw = f.read().strip()
        return cls(Ed25519PrivateKey.from_private_bytes(_hex(raw, 64, f"issuer secret key in {path}")))

    def save(self, path: str) -> str:
        """Write the secret key (hex) readable by the owner only; returns the path."""
        raw = self._key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                      serialization.NoEncryption())
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(raw.hex() + "\n")
        return path

    def certify(self, device_id: str, device_public_hex: str, attestation_id: str | None = None) -> Certificate:
        """A certificate for a device key (attestation id: the device id unless given)."""
        unsigned = Certificate(device_id, device_public_hex, attestation_id or device_id, round(time.time(), 3), "")
        return Certificate(**{**asdict(unsigned), "signature": self._key.sign(unsigned.signed_bytes()).hex()})


class DeviceIdentity:
    """A phone's device key (in its secure hardware, on a real phone) and its certificate."""

    def __init__(self, device_id: str, key: Ed25519PrivateKey, certificate: Certificate | None) -> None:
        self.device_id = device_id
        self._key = key
        self.public_hex = _raw_public(key.public_key()).hex()
        self.certificate = certificate

    @classmethod
    def create(cls, device_id: str, issuer: Issuer | None, attestation_id: str | None = None) -> "DeviceIdentity":
        """A new key; certified by `issuer` when one is given (an attacker has none)."""
        key = Ed25519PrivateKey.generate()
        ident = cls(device_id, key, None)
        if issuer is not None:
            ident.certificate = issuer.certify(device_id, ident.public_hex, attestation_id)
        return ident

    def sign_registration(self, nonce: str) -> str:
        return self._key.sign(registration_message(nonce, self.device_id)).hex()

    def sign(self, message: bytes) -> str:
        """The device key's signature (hex) of a protocol message that names its own purpose
        (secagg/crypto.py's advertised keys); never of a certificate or registration message."""
        if message.startswith((CERT_PURPOSE, REGISTER_PURPOSE)) or not message.startswith(b"fedkeys-"):
            raise ValueError("sign() signs only protocol messages that start with their own fedkeys- purpose")
        return self._key.sign(message).hex()

    def registration_body(self, nonce: str) -> dict[str, Any]:
        """The body of POST /v1/devices proving this identity for a server nonce."""
        body: dict[str, Any] = {"device_id": self.device_id, "public_key": self.public_hex, "nonce": nonce,
                                "signature": self.sign_registration(nonce)}
        if self.certificate is not None:
            body["certificate"] = self.certificate.to_json()
        return body
