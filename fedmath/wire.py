"""The upload wire format: a small JSON header and the encoded update, in one binary body.

    b"FKU1" | uint32 little-endian header length | header (UTF-8 JSON) | payload

The header names the round, the model version the update was computed from, the number of
examples behind it, the encoding of the payload and an upload id that makes retries
idempotent. The payload layout belongs to the encoding (fedmath/encodings.py).
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass

MAGIC = b"FKU1"
MAX_HEADER_BYTES = 4096
PREFIX_BYTES = 8  # magic and header length


class WireError(ValueError):
    """A malformed upload; the message says what was expected and what arrived."""


@dataclass(frozen=True)
class UploadHeader:
    round: int  # the round the update is for
    model_version: int  # the model version the device trained from
    num_examples: int  # examples behind the update (its FedAvg weight)
    encoding: str  # how the payload is encoded, e.g. "float32"
    upload_id: str  # chosen by the device; a retry with the same id is not counted twice


_FIELDS = {"round": int, "model_version": int, "num_examples": int, "encoding": str, "upload_id": str}


def pack(header: UploadHeader, payload: bytes) -> bytes:
    raw = json.dumps(asdict(header), sort_keys=True).encode()
    return MAGIC + struct.pack("<I", len(raw)) + raw + payload


def header_length(prefix: bytes | memoryview, body_length: int) -> int:
    """The header length announced by a body's first PREFIX_BYTES bytes (`prefix`), for a body
    of `body_length` bytes. Raises WireError when the prefix is not one of an upload."""
    if len(prefix) < PREFIX_BYTES or body_length < PREFIX_BYTES or prefix[:4] != MAGIC:
        raise WireError(f"body must start with {MAGIC!r} and a 4-byte header length")
    (n,) = struct.unpack("<I", prefix[4:PREFIX_BYTES])
    if n > MAX_HEADER_BYTES or PREFIX_BYTES + n > body_length:
        raise WireError(f"header length {n} is larger than the body or the {MAX_HEADER_BYTES}-byte limit")
    return n


def unpack(body: bytes | memoryview) -> tuple[UploadHeader, bytes | memoryview]:
    """Split a body into its header and payload, validating the header's fields.

    The payload is `body[PREFIX_BYTES + n:]`: a copy for `bytes`, a view (no copy) for a memoryview.
    """
    n = header_length(body[:PREFIX_BYTES], len(body))
    try:
        raw = json.loads(bytes(body[PREFIX_BYTES : PREFIX_BYTES + n]).decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WireError(f"header is not UTF-8 JSON: {e}") from None
    if not isinstance(raw, dict):
        raise WireError(f"header must be a JSON object, got {type(raw).__name__}")
    missing = sorted(set(_FIELDS) - set(raw))
    extra = sorted(set(raw) - set(_FIELDS))
    if missing or extra:
        raise WireError(f"header fields: missing {missing}, unexpected {extra}")
    for name, kind in _FIELDS.items():
        value = raw[name]
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise WireError(f"header field {name!r} must be an integer, got {value!r}")
        if kind is str and (not isinstance(value, str) or not value or len(value) > 128):
            raise WireError(f"header field {name!r} must be a non-empty string of at most 128 chars")
    if raw["num_examples"] < 1:
        raise WireError(f"num_examples must be >= 1, got {raw['num_examples']}")
    return UploadHeader(**raw), body[PREFIX_BYTES + n :]


