"""The "hadamard" and "hadamard_sr" update encodings: payload layout, encode, decode.

The kernels (rotation, codebooks, bit allocation, packing) and the papers are in
fedmath/rotated.py; this module turns them into a self-describing payload and registers both
names in fedmath.encodings (imported there, so the server decodes them like any other).

  "hadamard:R"     randomized Hadamard rotation per block of B = 1024 values, then each rotated
                   block to the nearest of L Lloyd-Max levels (scaled by the block's rms) with
                   the EDEN scale s = ||y||^2 / <y, c[q]>, which makes it unbiased over the
                   rotation seed. L in {2, 3, 4, 6, 16} is chosen per block to minimize the
                   expected squared error at an average of R bits per value (1 <= R <= 4;
                   default 1.75): blocks holding more of the update's energy get more levels.
                   About 32 / (R + 0.04) times fewer bytes than float32.
  "hadamard_sr:L"  the same rotation, then stochastic rounding to L evenly spaced levels on
                   [-max|y|, max|y|] in every block (Suresh et al. 2017; QSGD): unbiased for
                   every rotation, but several times the error of "hadamard" at the same bits.
                   Default L = 16 (4 bits).

Tensors smaller than one block travel as float32. Both names share one layout (little-endian),
so the server decodes either the same way:

  uint8 version (1) | uint8 log2(B) (1..16) | uint8 K codebooks (1..8) | uint8 0 | uint64 seed
  K times: uint8 L (2..16) | L float32 levels, finite and strictly increasing
  per tensor, in manifest order:
    uint8 kind (0: float32, 1: rotated)
    kind 0: size float32 values
    kind 1: nb = max(1, ceil(size / B)) float32 scales (finite, >= 0)
            | nb uint8 codebook numbers (< K)
            | per block, ceil(B / g) bytes: its B level indices in base L (its codebook's),
              g = floor(log_L 256) digits per byte, first digit least significant, the unused
              digits of the block's last byte 0

decoded tensor = the first `size` values of D H (scale_b * codebook_b[index]) / sqrt(B), block
by block, where D is the seed's sign diagonal for that tensor (fedmath.rotated.signs).
"""

from __future__ import annotations

import math
import struct

import numpy as np

from fedmath import encodings, rotated
from fedmath.encodings import EncodingError, NonFiniteError
from fedmath.types import Shapes, Weights

HADAMARD_VERSION = 1
HADAMARD_BLOCK = 1024
HADAMARD_LEVELS = (2, 3, 4, 6, 16)  # level counts "hadamard" allocates among
DEFAULT_BITS = 1.75
DEFAULT_SR_LEVELS = 16
MAX_LEVELS, MAX_CODEBOOKS = 16, 8
_KIND_FLOAT32, _KIND_ROTATED = 0, 1
_HADAMARD_HEAD = struct.Struct("<BBBBQ")


def _levels(levels: int | None, who: str = "hadamard_sr") -> int:
    n = DEFAULT_SR_LEVELS if levels is None else levels
    if isinstance(n, bool) or int(n) != n or not 2 <= int(n) <= MAX_LEVELS:
        raise EncodingError(f"{who}: levels must be an integer in [2, {MAX_LEVELS}], got {levels!r}")
    return int(n)


def _bits(bits: float | None) -> float:
    b = DEFAULT_BITS if bits is None else float(bits)
    if not 1.0 <= b <= 4.0:
        raise EncodingError(f"hadamard: bits per value must be in [1, 4], got {bits!r}")
    return b


