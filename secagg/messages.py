"""The stage messages of a secure round, and their validation.

The two small messages each device sends or gets once (its key advertisement, its survivor list)
are JSON; the four whose size grows with the number of neighbours k are binary, laid out below,
because at k = 136 (1,000 devices, 30% dropout) their JSON forms (hex and base64 text, field
names, a certificate repeating the device's id and key) cost more than 5% of a float32 upload.
Integers are big-endian; every parser checks lengths, counts, order and ranges and raises
`fedcore.messages.Refusal("bad_secagg", ...)` naming the part at fault, so the server refuses a
malformed message before it touches the round's state (the device turns the same refusal into
`ProtocolAbort`).

    advertise (device -> server)  JSON {"cipher_key", "mask_key": base64 of 32 B,
                                  "signature": 128 hex, "certificate": Certificate JSON or null}
    roster    (server -> device)  u32 index, u32 threshold, u32 count, then per neighbour in
                                  ascending index: u32 index, 32 B identity key, 32 B cipher key,
                                  32 B mask key, 64 B signature, u16 + device id (UTF-8), u8 1
                                  and u16 + attestation id, u16 + issued_unix (its JSON text),
                                  64 B issuer signature; or u8 0 without a certificate. The
                                  certificate's device id and key are the entry's own.
    shares    (device -> server)  one AES-GCM message (SHARE_MESSAGE bytes) per roster neighbour,
                                  in ascending neighbour index
    inbox     (server -> device)  per sender in ascending index: u32 index, its AES-GCM message
    masked    (device -> server)  the packed masked vector (secagg.ring.pack)
    survivors (server -> device)  JSON {"survivors": [indices], "dropped": [indices]}
    unmask    (device -> server)  33-byte seed shares of the surviving neighbours, then 33-byte
                                  key shares of the dropped ones, each list in ascending index
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from dataclasses import dataclass
from typing import Any, Collection, Optional

from fedcore.messages import Refusal
from secagg import crypto, shamir

MAX_INDEX = 1 << 20
SHARE_PLAINTEXT = 8 + 2 * shamir.SHARE_BYTES  # sender, receiver (4 B each), two share values
SHARE_MESSAGE = crypto.NONCE_BYTES + SHARE_PLAINTEXT + crypto.TAG_BYTES
KEY, SIG = 32, 64
_U16, _U8 = struct.Struct(">H"), struct.Struct(">B")
_HEAD = struct.Struct(">III")  # index, threshold, neighbours
_ENTRY = struct.Struct(f">I{KEY}s{KEY}s{KEY}s{SIG}s")  # index, identity, cipher and mask keys, signature
_SENDER = struct.Struct(">I")


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


def index_list(raw: Any, what: str) -> list[int]:
    if not isinstance(raw, list) or any(isinstance(i, bool) or not isinstance(i, int) or not 1 <= i < MAX_INDEX
                                        for i in raw) or len(set(raw)) != len(raw):
        raise Refusal("bad_secagg", f"{what} must be a list of distinct indices")
    return list(raw)


def _binary(body: Any, what: str) -> bytes:
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise Refusal("bad_secagg", f"a {what} message is binary (application/octet-stream), not "
                                    f"{type(body).__name__}")
    return bytes(body)


# -- roster -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """One neighbour in a roster: its keys as advertised, and its certificate's own fields (the
    certificate's device id and public key are `device_id` and `identity_key`)."""

    index: int
    device_id: str
    identity_key: bytes
    cipher_key: bytes
    mask_key: bytes
    signature: bytes
    attestation_id: Optional[str] = None  # None: no certificate
    issued_unix: float = 0.0
    cert_signature: bytes = b""

    def pack(self) -> bytes:
        ident = self.device_id.encode()
        out = [_ENTRY.pack(self.index, self.identity_key, self.cipher_key, self.mask_key, self.signature),
               _U16.pack(len(ident)), ident]
        if self.attestation_id is None:
            out.append(_U8.pack(0))
        else:
            att, issued = self.attestation_id.encode(), json.dumps(self.issued_unix).encode()
            out += [_U8.pack(1), _U16.pack(len(att)), att, _U16.pack(len(issued)), issued, self.cert_signature]
        return b"".join(out)

    def certificate(self) -> Optional[dict]:
        """The certificate as fedmath.attestation.Certificate.from_json reads it, or None."""
        if self.attestation_id is None:
            return None
        return {"device_id": self.device_id, "public_key": self.identity_key.hex(),
                "attestation_id": self.attestation_id, "issued_unix": self.issued_unix,
                "signature": self.cert_signature.hex()}


