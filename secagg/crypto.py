"""The protocol's primitives, all from `cryptography`:

- X25519 key agreement (RFC 7748) for two keys per device and round: the cipher key c, whose
  agreements encrypt shares between neighbours, and the mask key s, whose agreements seed the
  pairwise masks. (federated-compute uses P-256 ECDH; X25519 is the same construction on
  Curve25519 with 32-byte keys.)
- HKDF-SHA256 (RFC 5869) turns an agreement into a 32-byte key bound to the round's session id,
  the two devices' indices and the purpose, so no key serves two purposes or two rounds.
- AES-256-GCM encrypts and authenticates each share message to one neighbour; the associated
  data names sender, receiver and session, so a share moved to another pair or round fails.
- AES-256-CTR expands a 32-byte seed into a mask of m values in Z_(2^b) (a cryptographic stream
  cipher, as federated-compute's AES-CTR PRNG; not a Mersenne Twister).
- Ed25519 (the device identity key of fedmath/attestation.py) signs the advertised keys.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32
BIG_ENDIAN = sys.byteorder == "big"  # a native uint32 view reads keystream bytes the other way round
NONCE_BYTES = 12
TAG_BYTES = 16
ADVERTISE_PURPOSE = b"fedkeys-secagg-keys-v1\x00"


class ShareDecryptError(ValueError):
    """A share message that does not decrypt under the pair's key (tampered, misrouted, replayed
    from another round)."""


def new_key() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


def public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def secret_bytes(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())


def key_from_secret(raw: bytes) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(raw)


def agree(secret: X25519PrivateKey | bytes, peer_public: bytes, session: bytes, purpose: bytes,
          a: int, b: int) -> bytes:
    """A 32-byte key both ends of the pair (a, b) derive alike (the pair is ordered first)."""
    if isinstance(secret, bytes):
        secret = key_from_secret(secret)
    shared = secret.exchange(X25519PublicKey.from_public_bytes(peer_public))
    lo, hi = min(a, b), max(a, b)
    info = b"fedkeys-secagg-v1\x00" + purpose + b"\x00" + session + lo.to_bytes(4, "big") + hi.to_bytes(4, "big")
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(shared)


def share_aad(session: bytes, sender: int, receiver: int) -> bytes:
    return b"fedkeys-secagg-share-v1\x00" + session + sender.to_bytes(4, "big") + receiver.to_bytes(4, "big")


def encrypt(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """nonce | AES-GCM ciphertext and tag (each key encrypts one message; the nonce is random anyway)."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def decrypt(key: bytes, message: bytes, aad: bytes) -> bytes:
    if len(message) < NONCE_BYTES + TAG_BYTES:
        raise ShareDecryptError("a share message is shorter than its nonce and tag")
    try:
        return AESGCM(key).decrypt(message[:NONCE_BYTES], message[NONCE_BYTES:], aad)
    except InvalidTag:
        raise ShareDecryptError("a share message does not authenticate (tampered, or not for this pair "
                                "and round)") from None


def expand(seed: bytes, size: int, bits: int) -> np.ndarray:
    """`size` values uniform in Z_(2^bits) (uint32) from a 32-byte seed: AES-256-CTR keystream
    (zero nonce: every seed is a fresh HKDF output or a fresh random seed, used once per round)."""
    if len(seed) != KEY_BYTES or not 1 <= bits <= 32:
        raise ValueError(f"expand needs a {KEY_BYTES}-byte seed and 1..32 bits, got {len(seed)} bytes, {bits}")
    enc = Cipher(algorithms.AES(seed), modes.CTR(b"\x00" * 16)).encryptor()
    stream = np.frombuffer(enc.update(bytes(4 * size)) + enc.finalize(), dtype="<u4").copy()
    if bits < 32:
        stream &= np.uint32((1 << bits) - 1)
    return stream


def apply_masks(total: np.ndarray, masks: list[tuple[bytes, int]], bits: int, chunk: int = 1 << 15) -> None:
    """total <- total + sum of sign * expand(seed) mod 2^bits over `masks` ((seed, sign) pairs,
    sign +1 or -1), in place: the same result as adding (or subtracting) each `expand(seed)` in turn.

    The work runs chunk by chunk of `total`, each chunk taking every mask's next keystream
    block while it sits in cache (one AES-CTR stream per seed, advanced block by block), so the
    vector is read and written once per chunk instead of once per mask.
    """
    if total.dtype != np.uint32 or not total.flags.c_contiguous or not 1 <= bits <= 32:
        raise ValueError("apply_masks needs a contiguous uint32 total and 1..32 bits")
    if any(len(seed) != KEY_BYTES or sign not in (1, -1) for seed, sign in masks):
        raise ValueError(f"apply_masks needs {KEY_BYTES}-byte seeds and signs +1 or -1")
    streams = [(Cipher(algorithms.AES(seed), modes.CTR(b"\x00" * 16)).encryptor(), sign) for seed, sign in masks]
    block = np.empty(min(chunk, total.size), np.uint32)
    zeros = np.zeros(4 * block.size, np.uint8)
    for start in range(0, total.size, block.size):
        part = total[start:start + block.size]
        buf = block[:part.size]
        raw, src = buf.view(np.uint8), zeros[:4 * part.size]
        for enc, sign in streams:
            enc.update_into(src, raw)  # this seed's next keystream bytes (XOR zeros), as `expand` reads them
            if BIG_ENDIAN:  # expand's words are little-endian
                buf.byteswap(inplace=True)
            (np.add if sign > 0 else np.subtract)(part, buf, out=part)
    if bits < 32:
        np.bitwise_and(total, np.uint32((1 << bits) - 1), out=total)


def advertise_message(session: bytes, device_id: str, cipher_public: bytes, mask_public: bytes) -> bytes:
    """What a device signs with its identity key: purpose, session, its id, its two keys."""
    return ADVERTISE_PURPOSE + session + device_id.encode() + b"\x00" + cipher_public + mask_public
