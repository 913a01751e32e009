"""Error feedback for lossy update encodings (Seide et al. 2014, "1-bit SGD"; Lin et al. 2018,
"Deep Gradient Compression", Section 3; Karimireddy et al. 2019, "Error Feedback Fixes SignSGD").

A device that sends only part of its update (top-k) keeps what it did not send and adds it to
its next update, so no coordinate is dropped for good, only delayed:

    corrected_r = delta_r + residual_{r-1}
    payload_r   = encode(corrected_r)
    residual_r  = corrected_r - decode(payload_r)

The residual lives on the device across rounds and never leaves it. Pure numpy, so the phone
simulator and any simulation-side model of compression share one implementation.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fedmath.types import Shapes, Weights


class ErrorFeedback:
    """A device's residual of what its lossy encodings have not yet delivered.

    Args:
        shapes: the model's tensor shapes (manifest order); the residual starts at zero.
    """

    def __init__(self, shapes: Shapes) -> None:
        self.shapes = [tuple(int(d) for d in s) for s in shapes]
        self.residual: Weights = [np.zeros(s, dtype=np.float32) for s in self.shapes]

    def correct(self, delta: Weights) -> Weights:
        """delta + residual (float32); raises ValueError on a shape mismatch."""
        if len(delta) != len(self.residual):
            raise ValueError(f"delta has {len(delta)} tensors, the residual {len(self.residual)}")
        for i, (d, s) in enumerate(zip(delta, self.shapes)):
            if tuple(np.shape(d)) != s:
                raise ValueError(f"tensor {i}: expected shape {s}, got {tuple(np.shape(d))}")
        return [(np.asarray(d, np.float32) + r).astype(np.float32) for d, r in zip(delta, self.residual)]

    def update(self, corrected: Weights, sent: Weights) -> None:
        """Keep corrected - sent, where `sent` is what the server will decode."""
        self.residual = [(np.asarray(c, np.float32) - np.asarray(s, np.float32)).astype(np.float32)
                         for c, s in zip(corrected, sent)]

    def step(self, delta: Weights, encode: Callable[[Weights], bytes],
             decode: Callable[[bytes], Weights]) -> bytes:
        """One round: correct, encode, keep the new residual; returns the payload."""
        corrected = self.correct(delta)
        payload = encode(corrected)
        self.update(corrected, decode(payload))
        return payload

    def norm(self) -> float:
        return float(np.sqrt(sum(float(np.sum(np.square(r, dtype=np.float64))) for r in self.residual)))
