"""The upload wire format: a small JSON header and the encoded update, in one binary body.

    b"FKU1" | uint32 little-endian header length | header (UTF-8 JSON) | payload

The header names the round, the model version the update was computed from, the number of
examples behind it, the encoding of the payload and an upload id that makes retries
idempotent. The payload layout belongs to the encoding (fedmath/encodings.py).
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import asdict, dataclass

MAGIC = b"FKU1"
MAX_HEADER_BYTES = 4096
PREFIX_BYTES = 8  # magic and header length
# The header is a flat object; a little nesting still gets a message naming the field, while
# anything deeper is refused before json.loads, whose recursion would end in RecursionError
# (not a ValueError) near the interpreter's recursion limit.
MAX_HEADER_DEPTH = 4


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


# A JSON string, or an unterminated one running to the end of the text: always matches from a
# quote, so the scan below stays linear on hostile text (no backtracking, no retry per quote).
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"?', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")


def nesting_exceeds(text: str, limit: int) -> bool:
    """Whether arrays and objects in JSON `text` nest more than `limit` deep, counted on the
    brackets outside strings. Exact for every prefix json.loads parses (it stops at the first
    error), so `json.loads` of a text for which this is False recurses at most `limit` deep."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for m in _BRACKETS.finditer(_JSON_STRING.sub("", text)):
        depth += 1 if m.group() in "[{" else -1
        if depth > limit:
            return True
    return False


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
        text = bytes(body[PREFIX_BYTES : PREFIX_BYTES + n]).decode()
    except UnicodeDecodeError as e:
        raise WireError(f"header is not UTF-8 JSON: {e}") from None
    if nesting_exceeds(text, MAX_HEADER_DEPTH):
        raise WireError(f"header nests arrays or objects more than {MAX_HEADER_DEPTH} deep; "
                        "it must be a flat JSON object of numbers and strings")
    try:
        raw = json.loads(text)
    except ValueError as e:  # JSONDecodeError, or an integer literal beyond int's digit limit
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
        # printable: no control characters, and no lone surrogates, which UTF-8 (and SQLite) cannot store
        if kind is str and (not isinstance(value, str) or not 0 < len(value) <= 128 or not value.isprintable()):
            raise WireError(f"header field {name!r} must be a non-empty printable string of at most 128 chars")
    if raw["num_examples"] < 1:
        raise WireError(f"num_examples must be >= 1, got {raw['num_examples']}")
    return UploadHeader(**raw), body[PREFIX_BYTES + n :]


