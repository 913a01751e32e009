"""The stage messages of a secure round as JSON-ready dicts, and their validation.

Bytes travel as standard base64. Every parser checks types, lengths and ranges and raises
`fedcore.messages.Refusal("bad_secagg", ...)` naming the field, so the server refuses a
malformed message before it touches the round's state.

    advertise (device -> server)  {"cipher_key", "mask_key": 32 B, "signature": 128 hex,
                                   "certificate": fedmath.attestation.Certificate or null}
    roster    (server -> device)  {"index", "threshold", "neighbours": [{"index", "device_id",
                                   "identity_key", "cipher_key", "mask_key", "signature",
                                   "certificate"}]}
    shares    (device -> server)  {"shares": {"<neighbour index>": AES-GCM message}}
    inbox     (server -> device)  {"shares": {"<sender index>": AES-GCM message}}
    masked    (device -> server)  binary: the packed masked vector (secagg.ring.pack)
    survivors (server -> device)  {"survivors": [indices], "dropped": [indices]}
    unmask    (device -> server)  {"self_shares": {"<index>": 33 B}, "key_shares": {"<index>": 33 B}}
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from fedcore.messages import Refusal
from secagg import crypto, shamir

MAX_INDEX = 1 << 20
SHARE_PLAINTEXT = 8 + 2 * shamir.SHARE_BYTES  # sender, receiver (4 B each), two share values
SHARE_MESSAGE = crypto.NONCE_BYTES + SHARE_PLAINTEXT + crypto.TAG_BYTES


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def unb64(value: Any, length: int, what: str) -> bytes:
    if not isinstance(value, str) or len(value) > 4 * (length + 2) // 3 + 4:
        raise Refusal("bad_secagg", f"{what} must be base64 of {length} bytes")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise Refusal("bad_secagg", f"{what} must be base64 of {length} bytes") from None
    if len(raw) != length:
        raise Refusal("bad_secagg", f"{what} must be {length} bytes, got {len(raw)}")
    return raw


def fields(body: Any, names: set[str], what: str) -> dict:
    if not isinstance(body, dict) or set(body) != names:
        raise Refusal("bad_secagg", f"a {what} message is an object with exactly the fields {sorted(names)}")
    return body


def index_map(raw: Any, allowed: set[int], length: int, what: str) -> dict[int, bytes]:
    """{"<index>": base64} -> {index: bytes}; every index must be in `allowed`."""
    if not isinstance(raw, dict) or len(raw) > len(allowed):
        raise Refusal("bad_secagg", f"{what} must be an object keyed by at most {len(allowed)} indices")
    out: dict[int, bytes] = {}
    keys, values = list(raw), list(raw.values())
    joined = _join(keys)
    if joined is not None and joined.isascii() and joined.isdigit() and keys \
            and min(map(len, keys)) > 0 and max(map(len, keys)) <= 7 and allowed.issuperset(ints := list(map(int, keys))):
        out = dict.fromkeys(ints, b"")  # every key checked at once (the loop below names a bad one)
    else:
        for key in raw:
            if not isinstance(key, str) or not key.isdigit() or len(key) > 7:
                raise Refusal("bad_secagg", f"{what}: keys are decimal indices")
            i = int(key)
            if i not in allowed:
                raise Refusal("bad_secagg", f"{what}: index {i} is not one this device may send for")
            out[i] = b""
    chars = 4 * length // 3
    text = _join(values)
    if length % 3 == 0 and text is not None and set(map(len, values)) <= {chars}:
        # unpadded values of one length: one decode of their concatenation checks them all
        try:
            whole = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            whole = b""
        if len(whole) == length * len(raw):
            for n, i in enumerate(out):
                out[i] = whole[n * length:(n + 1) * length]
            return out
    for key, value in raw.items():  # the slow path names the value at fault
        out[int(key)] = unb64(value, length, f"{what}[{key}]")
    return out


def _join(parts: list) -> str | None:
    """The strings joined, or None when one is not a string."""
    try:
        return "".join(parts)
    except TypeError:
        return None


def index_list(raw: Any, what: str) -> list[int]:
    if not isinstance(raw, list) or any(isinstance(i, bool) or not isinstance(i, int) or not 1 <= i < MAX_INDEX
                                        for i in raw) or len(set(raw)) != len(raw):
        raise Refusal("bad_secagg", f"{what} must be a list of distinct indices")
    return list(raw)


def share_plaintext(sender: int, receiver: int, self_share: shamir.Share, key_share: shamir.Share) -> bytes:
    return (sender.to_bytes(4, "big") + receiver.to_bytes(4, "big") + self_share.value_bytes()
            + key_share.value_bytes())


def parse_share_plaintext(raw: bytes, sender: int, receiver: int) -> tuple[bytes, bytes]:
    """(self-mask seed share, mask key share) of a decrypted share message for (sender, receiver)."""
    if len(raw) != SHARE_PLAINTEXT or int.from_bytes(raw[:4], "big") != sender \
            or int.from_bytes(raw[4:8], "big") != receiver:
        raise crypto.ShareDecryptError(f"share message from {sender} to {receiver} names another pair")
    return raw[8:8 + shamir.SHARE_BYTES], raw[8 + shamir.SHARE_BYTES:]