def _encode_hadamard(update: Weights, rng: np.random.Generator, *, bits: float | None, levels: int | None,
                     stochastic: bool, block: int, max_norm: float | None, seed: int | None) -> bytes:
    if block < 2 or block & (block - 1) or block > 1 << 16:
        raise EncodingError(f"hadamard block size must be a power of two in [2, 65536], got {block}")
    seed = int(rng.integers(0, 2**64, dtype=np.uint64)) if seed is None else int(seed) % 2**64
    shapes = [np.shape(u) for u in update]
    flats = [np.ravel(np.asarray(u, dtype=np.float32)).astype(np.float64) for u in update]
    for t, flat in enumerate(flats):
        if not np.all(np.isfinite(flat)):
            raise EncodingError(f"cannot encode non-finite values (tensor {t})")
    rotated_blocks = {t: rotated.rotate(f, seed, t, block) for t, f in enumerate(flats) if f.size >= block}

    # Levels per block: one count for all (hadamard_sr, or a fixed `levels`), or allocated by energy.
    if levels is not None or not rotated_blocks:
        counts = {t: np.full(len(y), levels, np.int64) for t, y in rotated_blocks.items()}
    else:
        energy = np.concatenate([np.sum(y * y, axis=1) for y in rotated_blocks.values()])
        chosen = rotated.allocate(energy, block, bits, HADAMARD_LEVELS)
        counts, start = {}, 0
        for t, y in rotated_blocks.items():
            counts[t], start = chosen[start : start + len(y)], start + len(y)
    used = sorted({int(n) for c in counts.values() for n in c}) or [levels or HADAMARD_LEVELS[0]]
    books = [(rotated.uniform_levels(n) if stochastic else rotated.lloyd_max_normal(n)).astype(np.float32)
             for n in used]
    head = _HADAMARD_HEAD.pack(HADAMARD_VERSION, block.bit_length() - 1, len(used), 0, seed) + b"".join(
        bytes([n]) + book.astype("<f4").tobytes() for n, book in zip(used, books))

    parts: list[tuple[int, np.ndarray, bytes]] = []  # (kind, float32 scales or values, the rest)
    for t, flat in enumerate(flats):
        if t not in rotated_blocks:
            parts.append((_KIND_FLOAT32, flat.astype(np.float32), b""))
            continue
        y, n_levels = rotated_blocks[t], counts[t]
        book_of = np.searchsorted(used, n_levels)
        scales = np.zeros(len(y))
        packed: list[np.ndarray | None] = [None] * len(y)
        for k, (n, book) in enumerate(zip(used, books)):
            rows = np.flatnonzero(book_of == k)
            if not rows.size:
                continue
            if stochastic:
                s, q = rotated.quantize_stochastic(y[rows], n, rng)
            else:
                s, q = rotated.quantize_lloyd(y[rows], book.astype(np.float64))
            scales[rows] = s
            for r, row in zip(rows, rotated.pack_blocks(q, n)):
                packed[r] = row
        rest = book_of.astype(np.uint8).tobytes() + b"".join(p.tobytes() for p in packed)
        parts.append((_KIND_ROTATED, scales.astype(np.float32), rest))

    def serialize() -> bytes:
        body = [head]
        for kind, numbers, rest in parts:
            body += [bytes([kind]), numbers.astype("<f4").tobytes(), rest]
        return b"".join(body)

    payload = serialize()
    if max_norm is None:
        return payload
    # The decoded update is linear in the scales (and the float32 tensors): shrinking them
    # shrinks it by exactly that factor, up to float32 rounding, which the loop absorbs.
    for _ in range(4):
        norm = math.sqrt(sum(float(np.sum(np.square(d, dtype=np.float64))) for d in decode_hadamard(payload, shapes)))
        if norm <= max_norm:
            return payload
        factor = np.float32(max_norm / norm * (1 - 1e-6))
        parts = [(kind, (numbers * factor).astype(np.float32), rest) for kind, numbers, rest in parts]
        payload = serialize()
    return payload


def encode_hadamard(update: Weights, bits: float | None = None, rng: np.random.Generator | None = None, *,
                    levels: int | None = None, block: int = HADAMARD_BLOCK, max_norm: float | None = None,
                    seed: int | None = None) -> bytes:
    """Randomized Hadamard rotation, then Lloyd-Max levels per block with the EDEN scale.

    Args:
        update: the tensors, in manifest order.
        bits: average bits per value for the level indices, 1..4 (default 1.75); the levels of
            each block are allocated by its energy (`fedmath.rotated.allocate`).
        rng: draws the rotation seed when `seed` is None.
        levels: use this many levels in every block instead of allocating (2..16).
        block: rotation and scale block B (a power of two); smaller tensors go as float32.
        max_norm: shrink the scales so that the decoded update's L2 norm is at most this.
        seed: the rotation seed (uint64); drawn from `rng` when None.
    """
    rng = rng if rng is not None else np.random.default_rng()
    if levels is not None:
        levels = _levels(levels, "hadamard")
    return _encode_hadamard(update, rng, bits=_bits(bits), levels=levels, stochastic=False, block=block,
                            max_norm=max_norm, seed=seed)


def encode_hadamard_sr(update: Weights, levels: int | None = None, rng: np.random.Generator | None = None, *,
                       block: int = HADAMARD_BLOCK, max_norm: float | None = None,
                       seed: int | None = None) -> bytes:
    """Randomized Hadamard rotation, then stochastic rounding to `levels` even levels on
    [-max, max] in every block (`rng` draws the seed and the rounding); the other arguments as
    `encode_hadamard`."""
    rng = rng if rng is not None else np.random.default_rng()
    return _encode_hadamard(update, rng, bits=None, levels=_levels(levels), stochastic=True, block=block,
                            max_norm=max_norm, seed=seed)


