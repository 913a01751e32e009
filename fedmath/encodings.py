"""Update encodings: how a list of float32 tensors becomes an upload payload and back.

Every encoding is a pair of pure functions. `decode` checks the payload against the shapes
the model expects and raises EncodingError with what was expected and what arrived.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from fedmath.types import Shapes, Weights


class EncodingError(ValueError):
    """A payload that does not decode to the expected tensors."""


def _sizes(shapes: Shapes) -> list[int]:
    return [int(np.prod(s, dtype=np.int64)) for s in shapes]


def encode_float32(update: Weights) -> bytes:
    """Concatenate the tensors as little-endian float32, in order."""
    return b"".join(np.ascontiguousarray(u, dtype="<f4").tobytes() for u in update)


def decode_float32(payload: bytes, shapes: Shapes) -> Weights:
    sizes = _sizes(shapes)
    expected = 4 * sum(sizes)
    if len(payload) != expected:
        raise EncodingError(f"float32 payload must be {expected} bytes for the model's shapes, got {len(payload)}")
    flat = np.frombuffer(payload, dtype="<f4")
    if not np.all(np.isfinite(flat)):
        raise EncodingError(f"update holds {int(np.sum(~np.isfinite(flat)))} non-finite values")
    out, start = [], 0
    for shape, n in zip(shapes, sizes):
        out.append(flat[start : start + n].reshape(shape).astype(np.float32))
        start += n
    return out


ENCODERS: dict[str, Callable[[Weights], bytes]] = {"float32": encode_float32}
DECODERS: dict[str, Callable[[bytes, Shapes], Weights]] = {"float32": decode_float32}


def encode(name: str, update: Weights) -> bytes:
    if name not in ENCODERS:
        raise EncodingError(f"unknown encoding {name!r}; expected one of {sorted(ENCODERS)}")
    return ENCODERS[name](update)


def decode(name: str, payload: bytes, shapes: Shapes) -> Weights:
    if name not in DECODERS:
        raise EncodingError(f"unknown encoding {name!r}; expected one of {sorted(DECODERS)}")
    return DECODERS[name](payload, shapes)
