"""A population of up to millions of simulated phones that is never held in memory.

`LazyPopulation(size, seed)` is three numbers. User i's messages are `data.simulator`'s
`user_messages(seed, i, cap)` and its device profile is `fedmath.availability.device_profile`,
both pure functions of (seed, i), so a client's data is generated only when a round samples it,
and the same client gets the same data in every round, process and run. Nothing is kept per
user: the memory of preparing and sampling grows with the cohort, not with the population
(`benchmarks/scale.py` measures 10^4 to 10^6 users).

`select_from_population` is `federated.sampling.select_clients` (Bonawitz et al. 2019:
eligible by the availability model at the round's simulated time, over-selected, some dropping
out, the first `goal_count` finishers reporting) without a scan of the population: it draws
distinct user indices uniformly from the round's own random stream and keeps the eligible ones
until it has `ceil(goal_count * over_selection)`, which is a uniform sample of the eligible
users (rejection sampling) at a cost of about that many / the eligible share draws. A device's
data size for eligibility and finishing time is its number of messages (`num_messages`, the
persona's first draw, so no message is generated for a user that is not selected).

Phone-like data: a Gboard client holds a few days of typing (tens of messages) and trains on a
small capped number of examples per round; `messages_per_user` and the example cap passed to
`examples` say how much.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, Sequence

from data.persona import num_messages, user_id
from data.sequences import Batch, examples
from data.simulator import user_messages
from federated.sampling import _round_rng, round_time
from fedmath import availability as av

MAX_POPULATION = 10_000_000  # ids are "u%06d" (data.persona.user_id): beyond 10^6 they parse but sort out of index order


class TokenizerLike(Protocol):
    def encode(self, texts: Sequence[str]) -> list[list[int]]: ...


@dataclass(frozen=True, slots=True)  # slots: no room on an instance to cache anything per user
class LazyPopulation:
    """`size` simulated users whose data exists only when asked for (see module docstring)."""

    size: int
    seed: int = 0
    messages_per_user: int = 30  # messages a phone holds (the user's first ones; fewer if it typed fewer)

    def __post_init__(self) -> None:
        if not 1 <= self.size <= MAX_POPULATION:
            raise ValueError(f"population size must be in [1, {MAX_POPULATION}], got {self.size}")
        if self.messages_per_user < 1:
            raise ValueError(f"messages_per_user must be >= 1, got {self.messages_per_user}")

    def user_id(self, index: int) -> str:
        return user_id(self._checked(index))

    def index_of(self, uid: str) -> int:
        """The index of user id `uid` ("u000042" -> 42).

        Raises:
            ValueError: not an id of this population.
        """
        if not (uid.startswith("u") and uid[1:].isdigit()):
            raise ValueError(f"expected a user id like 'u000042', got {uid!r}")
        return self._checked(int(uid[1:]))

    def num_messages(self, index: int) -> int:
        """Messages on user `index`'s phone (cheap: no message is generated)."""
        return num_messages(self.seed, self._checked(index), self.messages_per_user)

    def messages(self, index: int) -> list[str]:
        """User `index`'s messages in time order, generated now."""
        return [text for _, text in user_messages(self.seed, self._checked(index), self.messages_per_user)]

    def examples(self, index: int, tokenizer: TokenizerLike, seq_len: int, max_examples: int) -> Batch:
        """User `index`'s first `max_examples` training windows `(x, y)` under `tokenizer`."""
        return examples(tokenizer.encode(self.messages(index)), seq_len, max_examples)

    def _checked(self, index: int) -> int:
        if not 0 <= index < self.size:
            raise ValueError(f"user index must be in [0, {self.size}), got {index}")
        return int(index)


@dataclass(frozen=True)
class CohortDraw:
    """One round's availability-based selection from a `LazyPopulation` (indices, not ids)."""

    round_num: int
    sim_time_s: float
    examined: int  # distinct users whose availability was checked
    eligible_seen: int  # how many of them were eligible
    selected: list[int]  # over-selected cohort, in check-in order
    dropped: list[int]
    reporting: list[int]  # the first goal_count survivors to finish, in finishing order
    late: list[int]


def select_from_population(pop: LazyPopulation, goal_count: int, round_num: int, *,
                           round_interval_s: float = 3600.0, start_time_s: float = 0.0,
                           over_selection: float = 1.3, dropout_rate: float | None = None,
                           min_messages: int = 1, model: av.AvailabilityModel = av.AvailabilityModel(),
                           max_examined: int = 0) -> CohortDraw:
    """Availability-based selection over `pop` without a per-user scan (see module docstring).

    Args:
        max_examined: stop after checking this many users (0 = the whole population if need be),
            so a quiet hour cannot make a round examine millions of phones.

    Raises:
        ValueError: goal_count < 1, over_selection < 1 or a negative max_examined.
    """
    if goal_count < 1:
        raise ValueError(f"goal_count must be >= 1, got {goal_count}")
    if over_selection < 1.0:
        raise ValueError(f"over_selection must be >= 1.0, got {over_selection}")
    if max_examined < 0:
        raise ValueError(f"max_examined must be >= 0, got {max_examined}")
    t = round_time(round_num, round_interval_s, start_time_s)
    want = math.ceil(goal_count * over_selection - 1e-9)
    limit = min(pop.size, max_examined or pop.size)
    rng = _round_rng(pop.seed, round_num, 3)
    seen: set[int] = set()
    selected: list[int] = []
    profiles: dict[int, av.DeviceProfile] = {}
    while len(selected) < want and len(seen) < limit:
        batch = rng.integers(0, pop.size, size=min(4 * want, 65536))
        for i in (int(x) for x in batch):
            if i in seen:
                continue
            seen.add(i)
            p = av.device_profile(user_id(i), pop.seed, model)
            if av.is_eligible(p, t, pop.num_messages(i), pop.seed, model, min_messages):
                selected.append(i)
                profiles[i] = p
                if len(selected) == want:
                    break
            if len(seen) >= limit:
                break
    dropped = [i for i in selected if av.drops_out(profiles[i], round_num, pop.seed, dropout_rate)]
    gone = set(dropped)
    survivors = [i for i in selected if i not in gone]
    survivors.sort(key=lambda i: pop.num_messages(i) / profiles[i].speed + profiles[i].latency_ms / 1000.0)
    return CohortDraw(round_num, t, len(seen), len(selected), selected, dropped,
                      survivors[:goal_count], survivors[goal_count:])


def cohort_examples(pop: LazyPopulation, indices: Sequence[int], tokenizer: TokenizerLike, seq_len: int,
                    max_examples: int) -> list[Batch]:
    """The `(x, y)` of each sampled client, generated now and not kept."""
    return [pop.examples(i, tokenizer, seq_len, max_examples) for i in indices]

