"""Content hashes of bundle files: the phone bundle's manifest lists them, the server checks them."""

from __future__ import annotations

import hashlib


def sha256_file(path: str, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks so a large model file never sits in memory twice."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_bytes), b""):
            h.update(chunk)
    return h.hexdigest()
