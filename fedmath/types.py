"""Named aliases for the values the kernels pass around."""

from __future__ import annotations

from typing import Sequence

import numpy as np

Tensor = np.ndarray  # one weight tensor (float32)
Weights = list[np.ndarray]  # a model's trainable weights, in the manifest's order
Shapes = Sequence[tuple[int, ...]]  # the shapes of Weights, in the same order