def pack_roster(index: int, threshold: int, entries: list[bytes]) -> bytes:
    """A roster from packed entries (`Entry.pack`), given in ascending neighbour index."""
    return _HEAD.pack(index, threshold, len(entries)) + b"".join(entries)


class _Reader:
    """Reads a binary message front to back; every short or malformed read is a refusal naming it."""

    def __init__(self, raw: bytes, what: str) -> None:
        self.raw, self.at, self.what = raw, 0, what

    def take(self, n: int, part: str) -> bytes:
        if self.at + n > len(self.raw):
            raise Refusal("bad_secagg", f"{self.what} ends inside {part} (byte {self.at} of {len(self.raw)})")
        self.at += n
        return self.raw[self.at - n:self.at]

    def unpack(self, s: struct.Struct, part: str) -> tuple:
        return s.unpack(self.take(s.size, part))

    def text(self, part: str) -> str:
        (n,) = self.unpack(_U16, part)
        try:
            return self.take(n, part).decode()
        except UnicodeDecodeError:
            raise Refusal("bad_secagg", f"{self.what}: {part} is not UTF-8") from None

    def end(self) -> None:
        if self.at != len(self.raw):
            raise Refusal("bad_secagg", f"{self.what} has {len(self.raw) - self.at} bytes after its last part")


def parse_roster(body: Any) -> tuple[int, int, list[Entry]]:
    """(this device's index, threshold, neighbours in ascending index)."""
    r = _Reader(_binary(body, "roster"), "roster")
    index, threshold, count = r.unpack(_HEAD, "its header")
    if not 1 <= index < MAX_INDEX or count >= MAX_INDEX:
        raise Refusal("bad_secagg", f"roster: index {index} out of range, or {count} neighbours")
    entries: list[Entry] = []
    for n in range(count):
        part = f"neighbour {n}"
        j, ident, c_pk, s_pk, sig = r.unpack(_ENTRY, part)
        if not 1 <= j < MAX_INDEX or (entries and j <= entries[-1].index):
            raise Refusal("bad_secagg", f"roster {part}: index {j} out of range or not ascending")
        device_id = r.text(f"{part}'s device id")
        (flag,) = r.unpack(_U8, f"{part}'s certificate flag")
        if flag == 0:
            entries.append(Entry(j, device_id, ident, c_pk, s_pk, sig))
            continue
        if flag != 1:
            raise Refusal("bad_secagg", f"roster {part}: certificate flag {flag} is neither 0 nor 1")
        att = r.text(f"{part}'s attestation id")
        issued = _number(r.text(f"{part}'s issue time"), f"roster {part}: issue time")
        entries.append(Entry(j, device_id, ident, c_pk, s_pk, sig, att, issued, r.take(SIG, f"{part}'s certificate")))
    r.end()
    return index, threshold, entries


def _number(text: str, what: str) -> float:
    """An int or float from its JSON text (what the certificate's signature covers), nothing else."""
    if not 0 < len(text) <= 32 or not all(ch in "0123456789.eE+-" for ch in text):
        raise Refusal("bad_secagg", f"{what} is not a number")
    try:
        value = json.loads(text)
    except ValueError:
        raise Refusal("bad_secagg", f"{what} is not a number") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Refusal("bad_secagg", f"{what} is not a number")
    return value


