"""Server optimizers on the round's mean delta, with TFF's exact maths, in numpy.

The server treats the negated mean client delta as a gradient, as TFF's finalizer does
(`tff.learning` clients report `initial - trained`; fedkeys' phones report `trained - initial`,
so `g = -mean_delta`), and takes one optimizer step per published model version:

| name     | update (per tensor, float32 like TFF)                                  | TFF builder / paper |
|----------|------------------------------------------------------------------------|---------------------|
| sgd      | w -= lr * g                                                            | build_sgdm(lr); McMahan et al. 2017 |
| momentum | a = m*a + g;  w -= lr * a                                              | build_sgdm(lr, m) (heavy ball) |
| nesterov | a = m*a + g;  w -= lr * (g + m*a)                                      | federated/optimizers.py; Hard et al. 2018, Hsu et al. 2019 |
| adam     | a += (g-a)(1-b1);  p += (g^2-p)(1-b2);  w -= lr_t * a / (sqrt(p) + eps) | build_adam; Reddi et al. 2021 |
| yogi     | a += (g-a)(1-b1);  p += (1-b2) sign(g^2-p) g^2;  w -= lr_t * a / (sqrt(p) + eps), p0 = 1e-6 | build_yogi; Reddi et al. 2021 |

with `lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t)` at step t = 1, 2, ... An optimizer's state is a
flat `dict[str, np.ndarray]` (`step` and one array per tensor and slot), so the collector writes
it to `.npz` beside each model version without knowing what it holds.
"""

from __future__ import annotations

import abc
from typing import Callable

import numpy as np

from fedmath.types import Weights

State = dict[str, np.ndarray]  # "step" plus "<slot>/<tensor index>" arrays

INITIAL_PRECONDITIONER = 1e-6  # TFF's build_yogi default


class ServerOptimizer(abc.ABC):
    """One step per published model version: `(state, weights, mean_delta, lr) -> (state, weights)`."""

    name: str = ""
    slots: tuple[str, ...] = ()  # per-tensor state arrays, each shaped like its tensor

    def init(self, template: Weights) -> State:
        """The state before the first step: zeros in every slot, step 0."""
        state: State = {"step": np.zeros((), np.int64)}
        for slot in self.slots:
            fill = INITIAL_PRECONDITIONER if slot == "preconditioner" and self.name == "yogi" else 0.0
            for i, t in enumerate(template):
                state[f"{slot}/{i}"] = np.full(np.shape(t), fill, np.float32)
        return state

    def fits(self, state: State, template: Weights) -> bool:
        """Whether `state` is this optimizer's for a model shaped like `template`."""
        want = {"step"} | {f"{slot}/{i}" for slot in self.slots for i in range(len(template))}
        return set(state) == want and all(
            np.shape(state[f"{slot}/{i}"]) == np.shape(t) for slot in self.slots for i, t in enumerate(template))

    def step(self, state: State, weights: Weights, mean_delta: Weights, lr: float) -> tuple[State, Weights]:
        """Apply one server step at learning rate `lr`; returns new state and weights (float32).

        Raises:
            ValueError: the state does not fit the weights (another model or optimizer).
        """
        if len(weights) != len(mean_delta):
            raise ValueError(f"weights have {len(weights)} tensors, the mean delta {len(mean_delta)}")
        for slot in self.slots:
            for i, w in enumerate(weights):
                s = state.get(f"{slot}/{i}")
                if s is None or s.shape != np.shape(w):
                    raise ValueError(f"{self.name} state slot {slot}/{i}: expected shape {np.shape(w)}, "
                                     f"got {None if s is None else s.shape}")
        t = int(state.get("step", 0)) + 1
        new: State = {"step": np.asarray(t, np.int64)}
        out: Weights = []
        f32 = np.float32
        for i, (w, d) in enumerate(zip(weights, mean_delta)):
            g = -np.asarray(d, f32)
            slots = {slot: state[f"{slot}/{i}"] for slot in self.slots}
            w2, slots2 = self._update(np.asarray(w, f32), g, slots, f32(lr), t)
            out.append(w2.astype(f32, copy=False))
            for slot, v in slots2.items():
                new[f"{slot}/{i}"] = v.astype(f32, copy=False)
        return new, out

    @abc.abstractmethod
    def _update(self, w: np.ndarray, g: np.ndarray, slots: dict[str, np.ndarray], lr: np.float32,
                t: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """One tensor's step: new weights and slots."""

    def describe(self) -> dict:
        """What ran, for summaries and model metadata."""
        return {"name": self.name}


class SGD(ServerOptimizer):
    name = "sgd"

    def _update(self, w, g, slots, lr, t):
        return w - lr * g, {}


class Momentum(ServerOptimizer):
    """SGD with heavy-ball or (nesterov=True) Nesterov momentum."""

    slots = ("accumulator",)

    def __init__(self, momentum: float, nesterov: bool) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"server momentum must be in [0, 1), got {momentum!r}")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.name = "nesterov" if nesterov else "momentum"

    def _update(self, w, g, slots, lr, t):
        m = np.float32(self.momentum)
        a = m * slots["accumulator"] + g
        step = g + m * a if self.nesterov else a
        return w - lr * step, {"accumulator": a}

    def describe(self) -> dict:
        return {"name": self.name, "momentum": self.momentum, "nesterov": self.nesterov}


