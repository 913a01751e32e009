"""Update encodings: how a list of float32 tensors becomes an upload payload and back.

Every encoding is a pair of pure functions. `decode` checks the payload against the shapes
the model expects and raises EncodingError with what was expected and what arrived.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import Any

import numpy as np

from fedmath.types import Shapes, Weights


class EncodingError(ValueError):
    """A payload that does not decode to the expected tensors."""


class NonFiniteError(EncodingError):
    """A payload that decodes, but to NaN or infinite values."""


def _sizes(shapes: Shapes) -> list[int]:
    return [int(np.prod(s, dtype=np.int64)) for s in shapes]


def unflatten(flat: np.ndarray, shapes: Shapes, dtype: type = np.float32) -> Weights:
    """Cut a flat vector into tensors of `shapes`, in order (its size must be their total)."""
    out, start = [], 0
    for shape, n in zip(shapes, _sizes(shapes)):
        out.append(flat[start : start + n].reshape(shape).astype(dtype))
        start += n
    return out


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
        raise NonFiniteError(f"update holds {int(np.sum(~np.isfinite(flat)))} non-finite values")
    return unflatten(flat, shapes, np.float32)


ENCODERS: dict[str, Callable[..., bytes]] = {"float32": encode_float32}
DECODERS: dict[str, Callable[[bytes, Shapes], Weights]] = {"float32": decode_float32}


# ---------------------------------------------------------------------------------------------
# Compressed encodings (issue 7). The float32 pair above is the reference and stays unchanged.
#
#   "int8"       per tensor: one float32 scale s = max|x| / 127, then x ~ s * q with q int8
#                drawn by stochastic rounding (q = floor(x/s + u), u ~ U[0, 1)), so E[s*q] = x
#                (Alistarh et al. 2017, QSGD; Suresh et al. 2017, "Distributed Mean Estimation
#                with Limited Communication"). About 4x fewer bytes than float32.
#   "topk"       per tensor: the k = ceil(fraction * size) largest-magnitude entries, as indices
#                and float32 values (Aji & Heafield 2017; Lin et al. 2018, "Deep Gradient
#                Compression"). Biased: a device keeps what it did not send as a residual and
#                adds it to its next update (fedmath/error_feedback.py).
#   "topk_int8"  top-k, then the kept values as int8 with stochastic rounding.
#
# A name may carry the top-k fraction after a colon ("topk:0.05"); payloads are self-describing
# (k and the index layout are stored), so decoding needs only the base name. `base_name` gives
# what a device should put in its upload header.
#
# Layouts (little-endian):
#   int8:   T float32 scales | all int8 values, tensor after tensor
#   topk*:  per tensor: uint32 k | uint8 index format | indices | values
#           index format 0: k uint32 indices, 1: k uint16 indices, 2: a bitmap of ceil(size/8)
#           bytes (bit i of byte j marks entry 8j+i); indices ascending, values in index order.
#           values: k float32 (topk) or float32 scale + k int8 (topk_int8).
# ---------------------------------------------------------------------------------------------

INT8_LEVELS = 127  # q in [-127, 127]: symmetric, so 0 is exact
DEFAULT_TOPK_FRACTION = 1.0 / 32.0  # "topk" without a fraction keeps ~3% of each tensor

_IDX_U4, _IDX_U2, _IDX_BITMAP = 0, 1, 2


def _quantize_int8(flat: np.ndarray, rng: np.random.Generator) -> tuple[np.float32, np.ndarray]:
    """Stochastic rounding of a 1-D float array to int8 with one symmetric scale."""
    flat = np.asarray(flat, dtype=np.float32)
    peak = float(np.max(np.abs(flat))) if flat.size else 0.0
    if not np.isfinite(peak):
        raise EncodingError("cannot encode non-finite values as int8")
    scale = np.float32(peak / INT8_LEVELS)
    if scale == 0:
        return np.float32(0.0), np.zeros(flat.shape, dtype=np.int8)
    v = flat.astype(np.float64) / float(scale)
    q = np.floor(v + rng.random(v.shape))
    return scale, np.clip(q, -INT8_LEVELS, INT8_LEVELS).astype(np.int8)


def _check_scale(scale: float, where: str) -> None:
    if not np.isfinite(scale) or scale < 0:
        raise EncodingError(f"{where}: scale must be a finite number >= 0, got {scale!r}")


def encode_int8(update: Weights, rng: np.random.Generator | None = None) -> bytes:
    """Per-tensor int8 with stochastic rounding (unbiased); `rng` draws the rounding."""
    rng = rng if rng is not None else np.random.default_rng()
    scales, values = [], []
    for u in update:
        s, q = _quantize_int8(np.ravel(u), rng)
        scales.append(s)
        values.append(q.tobytes())
    return np.asarray(scales, dtype="<f4").tobytes() + b"".join(values)


def decode_int8(payload: bytes, shapes: Shapes) -> Weights:
    sizes = _sizes(shapes)
    expected = 4 * len(sizes) + sum(sizes)
    if len(payload) != expected:
        raise EncodingError(f"int8 payload must be {expected} bytes for the model's shapes, got {len(payload)}")
    scales = np.frombuffer(payload, dtype="<f4", count=len(sizes))
    for i, s in enumerate(scales):
        _check_scale(float(s), f"int8 tensor {i}")
    q = np.frombuffer(payload, dtype=np.int8, offset=4 * len(sizes))
    if np.any(q == -128):
        raise EncodingError("int8 values must lie in [-127, 127], got -128")
    out, start = [], 0
    for shape, n, s in zip(shapes, sizes, scales):
        out.append((q[start : start + n].astype(np.float32) * s).reshape(shape))
        start += n
    return out


def _topk_fraction(fraction: float | None) -> float:
    f = DEFAULT_TOPK_FRACTION if fraction is None else float(fraction)
    if not 0 < f <= 1:
        raise EncodingError(f"top-k fraction must be in (0, 1], got {fraction!r}")
    return f


def _top_indices(flat: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest |flat|, ascending."""
    if k >= flat.size:
        return np.arange(flat.size, dtype=np.int64)
    idx = np.argpartition(-np.abs(flat), k - 1)[:k]
    return np.sort(idx)


