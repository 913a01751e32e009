"""Shamir secret sharing over the prime field GF(p), p = 2^256 + 297 (Shamir 1979).

A secret is 32 bytes (a self-mask seed or an X25519 secret key), read as an integer below
2^256 < p, so one field element holds it whole and a share is one 33-byte element. The secret is
the constant term of a random polynomial of degree t - 1; share x (x = 1, 2, ...) is its value
at x. Any t shares give the polynomial back by Lagrange interpolation at 0; t - 1 shares are
consistent with every secret equally (each secret fits exactly one polynomial through them), so
they say nothing about it. federated-compute's fcp/secagg shares over a 31-bit prime, chunk by
chunk; one 257-bit element keeps this module short and a share the same 33 bytes.

Coefficients come from `secrets` (the operating system's generator): a share is a secret.
"""

from __future__ import annotations

import functools
import math
import secrets as _secrets
from dataclasses import dataclass

import numpy as np

PRIME = 2**256 + 297  # the smallest prime above 2^256 (tests/test_secagg_shamir.py checks it)
SECRET_BYTES = 32
SHARE_BYTES = 33


class ShamirError(ValueError):
    """Shares that cannot give the secret back (too few, duplicated, or out of range)."""


@dataclass(frozen=True)
class Share:
    """The polynomial's value `y` at `x` (1 <= x < p)."""

    x: int
    y: int

    def value_bytes(self) -> bytes:
        return self.y.to_bytes(SHARE_BYTES, "big")

    @classmethod
    def from_bytes(cls, x: int, raw: bytes) -> "Share":
        if len(raw) != SHARE_BYTES:
            raise ShamirError(f"a share value is {SHARE_BYTES} bytes, got {len(raw)}")
        y = int.from_bytes(raw, "big")
        if y >= PRIME:
            raise ShamirError("a share value must be below the field's prime")
        return cls(x, y)


def split(secret: bytes, xs: list[int], threshold: int) -> list[Share]:
    """Shares of `secret` (32 bytes) at the points `xs`, any `threshold` of which recover it.

    Raises:
        ShamirError: a secret of another length, a threshold outside 1..len(xs), or points
            that repeat or lie outside 1..p-1.
    """
    if len(secret) != SECRET_BYTES:
        raise ShamirError(f"a secret is {SECRET_BYTES} bytes, got {len(secret)}")
    if not 1 <= threshold <= len(xs):
        raise ShamirError(f"threshold must be in 1..{len(xs)} (the number of shares), got {threshold}")
    _check_points(xs)
    coeffs = [int.from_bytes(secret, "big")] + [_secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    shares = []
    for x in xs:
        y = 0
        for a in reversed(coeffs):  # Horner
            y = (y * x + a) % PRIME
        shares.append(Share(x, y))
    return shares


def combine(shares: list[Share], threshold: int) -> bytes:
    """The secret from at least `threshold` shares (the first `threshold` are used).

    With fewer than `threshold` shares nothing can be recovered and ShamirError says so; with
    enough shares of which some are wrong, the result is a wrong secret (the protocol
    authenticates shares before they get here, so a wrong one is never combined).
    """
    if threshold < 1 or len(shares) < threshold:
        raise ShamirError(f"need {threshold} shares to recover the secret, got {len(shares)}")
    use = shares[:threshold]
    xs = [s.x for s in use]
    _check_points(xs)
    secret = sum(s.y * c for s, c in zip(use, lagrange_at_zero(tuple(xs)))) % PRIME
    if secret >= 2 ** (8 * SECRET_BYTES):
        raise ShamirError("the shares do not come from one 32-byte secret")
    return secret.to_bytes(SECRET_BYTES, "big")


@functools.lru_cache(maxsize=4096)
def lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    """The Lagrange coefficients l_i = prod_{j != i} x_j / (x_j - x_i) mod p that give a
    polynomial's value at 0 from its values at `xs` (distinct, checked by the caller).

    The server recovers many secrets from the same share holders (every survivor's neighbours on
    the complete graph), so the coefficients are cached per point set. The numerators and
    denominators are products of small integers, computed exactly and reduced once; the
    denominators are inverted together with one modular inversion (Montgomery's trick).
    """
    top = math.prod(xs) % PRIME
    dens = [d % PRIME for d in _denominators(xs)]
    prefix = [1]
    for d in dens:
        prefix.append(prefix[-1] * d % PRIME)
    inv = pow(prefix[-1], -1, PRIME)
    out = [0] * len(xs)
    for i in range(len(xs) - 1, -1, -1):
        out[i] = inv * prefix[i] % PRIME  # 1 / dens[i]
        inv = inv * dens[i] % PRIME
    return tuple(top * c % PRIME for c in out)


def _denominators(xs: tuple[int, ...]) -> list[int]:
    """x_i * prod_{j != i} (x_j - x_i) for each i, exactly (l_i = prod_j x_j / this).

    With t points this is t^2 small products, the bulk of recovering one secret. For share
    points below 2^20 (neighbour indices) numpy multiplies each row's differences in runs short
    enough that a run's product stays exact in int64, and Python multiplies the runs.
    """
    t = len(xs)
    width = max(xs).bit_length() if xs else 0
    if t < 8 or width > 20:
        out = []
        for i, xi in enumerate(xs):
            d = xi
            for j, xj in enumerate(xs):
                if j != i:
                    d *= xj - xi
            out.append(d)
        return out
    run = 62 // width  # |x_j - x_i| < 2^width: a run of this many differences fits in int64
    x = np.asarray(xs, dtype=np.int64)
    diff = x[None, :] - x[:, None]
    np.fill_diagonal(diff, 1)
    cols = -(-(t + 1) // run) * run  # x_i itself joins its row; pad with ones to whole runs
    rows = np.ones((t, cols), np.int64)
    rows[:, :t] = diff
    rows[:, t] = x
    runs = np.prod(rows.reshape(t, cols // run, run), axis=2)
    return [math.prod(r) for r in runs.tolist()]


def _check_points(xs: list[int]) -> None:
    if len(set(xs)) != len(xs):
        raise ShamirError("share points must be distinct")
    if any(not isinstance(x, int) or not 1 <= x < PRIME for x in xs):
        raise ShamirError("share points must be integers in 1..p-1")
