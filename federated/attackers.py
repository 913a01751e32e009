"""Malicious clients in the TFF simulation: a share of the training users train on poisoned data.

`poisoned(cfg.attack, data)` wraps a `FederatedData` so that the chosen users' examples are
those `fedmath.attacks.Attack.poison_data` makes (the function the phones' attacker uses):
`data_poison` moves every label to another word (Tolpegin et al. 2020); `backdoor` plants the
trigger context followed by the target word in a share of their windows (Bagdasaryan et al.
2018, unboosted here: TFF's clients send what they trained). Who attacks is
`fedmath.attacks.choose_attackers` (seeded). Everything else (selection, aggregation, DP, the
robust rules of federated/robust.py) runs unchanged, so a defence is measured against them by
setting `train.aggregator` as usual; `backdoor_success` scores the backdoor on held-out windows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from configs.schema import AttackConfig
from fedmath.attacks import Attack, Backdoor, choose_attackers

DATA_KINDS = ("none", "data_poison", "backdoor")


def attack_for(cfg: AttackConfig, words: list[str]) -> Attack | None:
    """The `Attack` that `cfg` describes over vocabulary `words`; None when no one attacks.

    Raises:
        ValueError: an update-level or unknown kind, a share outside [0, 1), or trigger / target
            words the vocabulary lacks (named).
    """
    if cfg.kind not in DATA_KINDS:
        raise ValueError(f"attack.kind in the TFF simulation must be one of {DATA_KINDS}, got {cfg.kind!r} "
                         "(update-level attacks run on the phones' path: benchmarks/poisoning.py)")
    if not 0.0 <= cfg.share < 1.0:
        raise ValueError(f"attack.share must be in [0, 1), got {cfg.share}")
    if cfg.kind == "none" or cfg.share == 0.0:
        return None
    door = None
    if cfg.kind == "backdoor":
        missing = [w for w in [*cfg.trigger.split(), cfg.target] if w not in words]
        if missing or not cfg.trigger.split():
            raise ValueError(f"attack.trigger {cfg.trigger!r} and attack.target {cfg.target!r} must be words of "
                             f"the vocabulary; missing: {missing}")
        door = Backdoor(tuple(words.index(w) for w in cfg.trigger.split()), words.index(cfg.target))
    return Attack(kind=cfg.kind, vocab_size=len(words), backdoor=door, poison_fraction=cfg.poison_fraction,
                  seed=cfg.seed)


class PoisonedData:
    """`data` with the attackers' examples poisoned; every other method is `data`'s."""

    def __init__(self, data: Any, attack: Attack, attackers: list[str], seed: int = 0) -> None:
        self._data, self.attack, self.attackers, self._seed = data, attack, sorted(attackers), seed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._data, name)

    def client_examples(self, user_id: str, seq_len: int, max_examples: int = 0) -> tuple[np.ndarray, np.ndarray]:
        x, y = self._data.client_examples(user_id, seq_len, max_examples)
        if user_id not in self.attackers:
            return x, y
        rng = np.random.default_rng([self._seed, self.attackers.index(user_id), 11])
        return self.attack.poison_data(x, y, rng)


def poisoned(cfg: AttackConfig, data: Any) -> Any:
    """`data` itself when no one attacks, else a `PoisonedData` over the chosen training users."""
    attack = attack_for(cfg, list(data.tokenizer.words))
    if attack is None:
        return data
    return PoisonedData(data, attack, choose_attackers(sorted(data.users("train")), cfg.share, cfg.seed), cfg.seed)


def backdoor_success(model: Any, weights: list, data: Any, seq_len: int, max_examples: int = 400) -> float | None:
    """Share of held-out windows, trigger planted, whose top-1 is the target (None: no backdoor)."""
    if not isinstance(data, PoisonedData) or data.attack.backdoor is None:
        return None
    from model.evaluate import backdoor_success as success

    x, _ = data.pooled_examples("heldout", seq_len, max_examples)
    return success(model, weights, data.attack.backdoor, x)