def decode_hadamard(payload: bytes, shapes: Shapes) -> Weights:
    """Decode either rotated encoding (they share the layout above)."""
    name = "hadamard"
    pos = 0

    def take(nbytes: int, what: str) -> memoryview:
        nonlocal pos
        if pos + nbytes > len(payload):
            raise EncodingError(f"{name} payload ends early: {what} needs {nbytes} bytes at offset {pos}, "
                                f"only {len(payload) - pos} left")
        chunk = memoryview(payload)[pos : pos + nbytes]
        pos += nbytes
        return chunk

    version, log2_block, n_books, reserved, seed = _HADAMARD_HEAD.unpack(take(_HADAMARD_HEAD.size, "header"))
    if version != HADAMARD_VERSION:
        raise EncodingError(f"{name} payload version must be {HADAMARD_VERSION}, got {version}")
    if not 1 <= log2_block <= 16:
        raise EncodingError(f"{name} block size must be 2^1 to 2^16, got 2^{log2_block}")
    if not 1 <= n_books <= MAX_CODEBOOKS:
        raise EncodingError(f"{name} codebook count must be in [1, {MAX_CODEBOOKS}], got {n_books}")
    if reserved != 0:
        raise EncodingError(f"{name} reserved header byte must be 0, got {reserved}")
    block = 1 << log2_block
    books = []
    for k in range(n_books):
        (n,) = take(1, f"codebook {k} size")
        if not 2 <= n <= MAX_LEVELS:
            raise EncodingError(f"{name} codebook {k}: levels must be in [2, {MAX_LEVELS}], got {n}")
        book = np.frombuffer(take(4 * n, f"codebook {k}"), dtype="<f4").astype(np.float64)
        if not np.all(np.isfinite(book)) or np.any(np.diff(book) <= 0):
            raise EncodingError(f"{name} codebook {k} must be finite and strictly increasing, got {book.tolist()}")
        books.append(book)
    widths = np.asarray([rotated.block_bytes(len(b), block) for b in books], dtype=np.int64)
    out = []
    for t, (shape, n) in enumerate(zip(shapes, [int(np.prod(s, dtype=np.int64)) for s in shapes])):
        (kind,) = take(1, f"tensor {t} kind")
        if kind == _KIND_FLOAT32:
            flat = np.frombuffer(take(4 * n, f"tensor {t} float32 values"), dtype="<f4")
            if not np.all(np.isfinite(flat)):
                raise NonFiniteError(f"{name} tensor {t}: {int(np.sum(~np.isfinite(flat)))} non-finite values")
            out.append(flat.astype(np.float32).reshape(shape))
            continue
        if kind != _KIND_ROTATED:
            raise EncodingError(f"{name} tensor {t}: kind must be 0 (float32) or 1 (rotated), got {kind}")
        nb = max(1, -(-n // block))
        scales = np.frombuffer(take(4 * nb, f"tensor {t} scales"), dtype="<f4")
        bad = np.flatnonzero(~np.isfinite(scales) | (scales < 0))
        if bad.size:
            raise EncodingError(f"{name} tensor {t} block {int(bad[0])}: scale must be a finite number >= 0, "
                                f"got {float(scales[bad[0]])!r}")
        book_of = np.frombuffer(take(nb, f"tensor {t} codebook numbers"), dtype=np.uint8).astype(np.int64)
        if np.any(book_of >= n_books):
            raise EncodingError(f"{name} tensor {t}: codebook numbers must be below {n_books}, "
                                f"got {int(book_of.max())}")
        sizes = widths[book_of]
        raw = np.frombuffer(take(int(sizes.sum()), f"tensor {t} levels"), dtype=np.uint8)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        y = np.empty((nb, block), dtype=np.float64)
        for k, book in enumerate(books):
            rows = np.flatnonzero(book_of == k)
            if not rows.size:
                continue
            grid = raw[offsets[rows][:, None] + np.arange(widths[k])[None, :]]
            try:
                q = rotated.unpack_blocks(grid, len(book), block)
            except ValueError as e:
                raise EncodingError(f"{name} tensor {t}: {e}") from None
            y[rows] = scales[rows].astype(np.float64)[:, None] * book[q]
        with np.errstate(over="ignore", invalid="ignore"):
            flat = rotated.unrotate(y, seed, t, n).astype(np.float32)
        if not np.all(np.isfinite(flat)):
            raise NonFiniteError(f"{name} tensor {t}: decodes to {int(np.sum(~np.isfinite(flat)))} non-finite values")
        out.append(flat.reshape(shape))
    if pos != len(payload):
        raise EncodingError(f"{name} payload has {len(payload) - pos} bytes after the last tensor")
    return out


def _parse_bits(text: str) -> float:
    return _bits(encodings.parse_finite(text, "bits per value in [1, 4]"))


def _parse_levels(text: str) -> int:
    if not text.isdigit():
        raise EncodingError(f"expected a number of levels in [2, {MAX_LEVELS}] after ':', got {text!r}")
    return _levels(int(text))


encodings.register("hadamard", encode_hadamard, decode_hadamard, parameter=("bits", _parse_bits), takes_rng=True,
                   norm_bounded=True)
encodings.register("hadamard_sr", encode_hadamard_sr, decode_hadamard, parameter=("levels", _parse_levels),
                   takes_rng=True, norm_bounded=True)