def _pack_indices(idx: np.ndarray, size: int) -> bytes:
    """The smallest of three index layouts for ascending indices into a tensor of `size`."""
    k = idx.size
    options = [(4 * k, _IDX_U4)]
    if size <= 1 << 16:
        options.append((2 * k, _IDX_U2))
    options.append(((size + 7) // 8, _IDX_BITMAP))
    _, fmt = min(options)
    if fmt == _IDX_U4:
        body = idx.astype("<u4").tobytes()
    elif fmt == _IDX_U2:
        body = idx.astype("<u2").tobytes()
    else:
        mask = np.zeros(size, dtype=bool)
        mask[idx] = True
        body = np.packbits(mask, bitorder="little").tobytes()
    return struct.pack("<IB", k, fmt) + body


def _encode_topk(update: Weights, fraction: float | None, rng: np.random.Generator | None,
                 int8_values: bool) -> bytes:
    f = _topk_fraction(fraction)
    if int8_values:
        rng = rng if rng is not None else np.random.default_rng()
    parts = []
    for u in update:
        flat = np.ravel(np.asarray(u, dtype=np.float32))
        k = min(flat.size, max(1, math.ceil(f * flat.size))) if flat.size else 0
        idx = _top_indices(flat, k)
        parts.append(_pack_indices(idx, flat.size))
        vals = flat[idx]
        if int8_values:
            s, q = _quantize_int8(vals, rng)
            parts.append(np.float32(s).astype("<f4").tobytes() + q.tobytes())
        else:
            if not np.all(np.isfinite(vals)):
                raise EncodingError("cannot encode non-finite values")
            parts.append(vals.astype("<f4").tobytes())
    return b"".join(parts)


def _decode_topk(payload: bytes, shapes: Shapes, int8_values: bool, name: str) -> Weights:
    sizes = _sizes(shapes)
    out, pos = [], 0

    def take(nbytes: int, what: str) -> bytes:
        nonlocal pos
        if pos + nbytes > len(payload):
            raise EncodingError(f"{name} payload ends early: {what} needs {nbytes} bytes at offset {pos}, "
                                f"only {len(payload) - pos} left")
        chunk = payload[pos : pos + nbytes]
        pos += nbytes
        return chunk

    for t, (shape, n) in enumerate(zip(shapes, sizes)):
        k, fmt = struct.unpack("<IB", take(5, f"tensor {t} header"))
        if k > n:
            raise EncodingError(f"{name} tensor {t}: k must be at most its size {n}, got {k}")
        if fmt == _IDX_U4:
            idx = np.frombuffer(take(4 * k, f"tensor {t} indices"), dtype="<u4").astype(np.int64)
        elif fmt == _IDX_U2:
            idx = np.frombuffer(take(2 * k, f"tensor {t} indices"), dtype="<u2").astype(np.int64)
        elif fmt == _IDX_BITMAP:
            bits = np.frombuffer(take((n + 7) // 8, f"tensor {t} bitmap"), dtype=np.uint8)
            mask = np.unpackbits(bits, bitorder="little")
            if np.any(mask[n:]):
                raise EncodingError(f"{name} tensor {t}: bitmap marks entries past its size {n}")
            idx = np.flatnonzero(mask[:n])
            if idx.size != k:
                raise EncodingError(f"{name} tensor {t}: bitmap marks {idx.size} entries, header says {k}")
        else:
            raise EncodingError(f"{name} tensor {t}: index format must be 0, 1 or 2, got {fmt}")
        if k and (idx[-1] >= n or np.any(np.diff(idx) <= 0)):
            raise EncodingError(f"{name} tensor {t}: indices must be strictly increasing and below {n}")
        if int8_values:
            (s,) = struct.unpack("<f", take(4, f"tensor {t} scale"))
            _check_scale(s, f"{name} tensor {t}")
            q = np.frombuffer(take(k, f"tensor {t} values"), dtype=np.int8)
            if np.any(q == -128):
                raise EncodingError(f"{name} tensor {t}: int8 values must lie in [-127, 127], got -128")
            vals = q.astype(np.float32) * np.float32(s)
        else:
            vals = np.frombuffer(take(4 * k, f"tensor {t} values"), dtype="<f4")
            if not np.all(np.isfinite(vals)):
                raise NonFiniteError(f"{name} tensor {t}: {int(np.sum(~np.isfinite(vals)))} non-finite values")
        dense = np.zeros(n, dtype=np.float32)
        dense[idx] = vals
        out.append(dense.reshape(shape))
    if pos != len(payload):
        raise EncodingError(f"{name} payload has {len(payload) - pos} bytes after the last tensor")
    return out


def encode_topk(update: Weights, fraction: float | None = None, rng: np.random.Generator | None = None) -> bytes:
    """Per-tensor top-k by magnitude, float32 values (`rng` is unused; accepted for uniformity)."""
    return _encode_topk(update, fraction, None, int8_values=False)


def decode_topk(payload: bytes, shapes: Shapes) -> Weights:
    return _decode_topk(payload, shapes, int8_values=False, name="topk")


def encode_topk_int8(update: Weights, fraction: float | None = None,
                     rng: np.random.Generator | None = None) -> bytes:
    """Per-tensor top-k, then the kept values as int8 with stochastic rounding."""
    return _encode_topk(update, fraction, rng, int8_values=True)


def decode_topk_int8(payload: bytes, shapes: Shapes) -> Weights:
    return _decode_topk(payload, shapes, int8_values=True, name="topk_int8")


def parse_finite(text: str, expected: str) -> float:
    """The finite number in an encoding name's parameter, or EncodingError naming `expected`."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise EncodingError(f"expected {expected} after ':', got {text!r}")
    return value


def _parse_fraction(text: str) -> float:
    return _topk_fraction(parse_finite(text, "a fraction in (0, 1]"))


# ---------------------------------------------------------------------------------------------
# The registry: what phones can send and the server decodes (server/validation.py looks names
# up in DECODERS). fedmath/hadamard.py registers "hadamard" and "hadamard_sr" when imported,
# which the last line of this module does.
# ---------------------------------------------------------------------------------------------

TAKES_RNG: set[str] = set()  # encoders that take rng= (stochastic rounding, rotation seeds)
PARAMETERS: dict[str, tuple[str, Callable[[str], Any]]] = {}  # name -> (keyword, parser of the text after ':')
NORM_BOUNDED: set[str] = set()  # encoders that take max_norm= and shrink their payload to fit it
LOSSLESS = frozenset({"float32"})  # encodings whose decode(encode(u)) == u exactly


def register(name: str, encoder: Callable[..., bytes], decoder: Callable[[bytes, Shapes], Weights], *,
             parameter: tuple[str, Callable[[str], Any]] | None = None, takes_rng: bool = False,
             norm_bounded: bool = False) -> None:
    """Add an encoding: `encoder(update, [parameter=...], [rng=...], [max_norm=...]) -> bytes`,
    `decoder(payload, shapes) -> Weights` raising EncodingError (NonFiniteError for NaN/Inf)."""
    ENCODERS[name], DECODERS[name] = encoder, decoder
    if parameter is not None:
        PARAMETERS[name] = parameter
    if takes_rng:
        TAKES_RNG.add(name)
    if norm_bounded:
        NORM_BOUNDED.add(name)


register("int8", encode_int8, decode_int8, takes_rng=True)
register("topk", encode_topk, decode_topk, parameter=("fraction", _parse_fraction), takes_rng=True)
register("topk_int8", encode_topk_int8, decode_topk_int8, parameter=("fraction", _parse_fraction), takes_rng=True)


def parse_name(name: str) -> tuple[str, Any]:
    """Split "topk:0.05" into ("topk", 0.05), "hadamard:1.75" into ("hadamard", 1.75); a plain
    name has no parameter (None).

    Raises:
        EncodingError: an unknown base name, a bad parameter, or a parameter on an encoding
            that takes none.
    """
    base, sep, param = str(name).partition(":")
    if base not in ENCODERS:
        raise EncodingError(f"unknown encoding {name!r}; expected one of {sorted(ENCODERS)}")
    if not sep:
        return base, None
    if base not in PARAMETERS:
        raise EncodingError(f"encoding {base!r} takes no parameter, got {name!r}")
    try:
        return base, PARAMETERS[base][1](param)
    except EncodingError as e:
        raise EncodingError(f"encoding {name!r}: {e}") from None


def base_name(name: str) -> str:
    """The registry name of `name` (what goes in an upload header): "topk:0.05" -> "topk"."""
    return parse_name(name)[0]


def encode(name: str, update: Weights, rng: np.random.Generator | None = None,
           max_norm: float | None = None) -> bytes:
    """Encode `update` with the encoding `name`.

    Args:
        name: a registry name, optionally with its parameter: "float32", "int8", "topk[:f]",
            "topk_int8[:f]", "hadamard[:bits]", "hadamard_sr[:levels]".
        update: the tensors, in manifest order.
        rng: draws stochastic rounding and rotation seeds; a fresh generator when None.
        max_norm: for encodings in NORM_BOUNDED, the largest L2 norm the decoded update may
            have (the payload's scales are shrunk to fit); ignored by the others.
    """
    base, param = parse_name(name)
    kwargs: dict = {}
    if base in TAKES_RNG:
        kwargs["rng"] = rng
    if param is not None:
        kwargs[PARAMETERS[base][0]] = param
    if base in NORM_BOUNDED and max_norm is not None:
        kwargs["max_norm"] = max_norm
    return ENCODERS[base](update, **kwargs)


def decode(name: str, payload: bytes, shapes: Shapes) -> Weights:
    """Decode a payload; `name` may carry a parameter, which decoding does not need."""
    base, _, _ = str(name).partition(":")
    if base not in DECODERS:
        raise EncodingError(f"unknown encoding {name!r}; expected one of {sorted(DECODERS)}")
    return DECODERS[base](payload, shapes)


from fedmath import hadamard as _hadamard  # noqa: F401  registers "hadamard" and "hadamard_sr"
