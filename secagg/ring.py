"""Updates into the ring Z_(2^b) and back: clipping, stochastic rounding with headroom,
distributed discrete Gaussian noise, modular sums, bit packing and dequantization.

A device's float update u (m values) becomes an integer vector in Z_(2^b):

    u <- u * min(1, C / ||u||_2)                 L2 clip (the DP sensitivity)
    u <- clip(u, -B, B)                          coordinate bound B (C by default: no-op after the
                                                 L2 clip; smaller B trades clipping for resolution)
    q <- stochastic_round(u * scale)             unbiased: E[q] = u * scale
    q <- q + N_Z(0, sigma_dev^2)                 this device's share of the round's noise
    q mod 2^b

`scale` leaves headroom for the cohort's sum: n devices of |q_i| <= B * scale + 1 + noise tail
sum to less than 2^(b-1) in magnitude, so the signed sum is read back without wrap-around. The
discrete Gaussian noise is sampled exactly (Canonne, Kamath and Steinke 2020, Algorithm 3) and
n devices' samples sum to what Kairouz, Liu and Steinke 2021 ("The Distributed Discrete
Gaussian Mechanism for Federated Learning with Secure Aggregation", ICML) account for.
"""

from __future__ import annotations

import math
import secrets as _secrets
from dataclasses import dataclass
from typing import Optional

import numpy as np

NOISE_TAIL = 12.0  # noise headroom, in standard deviations of the summed noise


@dataclass(frozen=True)
class Quantizer:
    """The ring and the scale one secure round quantizes with (all devices alike).

    Attributes:
        bits: b, the ring Z_(2^b) (1..32).
        clip_norm: C, the L2 clip.
        coord_bound: B, the coordinate clip after the L2 clip (<= C).
        max_devices: the most updates summed (the headroom is for this many).
        noise_std: the summed noise's standard deviation in the float domain (0: none); each of
            `max_devices` devices adds noise_std / sqrt(max_devices) of it, in ring units.
    """

    bits: int
    clip_norm: float
    coord_bound: float
    max_devices: int
    noise_std: float = 0.0

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 32:
            raise ValueError(f"bits must be in 2..32, got {self.bits!r}")
        if not self.clip_norm > 0 or not 0 < self.coord_bound <= self.clip_norm:
            raise ValueError(f"need clip_norm > 0 and 0 < coord_bound <= clip_norm, got {self.clip_norm!r}, "
                             f"{self.coord_bound!r}")
        if self.max_devices < 1 or self.noise_std < 0:
            raise ValueError(f"need max_devices >= 1 and noise_std >= 0, got {self.max_devices!r}, {self.noise_std!r}")
        if self.scale <= 0:
            raise ValueError(f"{self.bits} bits leave no room for {self.max_devices} devices' sum and its noise")

    @property
    def modulus(self) -> int:
        return 1 << self.bits

    @property
    def scale(self) -> float:
        """Ring units per float unit: n (B s + 1) + tail * noise_std * s < 2^(b-1)."""
        room = 2.0 ** (self.bits - 1) - 1 - self.max_devices
        return room / (self.max_devices * self.coord_bound + NOISE_TAIL * self.noise_std)

    @property
    def device_noise(self) -> float:
        """Each device's discrete noise standard deviation, in ring units."""
        return self.noise_std * self.scale / math.sqrt(self.max_devices)


def _rng(rng: Optional[np.random.Generator]) -> np.random.Generator:
    return rng if rng is not None else np.random.default_rng(_secrets.randbits(128))


