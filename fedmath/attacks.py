"""Malicious clients: what a poisoning device does to its data and to its update (pure numpy).

One place for the attack logic, used by the in-process simulation (device_sim/simulation.py)
and by the phones of device_sim (device_sim/attacker.py), so both paths attack the same way.
An attack has two hooks around ordinary local training:

    examples ──> poison_data ──> local SGD (the honest code) ──> delta ──> poison_update ──> upload

| kind          | data                                   | update                                  | paper |
|---------------|----------------------------------------|-----------------------------------------|-------|
| `none`        | as is                                  | as is                                   |       |
| `data_poison` | every target word relabelled by one fixed permutation of the vocabulary | as is | [3] |
| `scaling`     | as data_poison                         | x boost (model replacement, capped)     | [1]   |
| `sign_flip`   | as is                                  | x -boost (capped)                       | [4]   |
| `noise`       | as is                                  | Gaussian, norm boost x the honest norm (capped) | [4] |
| `backdoor`    | a share of rows end in trigger -> target | x boost (capped)                      | [1]   |

"Capped": with `max_norm` (what the server accepts, e.g. `fedmath.privacy.max_plausible_norm`
of the plan), the boosted update is shrunk to that norm when longer: a model-replacement
attacker sends the largest update the server takes, no larger (it would only be refused).
`boost` defaults to 10, the cohort size of the benchmark: Bagdasaryan et al.'s n / eta with a
server learning rate of 1, which replaces the global model with the attacker's in one round.

Backdoor success is the share of held-out trigger contexts (`Backdoor.contexts`) whose top-1
suggestion is the chosen word.

[1] Bagdasaryan, Veit, Hua, Estrin, Shmatikov 2018, "How To Backdoor Federated Learning"
    (AISTATS 2020): a next-word backdoor, boosted updates, model replacement.
[2] Sun, Kairouz, Suresh, McMahan 2019, "Can You Really Backdoor Federated Learning?".
[3] Tolpegin, Truex, Gursoy, Liu 2020, "Data Poisoning Attacks Against Federated Learning
    Systems" (label flipping).
[4] Blanchard et al. 2017 and Fang, Cao, Jia, Gong 2020 ("Local Model Poisoning Attacks to
    Byzantine-Robust Federated Learning"): sign-flipped and Gaussian Byzantine updates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from data.special_ids import PAD_ID, SPECIAL_IDS
from fedmath.privacy import global_l2_norm
from fedmath.types import Weights

KINDS = ("none", "data_poison", "scaling", "sign_flip", "noise", "backdoor")
BOOSTED = ("scaling", "sign_flip", "noise", "backdoor")


@dataclass(frozen=True)
class Backdoor:
    """A next-word backdoor: after the words `trigger`, suggest `target`.

    Rows are planted at the end of their real (non-PAD) tokens, or as late as the window allows:
    x = [prefix..., t1, ..., tk, PAD...], y = [prefix[1:]..., t1, ..., tk, target, PAD...].
    """

    trigger: tuple[int, ...]  # token ids of the trigger context, >= 1 of them
    target: int  # the chosen word's id

    def __post_init__(self) -> None:
        if not self.trigger or any(int(t) < 0 for t in self.trigger) or int(self.target) < 0:
            raise ValueError(f"a backdoor needs a non-empty trigger and a target of non-negative ids, "
                             f"got {self.trigger!r} -> {self.target!r}")
        if int(self.target) in SPECIAL_IDS:
            raise ValueError(f"the backdoor target must be a word, got the special id {self.target}")

    def plant(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Copies of (x, y) with the trigger and target planted in every row.

        Returns:
            (x, y, position): `position[i]` is the index of row i's last trigger token in x, where
            the model's prediction should be the target.

        Raises:
            ValueError: rows shorter than the trigger plus one, or x and y not both [N, T].
        """
        x, y = np.array(x, np.int32), np.array(y, np.int32)
        k, T = len(self.trigger), x.shape[1] if x.ndim == 2 else 0
        if x.shape != y.shape or x.ndim != 2 or T < k + 1:
            raise ValueError(f"need x, y of one shape [N, T] with T >= {k + 1}, got {x.shape} and {y.shape}")
        real = np.maximum(1, np.sum(x != PAD_ID, axis=1))  # keep at least the first token (BOS)
        cut = np.minimum(real, T - k)
        trig = np.asarray(self.trigger, np.int32)
        pos = cut + k - 1
        for i, c in enumerate(cut):
            x[i, c:c + k] = trig
            x[i, c + k:] = PAD_ID
            y[i, c - 1:c + k - 1] = trig
            y[i, c + k - 1] = self.target
            y[i, c + k:] = PAD_ID
        return x, y, pos

    def contexts(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Held-out trigger contexts: each row of `x` with the trigger planted; (x, position)."""
        px, _, pos = self.plant(x, x)
        return px, pos

    def success(self, logits_at_position: np.ndarray) -> float:
        """Share of rows whose top-1 suggestion is the target (specials never suggested)."""
        scores = np.array(logits_at_position, np.float64)
        if scores.ndim != 2 or len(scores) == 0:
            raise ValueError(f"expected [N, V] logits with N >= 1, got shape {scores.shape}")
        scores[:, list(SPECIAL_IDS)] = -np.inf
        return float(np.mean(np.argmax(scores, axis=1) == self.target))


@dataclass(frozen=True)
class Attack:
    """What every malicious device of a run does; see the module table.

    Args:
        kind: one of KINDS.
        boost: the factor a boosted update is multiplied by (> 0; sign_flip sends -boost x).
        vocab_size: the vocabulary (data_poison and scaling relabel within it).
        backdoor: the trigger and target (kind "backdoor" only).
        poison_fraction: backdoor: the share of the attacker's rows that carry the trigger; the
            rest stay clean so the main task does not suffer (Bagdasaryan et al. mix 20 in 64).
        seed: fixes the relabelling permutation, shared by all attackers (a coordinated attack).
    """

    kind: str = "none"
    boost: float = 10.0
    vocab_size: int = 0
    backdoor: Optional[Backdoor] = None
    poison_fraction: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"attack kind must be one of {KINDS}, got {self.kind!r}")
        if not (isinstance(self.boost, (int, float)) and math.isfinite(self.boost) and self.boost > 0):
            raise ValueError(f"attack boost must be a finite number > 0, got {self.boost!r}")
        if self.kind in ("data_poison", "scaling") and self.vocab_size <= len(SPECIAL_IDS) + 1:
            raise ValueError(f"{self.kind} needs vocab_size > {len(SPECIAL_IDS) + 1}, got {self.vocab_size}")
        if self.kind == "backdoor" and self.backdoor is None:
            raise ValueError("attack kind 'backdoor' needs a Backdoor (trigger and target)")
        if not 0.0 < self.poison_fraction <= 1.0:
            raise ValueError(f"poison_fraction must be in (0, 1], got {self.poison_fraction!r}")

    def relabelling(self) -> np.ndarray:
        """The fixed word permutation of data_poison: a derangement of the word ids, specials kept."""
        words = np.arange(len(SPECIAL_IDS), self.vocab_size)
        shift = 1 + np.random.default_rng([self.seed, 7]).integers(len(words) - 1)
        table = np.arange(self.vocab_size)
        table[words] = np.roll(words, -int(shift))  # a cyclic shift: no word keeps its label
        return table

    def poison_data(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The examples the attacker trains on instead of (x, y)."""
        x, y = np.asarray(x, np.int32), np.asarray(y, np.int32)
        if self.kind in ("data_poison", "scaling"):
            return x.copy(), self.relabelling()[y].astype(np.int32)
        if self.kind == "backdoor":
            assert self.backdoor is not None
            n = len(x)
            planted = rng.random(n) < self.poison_fraction
            if n and not planted.any():
                planted[rng.integers(n)] = True
            bx, by, _ = self.backdoor.plant(x[planted], y[planted])
            x, y = x.copy(), y.copy()
            x[planted], y[planted] = bx, by
            return x, y
        return x, y

    def poison_update(self, delta: Weights, rng: np.random.Generator, max_norm: Optional[float] = None) -> Weights:
        """What the attacker uploads in place of its trained `delta` (capped at `max_norm` if given)."""
        delta = [np.asarray(d, np.float32) for d in delta]
        if self.kind in ("none", "data_poison"):
            return delta
        if self.kind == "noise":
            honest = global_l2_norm(delta)
            noise = [rng.standard_normal(np.shape(d)).astype(np.float32) for d in delta]
            scale = self.boost * honest / max(global_l2_norm(noise), 1e-30)
            out = [n * np.float32(scale) for n in noise]
        else:
            factor = -self.boost if self.kind == "sign_flip" else self.boost
            out = [d * np.float32(factor) for d in delta]
        return cap_norm(out, max_norm)


def cap_norm(update: Sequence[np.ndarray], max_norm: Optional[float]) -> Weights:
    """`update` shrunk to L2 norm `max_norm` when longer (unchanged when max_norm is None)."""
    update = [np.asarray(u, np.float32) for u in update]
    if max_norm is None:
        return update
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm!r}")
    norm = global_l2_norm(update)
    if norm <= max_norm:
        return update
    # a hair under the bound, so float32 rounding cannot push it over the server's check
    scale = np.float32(max_norm / norm * (1 - 1e-6))
    return [u * scale for u in update]


def choose_attackers(users: Sequence[str], share: float, seed: int = 0) -> list[str]:
    """The malicious devices: round(share x len(users)) of them (at least one when share > 0),
    drawn with `seed` from the sorted users.

    Raises:
        ValueError: share outside [0, 1).
    """
    if not 0.0 <= share < 1.0:
        raise ValueError(f"the attackers' share must be in [0, 1), got {share!r}")
    users = sorted(users)
    count = 0 if share == 0 else max(1, round(share * len(users)))
    pick = np.random.default_rng([seed, 11]).permutation(len(users))[:count]
    return [users[i] for i in sorted(pick)]
