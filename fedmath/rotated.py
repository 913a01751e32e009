"""Randomly rotated low-bit quantization of an update (the "hadamard" encodings).

A device rotates each tensor with a randomized Hadamard transform, quantizes the rotated
coordinates to a few levels with one scale per block, and sends the levels, the scales and the
rotation's seed; the server rebuilds the rotation from the seed and inverts it exactly.

    y = H D x / sqrt(B)      per block of B = 2^m coordinates (x zero-padded to whole blocks),
                             D = diag(+-1) drawn from the seed, H the Sylvester Hadamard matrix
    q = Q(y)                 indices into a codebook c of L levels, one scale s per block
    x_hat = D H (s c[q]) / sqrt(B), cut back to the tensor's size

The rotation spreads a tensor's energy evenly over the block, so the rotated coordinates look
Gaussian whatever the update looked like, and a few levels fit them well (Konečný et al. 2016,
"Federated Learning: Strategies for Improving Communication Efficiency", structured random
rotation; Suresh et al. 2017, "Distributed Mean Estimation with Limited Communication", whose
error bound for rotated quantization grows with log d rather than d). Each upload draws its own
seed, so the quantization errors of different devices are independent and their mean shrinks
as the number of devices grows.

Two quantizers of a rotated block y:

  stochastic  (Suresh et al. 2017, section 3; Alistarh et al. 2017, QSGD): L evenly spaced levels
              on [-1, 1] times s = max|y|, stochastic rounding between the two nearest levels.
              Unbiased for every rotation: E[x_hat] = x.
  lloyd       (Vargaftik et al. 2022, "EDEN: Communication-Efficient and Robust Distributed Mean
              Estimation for Federated Learning"; Vargaftik et al. 2021, "DRIVE"): each y_i / rms(y)
              goes to the nearest of the L Lloyd-Max levels for a standard normal, and the scale is
              s = ||y||^2 / <y, c[q]>, which makes <x_hat, x> = ||x||^2 exactly; over random
              rotations that makes x_hat unbiased (exactly for uniformly random rotations, to
              a close approximation for the randomized Hadamard transform). Its error is several
              times smaller than stochastic rounding's at the same number of levels.

With "lloyd", each block gets its own number of levels: `allocate` spends a budget of bits per
value where the update's energy is (classic bit allocation), so a tensor whose update is small
(the LSTM's recurrent kernel: 63% of the default model's values, ~4% of its update's energy)
costs few bits and the rest get many.

The sign of coordinate i of tensor t (after padding) is bit i mod 64 (least significant first)
of output number t * 2^32 + floor(i / 64) of SplitMix64 seeded with the payload's seed, where
output number k is mix(seed + (k + 1) * 0x9E3779B97F4A7C15) (Steele et al. 2014); a set bit
means -1. Pure numpy: the phone simulator and the server share it.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np

GAMMA = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1
TENSOR_STRIDE = 1 << 32  # SplitMix64 outputs reserved for each tensor's signs


def splitmix64(seed: int, index: np.ndarray) -> np.ndarray:
    """Outputs number `index` (uint64 array) of SplitMix64 seeded with `seed`."""
    idx = np.asarray(index, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed & _MASK64) + (idx + np.uint64(1)) * np.uint64(GAMMA)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def signs(seed: int, tensor: int, count: int) -> np.ndarray:
    """The +-1 diagonal D for `count` coordinates of tensor number `tensor` (float64)."""
    words = splitmix64(seed, np.arange(-(-count // 64), dtype=np.uint64) + np.uint64(tensor * TENSOR_STRIDE))
    bits = np.unpackbits(words.astype("<u8").view(np.uint8), bitorder="little")[:count]
    return 1.0 - 2.0 * bits.astype(np.float64)


def fwht(blocks: np.ndarray) -> np.ndarray:
    """Orthonormal Walsh-Hadamard transform of each row of a [n, B] array (B a power of two).

    H / sqrt(B) is symmetric and orthogonal, so this function is its own inverse.
    """
    n, size = blocks.shape
    if size & (size - 1):
        raise ValueError(f"block size must be a power of two, got {size}")
    a = np.array(blocks, dtype=np.float64)
    h = 1
    while h < size:
        a = a.reshape(n, size // (2 * h), 2, h)
        a = np.stack((a[:, :, 0] + a[:, :, 1], a[:, :, 0] - a[:, :, 1]), axis=2)
        h *= 2
    return a.reshape(n, size) / math.sqrt(size)


def rotate(flat: np.ndarray, seed: int, tensor: int, block: int) -> np.ndarray:
    """x (1-D) -> [ceil(size / block), block] rotated blocks, zero-padded to whole blocks."""
    nb = max(1, -(-flat.size // block))
    padded = np.zeros(nb * block, dtype=np.float64)
    padded[: flat.size] = flat
    return fwht((padded * signs(seed, tensor, nb * block)).reshape(nb, block))


def unrotate(blocks: np.ndarray, seed: int, tensor: int, size: int) -> np.ndarray:
    """The inverse of `rotate`: [nb, block] -> the first `size` coordinates (float64)."""
    flat = fwht(blocks).reshape(-1) * signs(seed, tensor, blocks.size)
    return flat[:size]


def lloyd_max_normal(levels: int) -> np.ndarray:
    """The `levels` Lloyd-Max reconstruction points for a standard normal (ascending).

    Lloyd's algorithm on the density: thresholds halfway between points, each point the
    conditional mean of its interval, E[Z | a < Z < b] = (phi(a) - phi(b)) / (Phi(b) - Phi(a)).
    """
    return np.asarray(_lloyd_max_normal(int(levels)), dtype=np.float64)


def _pdf(z: float) -> float:
    return 0.0 if math.isinf(z) else math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def _cdf(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2))) if not math.isinf(z) else (1.0 if z > 0 else 0.0)


def _cells(points) -> list[tuple[float, float]]:
    """The nearest-point cells (a, b) of ascending points on the real line."""
    cuts = [-math.inf] + [(a + b) / 2 for a, b in itertools.pairwise(points)] + [math.inf]
    return list(itertools.pairwise(cuts))


@functools.cache
def _lloyd_max_normal(levels: int, iterations: int = 300) -> tuple[float, ...]:
    if levels < 2:
        raise ValueError(f"levels must be at least 2, got {levels}")
    points = [-2.0 + 4.0 * i / (levels - 1) for i in range(levels)]
    for _ in range(iterations):
        points = [(_pdf(a) - _pdf(b)) / (_cdf(b) - _cdf(a)) for a, b in _cells(points)]
    c = np.asarray(points, dtype=np.float64)
    return tuple((c - c[::-1]) / 2)  # exactly symmetric (the middle level of an odd L is exactly 0)


def lloyd_error(levels: int) -> float:
    """Relative squared error of EDEN's unbiased `levels`-level quantizer on Gaussian values.

    Lloyd-Max leaves e = E[(Z - c[q])^2] = 1 - E[c[q]^2] (the points are conditional means);
    the unbiasing scale multiplies the estimate by 1 / (1 - e), giving e / (1 - e):
    0.571 for 2 levels, 0.235 for 3, 0.133 for 4, 0.0096 for 16.
    """
    c = lloyd_max_normal(levels)
    p = [_cdf(b) - _cdf(a) for a, b in _cells(c)]
    e = 1.0 - float(np.dot(p, c * c))
    return e / (1.0 - e)


def block_bytes(levels: int, block: int) -> int:
    """Bytes of one block's packed level indices."""
    return -(-block // digits_per_byte(levels))


def allocate(energy: np.ndarray, block: int, bits: float, candidates: tuple[int, ...]) -> np.ndarray:
    """Levels for each block, minimizing the expected squared error within a bit budget.

    Block b quantized with L levels costs block_bytes(L) bytes and leaves an expected squared
    error energy_b * lloyd_error(L). Minimizing the sum subject to an average of `bits` bits
    per value is classic bit allocation (reverse water-filling; Gersho and Gray 1992, ch. 8):
    for a price lam per bit, each block takes the L minimizing error + lam * bits, and lam is
    bisected to the smallest price that fits the budget. High-energy blocks get more levels;
    a block with almost nothing in it gets the fewest.

    Args:
        energy: [n] squared norm of each block.
        block: values per block.
        bits: average bits per value allowed for the level indices.
        candidates: the level counts a block may use.

    Returns:
        [n] int levels.
    """
    cands = np.asarray(sorted(candidates, key=lambda n: block_bytes(n, block)), dtype=np.int64)
    cost = np.asarray([8.0 * block_bytes(int(n), block) for n in cands])  # bits per block
    err = np.asarray([lloyd_error(int(n)) for n in cands])
    budget = bits * block * energy.size
    if cost[0] * energy.size > budget * (1 + 1e-12):
        raise ValueError(f"a budget of {bits} bits per value is below the cheapest level count's "
                         f"{cost[0] / block:.3f}")
    choose = lambda lam: np.argmin(energy[:, None] * err[None, :] + lam * cost[None, :], axis=1)
    if cost[choose(0.0)].sum() <= budget:
        return cands[choose(0.0)]
    top = float(np.max(energy)) if energy.size else 0.0
    lo, hi = 0.0, max(top, 1e-30) * float(err[0]) / float(np.min(np.diff(cost))) * 2 + 1e-30
    for _ in range(100):  # cost[choose(hi)] fits; cost[choose(lo)] does not
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if cost[choose(mid)].sum() <= budget else (mid, hi)
    return cands[choose(hi)]


def uniform_levels(levels: int) -> np.ndarray:
    """`levels` evenly spaced points on [-1, 1]."""
    return np.linspace(-1.0, 1.0, levels)


def quantize_lloyd(y: np.ndarray, codebook: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-level quantization of each block of y / rms(y); scale s = ||y||^2 / <y, c[q]>.

    Returns:
        (scales [nb] float64, indices [nb, B] uint8).
    """
    energy = np.sum(y * y, axis=1)
    rms = np.sqrt(energy / y.shape[1])
    u = y / np.where(rms > 0, rms, 1.0)[:, None]
    cuts = (codebook[1:] + codebook[:-1]) / 2
    q = np.searchsorted(cuts, u).astype(np.uint8)
    inner = np.sum(y * codebook[q], axis=1)
    scales = np.where(inner > 0, energy / np.where(inner > 0, inner, 1.0), 0.0)
    return scales, q


def quantize_stochastic(y: np.ndarray, levels: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Stochastic rounding of each block onto `levels` even levels on [-s, s], s = max|y| (as
    float32, the precision it travels in), so that E[s * c[q]] = y.

    Returns:
        (scales [nb] float64 holding float32 values, indices [nb, B] uint8).
    """
    peak = np.max(np.abs(y), axis=1)
    s32 = peak.astype(np.float32)
    scales = np.where(s32.astype(np.float64) < peak, np.nextafter(s32, np.float32(np.inf)), s32).astype(np.float64)
    v = (y / np.where(scales > 0, scales, 1.0)[:, None] + 1.0) * ((levels - 1) / 2)
    q = np.floor(v + rng.random(v.shape))
    return scales, np.clip(q, 0, levels - 1).astype(np.uint8)


def digits_per_byte(levels: int) -> int:
    """How many base-`levels` digits fit in one byte (8 for 2 levels, 5 for 3, 4 for 4, 2 for 16)."""
    g = 0
    while levels ** (g + 1) <= 256:
        g += 1
    return g


def pack_blocks(q: np.ndarray, levels: int) -> np.ndarray:
    """Pack each row of [n, B] digits on its own: [n, block_bytes(levels, B)] uint8."""
    n, size = q.shape
    g = digits_per_byte(levels)
    width = block_bytes(levels, size)
    padded = np.zeros((n, width * g), dtype=np.uint16)
    padded[:, :size] = q
    weights = np.asarray([levels**j for j in range(g)], dtype=np.uint16)
    return (padded.reshape(n, width, g) * weights).sum(axis=2).astype(np.uint8)


def unpack_blocks(raw: np.ndarray, levels: int, block: int) -> np.ndarray:
    """The inverse of `pack_blocks`: [n, block_bytes] uint8 -> [n, block] digits. Raises
    ValueError on a byte that is not a valid group of digits or non-zero unused digits."""
    g = digits_per_byte(levels)
    b = raw.astype(np.int32)
    if np.any(b >= levels**g):
        raise ValueError(f"packed byte {int(b.max())} is not {g} base-{levels} digits (max {levels**g - 1})")
    out = np.empty(b.shape + (g,), dtype=np.uint8)
    for j in range(g):
        out[..., j] = b % levels
        b = b // levels
    out = out.reshape(raw.shape[0], -1)
    if np.any(out[:, block:]):
        raise ValueError("the unused digits at the end of a block must be 0")
    return out[:, :block]