def quantize(update: np.ndarray, q: Quantizer, rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """A flat float update as uint32 values in Z_(2^b), noise included (module docstring)."""
    r = _rng(rng)
    u = np.asarray(update, dtype=np.float64).reshape(-1)
    norm = float(np.linalg.norm(u))
    if not math.isfinite(norm):
        raise ValueError("an update to quantize must be finite")
    if norm > q.clip_norm:
        u = u * (q.clip_norm / norm)
    x = np.clip(u, -q.coord_bound, q.coord_bound) * q.scale
    low = np.floor(x)
    ints = (low + (r.random(x.shape) < (x - low))).astype(np.int64)
    if q.noise_std > 0:
        ints += discrete_gaussian(q.device_noise, ints.shape, r)
    return (ints % q.modulus).astype(np.uint32)


def add_mod(a: np.ndarray, b: np.ndarray, bits: int) -> np.ndarray:
    """(a + b) mod 2^bits, uint32 in and out."""
    out = a + b  # uint32 wraps mod 2^32
    if bits < 32:
        out &= np.uint32((1 << bits) - 1)
    return out


def add_into(total: np.ndarray, b: np.ndarray, bits: int) -> None:
    """total <- (total + b) mod 2^bits in place (uint32): the running sum allocates nothing."""
    np.add(total, b, out=total)
    if bits < 32:
        np.bitwise_and(total, np.uint32((1 << bits) - 1), out=total)


def sub_mod(a: np.ndarray, b: np.ndarray, bits: int) -> np.ndarray:
    out = a - b
    if bits < 32:
        out &= np.uint32((1 << bits) - 1)
    return out


def signed(values: np.ndarray, bits: int) -> np.ndarray:
    """Ring values read as signed integers in [-2^(b-1), 2^(b-1))."""
    v = values.astype(np.int64)
    return np.where(v >= (1 << (bits - 1)), v - (1 << bits), v)


def dequantize(total: np.ndarray, q: Quantizer) -> np.ndarray:
    """The float sum a ring sum stands for (float64)."""
    return signed(total, q.bits) / q.scale


def discrete_gaussian(sigma: float, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Exact samples of the discrete Gaussian N_Z(0, sigma^2) (Canonne, Kamath and Steinke 2020,
    Algorithm 3: discrete Laplace proposals, accepted with probability
    exp(-(|Y| - sigma^2/t)^2 / (2 sigma^2)), t = floor(sigma) + 1), vectorized."""
    size = int(np.prod(shape))
    if sigma <= 0:
        return np.zeros(shape, np.int64)
    t = math.floor(sigma) + 1
    out = np.empty(size, np.int64)
    todo = np.arange(size)
    while todo.size:
        n = todo.size
        p = 1.0 - math.exp(-1.0 / t)
        y = rng.geometric(p, n) - rng.geometric(p, n)  # discrete Laplace with scale t
        accept = rng.random(n) < np.exp(-((np.abs(y) - sigma * sigma / t) ** 2) / (2 * sigma * sigma))
        out[todo[accept]] = y[accept]
        todo = todo[~accept]
    return out.reshape(shape)


def _group(bits: int) -> int:
    """Values per byte-aligned group that fits a uint64 (0: none, use bit planes)."""
    for g in range(64 // bits, 0, -1):
        if g * bits % 8 == 0:
            return g
    return 0


def pack(values: np.ndarray, bits: int) -> bytes:
    """uint32 values below 2^bits as a little-endian bit string, ceil(len * bits / 8) bytes: value
    i holds bits i*b .. i*b + b - 1 of the string."""
    if bits in (8, 16, 32):
        return values.astype({8: "<u1", 16: "<u2", 32: "<u4"}[bits]).tobytes()
    size, g = values.size, _group(bits)
    if g == 0:
        planes = ((values[:, None] >> np.arange(bits, dtype=np.uint32)) & 1).astype(np.uint8)
        return np.packbits(planes.reshape(-1), bitorder="little").tobytes()
    # g values side by side in one uint64 fill g*b/8 whole bytes: the same bit string, faster
    padded = np.zeros(-(-size // g) * g, np.uint64)
    padded[:size] = values
    groups = padded.reshape(-1, g)
    acc = np.zeros(groups.shape[0], np.uint64)
    for i in range(g):
        acc |= groups[:, i] << np.uint64(i * bits)
    out = acc.astype("<u8").view(np.uint8).reshape(-1, 8)[:, : g * bits // 8]
    return out.tobytes()[: packed_bytes(size, bits)]


def unpack(raw: bytes | memoryview, size: int, bits: int) -> np.ndarray:
    """The inverse of `pack` (ValueError when `raw` is not exactly that many bytes)."""
    want = packed_bytes(size, bits)
    if len(raw) != want:
        raise ValueError(f"{size} values of {bits} bits pack into {want} bytes, got {len(raw)}")
    if bits in (8, 16, 32):
        return np.frombuffer(raw, dtype={8: "<u1", 16: "<u2", 32: "<u4"}[bits]).astype(np.uint32)
    g = _group(bits)
    if g == 0:
        flat = np.unpackbits(np.frombuffer(raw, np.uint8), bitorder="little")[: size * bits]
        planes = flat.reshape(size, bits).astype(np.uint32)
        return (planes << np.arange(bits, dtype=np.uint32)).sum(axis=1, dtype=np.uint32)
    per = g * bits // 8
    groups = -(-size // g)
    # each group's `per` bytes read as one little-endian uint64 through a strided view (8-byte
    # reads at a stride of `per`), over a copy padded so the last read stays inside the buffer
    src = np.zeros(groups * per + 8, np.uint8)
    src[:want] = np.frombuffer(raw, np.uint8)
    acc = np.ndarray((groups,), "<u8", src, 0, (per,)).copy()  # contiguous: shifted in place below
    mask = np.uint64((1 << bits) - 1)
    out = np.empty((groups, g), np.uint32)
    for i in range(g):
        np.bitwise_and(acc, mask, out=out[:, i], casting="unsafe")
        if i + 1 < g:
            np.right_shift(acc, np.uint64(bits), out=acc)
    return out.reshape(-1)[:size]


def add_packed(total: np.ndarray, raw: bytes | memoryview, bits: int) -> None:
    """total <- total + unpack(raw) in the low `bits` bits of each value, in place (uint32).

    For the server's running sum of masked vectors, which it reads mod 2^b only once, at the
    end: each added word is congruent to the packed value mod 2^b, and what it carries above bit
    b (the next value's low bits, read along with it) only moves total by a multiple of 2^b
    (2^b divides 2^32). So the values are added straight from the packed bytes, through one
    strided view per position in a byte-aligned group, with no unpacked copy and no masking.

    Raises:
        ValueError: `raw` is not exactly the packed size of total's values.
    """
    size = total.size
    want = packed_bytes(size, bits)
    if len(raw) != want:
        raise ValueError(f"{size} values of {bits} bits pack into {want} bytes, got {len(raw)}")
    if total.dtype != np.uint32 or not total.flags.c_contiguous:
        raise ValueError("add_packed needs a contiguous uint32 total")
    if bits in (8, 16, 32):
        np.add(total, np.frombuffer(raw, dtype={8: "<u1", 16: "<u2", 32: "<u4"}[bits]), out=total)
        return
    g = _group(bits)
    offsets = [divmod(i * bits, 8) for i in range(g)]  # (byte, shift) of each position in a group
    if g == 0 or any(shift + bits > 32 for _, shift in offsets):
        np.add(total, unpack(raw, size, bits), out=total)
        return
    per = g * bits // 8
    last = offsets[-1][0] + 4  # the bytes a group's last 4-byte read reaches
    groups = min(size // g, max(0, (want - last) // per + 1))  # whole groups read inside `raw`
    lanes = total[: groups * g].reshape(groups, g)
    shifted = np.empty(groups, np.uint32)
    for i, (byte, shift) in enumerate(offsets if groups else []):
        words = np.ndarray((groups,), "<u4", raw, byte, (per,))  # 4 bytes from each group's position i
        if shift:
            np.right_shift(words, np.uint32(shift), out=shifted)
            words = shifted
        np.add(lanes[:, i], words, out=lanes[:, i])
    if groups * g < size:  # the last few values, whose 4-byte reads would pass the end
        np.add(total[groups * g:], unpack(memoryview(raw)[groups * per:], size - groups * g, bits),
               out=total[groups * g:])


def packed_bytes(size: int, bits: int) -> int:
    return (size * bits + 7) // 8