# -- shares and inbox ---------------------------------------------------------------------------
def parse_shares(body: Any, count: int) -> list[bytes]:
    """The `count` AES-GCM messages of a shares body, in the order sent (ascending neighbour)."""
    raw = _binary(body, "shares")
    if len(raw) != count * SHARE_MESSAGE:
        raise Refusal("bad_secagg", f"shares must be one {SHARE_MESSAGE}-byte message for each of the roster's "
                                    f"{count} neighbours ({count * SHARE_MESSAGE} bytes), got {len(raw)} bytes")
    return _parts(raw, SHARE_MESSAGE)


def pack_inbox(mail: dict[int, bytes]) -> bytes:
    return b"".join(_SENDER.pack(j) + mail[j] for j in sorted(mail))


def parse_inbox(body: Any, allowed: set[int]) -> dict[int, bytes]:
    """{sender index: AES-GCM message}; senders ascending, each one of `allowed`."""
    raw = _binary(body, "inbox")
    step = _SENDER.size + SHARE_MESSAGE
    if len(raw) % step:
        raise Refusal("bad_secagg", f"an inbox is a whole number of {step}-byte entries, got {len(raw)} bytes")
    out: dict[int, bytes] = {}
    last = 0
    for at in range(0, len(raw), step):
        (j,) = _SENDER.unpack_from(raw, at)
        if j <= last or j not in allowed:
            raise Refusal("bad_secagg", f"inbox: sender {j} is not a neighbour, or not in ascending order")
        out[j] = raw[at + _SENDER.size:at + step]
        last = j
    return out


# -- unmask -------------------------------------------------------------------------------------
def pack_unmask(seed_shares: list[bytes], key_shares: list[bytes]) -> bytes:
    return b"".join(seed_shares) + b"".join(key_shares)


def parse_unmask(body: Any, alive: Collection[int], dropped: Collection[int]
                 ) -> tuple[dict[int, bytes], dict[int, bytes]]:
    """({surviving neighbour: seed share}, {dropped neighbour: key share}): the shares come in
    ascending index, the survivors' first."""
    raw = _binary(body, "unmask")
    n, size = len(alive) + len(dropped), shamir.SHARE_BYTES
    if len(raw) != n * size:
        raise Refusal("bad_secagg", f"unmask must hold a {size}-byte share for each of the {len(alive)} surviving "
                                    f"and {len(dropped)} dropped neighbours ({n * size} bytes), got {len(raw)} bytes")
    shares = _parts(raw, size)
    return dict(zip(sorted(alive), shares)), dict(zip(sorted(dropped), shares[len(alive):]))


def _parts(raw: bytes, size: int) -> list[bytes]:
    """`raw` cut into consecutive `size`-byte parts (its length a multiple of `size`, checked by the caller)."""
    return [raw[at:at + size] for at in range(0, len(raw), size)]


# -- share plaintext ----------------------------------------------------------------------------
def share_plaintext(sender: int, receiver: int, self_share: shamir.Share, key_share: shamir.Share) -> bytes:
    return (sender.to_bytes(4, "big") + receiver.to_bytes(4, "big") + self_share.value_bytes()
            + key_share.value_bytes())


def parse_share_plaintext(raw: bytes, sender: int, receiver: int) -> tuple[bytes, bytes]:
    """(self-mask seed share, mask key share) of a decrypted share message for (sender, receiver)."""
    if len(raw) != SHARE_PLAINTEXT or int.from_bytes(raw[:4], "big") != sender \
            or int.from_bytes(raw[4:8], "big") != receiver:
        raise crypto.ShareDecryptError(f"share message from {sender} to {receiver} names another pair")
    return raw[8:8 + shamir.SHARE_BYTES], raw[8 + shamir.SHARE_BYTES:]