class _Adaptive(ServerOptimizer):
    slots = ("accumulator", "preconditioner")

    def __init__(self, beta_1: float, beta_2: float, epsilon: float) -> None:
        for what, v in (("beta_1", beta_1), ("beta_2", beta_2)):
            if not 0.0 <= v < 1.0:
                raise ValueError(f"{self.name} {what} must be in [0, 1), got {v!r}")
        if not epsilon >= 0:
            raise ValueError(f"{self.name} epsilon must be >= 0, got {epsilon!r}")
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)

    def _update(self, w, g, slots, lr, t):
        f32 = np.float32
        b1, b2 = f32(self.beta_1), f32(self.beta_2)
        lr_t = lr * np.sqrt(f32(1.0) - b2 ** f32(t)) / (f32(1.0) - b1 ** f32(t))
        a = slots["accumulator"] + (g - slots["accumulator"]) * (f32(1.0) - b1)
        p = self._precondition(slots["preconditioner"], g, b2)
        return w - f32(lr_t) * a / (np.sqrt(p) + f32(self.epsilon)), {"accumulator": a, "preconditioner": p}

    @abc.abstractmethod
    def _precondition(self, p: np.ndarray, g: np.ndarray, b2: np.float32) -> np.ndarray:
        """The second-moment estimate after this gradient."""

    def describe(self) -> dict:
        return {"name": self.name, "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}


class Adam(_Adaptive):
    name = "adam"

    def _precondition(self, p, g, b2):
        return p + (np.square(g) - p) * (np.float32(1.0) - b2)


class Yogi(_Adaptive):
    name = "yogi"

    def _precondition(self, p, g, b2):
        g2 = np.square(g)
        return p + (np.float32(1.0) - b2) * np.sign(g2 - p) * g2


FACTORIES: dict[str, Callable[..., ServerOptimizer]] = {
    "sgd": lambda **_: SGD(),
    "momentum": lambda momentum, **_: Momentum(momentum, nesterov=False),
    "nesterov": lambda momentum, **_: Momentum(momentum, nesterov=True),
    "adam": lambda beta_1, beta_2, epsilon, **_: Adam(beta_1, beta_2, epsilon),
    "yogi": lambda beta_1, beta_2, epsilon, **_: Yogi(beta_1, beta_2, epsilon),
}


def build(name: str, *, momentum: float = 0.0, beta_1: float = 0.9, beta_2: float = 0.99,
          epsilon: float = 1e-3) -> ServerOptimizer:
    """The server optimizer called `name` (one of FACTORIES)."""
    if name not in FACTORIES:
        raise ValueError(f"server optimizer must be one of {sorted(FACTORIES)}, got {name!r}")
    return FACTORIES[name](momentum=momentum, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon)
