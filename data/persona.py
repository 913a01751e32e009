"""Who a simulated keyboard user is: the persona drawn once per user (data/simulator.py types).

User `i` of a population with seed `s` is drawn from `np.random.default_rng([s, i])` alone, so users
can be produced in any order and a population of 100,000 never sits in memory. The first draw is
the user's volume, so `num_messages` can count a user's messages without drawing the rest.

- **volume**: messages ~ lognormal (median `VOLUME_MEDIAN`, sigma `VOLUME_SIGMA`), capped: most users
  type a little, a few type a lot (heavy-tailed, as in LEAF, Caldas et al. 2018, arXiv:1812.01097);
- **topic mix**: Dirichlet(`TOPIC_ALPHA`) over the twelve topics of data/lexicon.py: small alpha makes
  users specialised and so the population non-IID (Hsu et al. 2019, arXiv:1909.06335);
- **people and phrases**: contacts, favourite reactions, personal pseudo-words (pet, street);
- **habits**: sentences per message, quick replies, greetings, closers, connectors, fillers, slang,
  capitalisation, punctuation, emoticons, a typo and an autocorrect rate, session length, hour.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data.lexicon import NAMES, REACTIONS, TOPICS

VOLUME_MEDIAN = 8.0  # messages of the median user
VOLUME_SIGMA = 1.9  # lognormal sigma of messages per user: p99/p50 = exp(2.33 sigma)
VOLUME_CAP = 5000  # no user types more than this
HORIZON_DAYS = 60  # timestamps fall in [0, HORIZON_DAYS days)
TOPIC_ALPHA = 0.05  # Dirichlet concentration of a user's topic mix (small = specialised)
SENTENCES_MEDIAN = 1.6  # median over users of the mean extra sentences per message
ZIPF_S = 1.3  # Zipf exponent of word choice inside a slot

_SYLLABLES = ("ka ri to mo na le vi sa do ru be lo mi ta zen kor bri sh ul an el ov ix "
              "ra ny pe qui dal fen gor hal jin").split()


def rare_word(index: int) -> str:
    """The `index`-th pseudo-word of the long tail (pet, street, shop and team names)."""
    n = len(_SYLLABLES)
    parts = [_SYLLABLES[index % n], _SYLLABLES[(index // n) % n]]
    if index >= n * n:
        parts.append(_SYLLABLES[(index // (n * n)) % n])
    return "".join(parts)


def zipf_weights(rng: np.random.Generator, size: int, sigma: float) -> list[float]:
    """Cumulative weights of a Zipf law over `size` items, jittered by the user's taste."""
    base = 1.0 / np.arange(1, size + 1) ** ZIPF_S
    jitter = rng.lognormal(0.0, sigma, size) if sigma > 0 else np.ones(size)
    return np.cumsum(base * jitter).tolist()


@dataclass
class Persona:
    """One user's habits; everything the message generator needs (see module docstring)."""

    user_id: str
    num_messages: int
    topic_cum: list[float]
    contacts: tuple[str, ...]
    contact_cum: list[float]
    own_words: tuple[str, ...]
    reactions: tuple[str, ...]
    sentences_mean: float
    short_rate: float
    greeting_rate: float
    reaction_rate: float
    closer_rate: float
    filler_rate: float
    connector_rate: float
    own_word_rate: float
    slang_rate: float
    capitalise: float
    end_punct: float
    emoticon_rate: float
    typo_rate: float
    autocorrect: float
    per_session: float
    hour: float
    seed: int


def user_id(index: int) -> str:
    """The id of the index-th simulated user (sorts in index order up to 10^6 users)."""
    return f"u{index:06d}"


def num_messages(seed: int, index: int, cap: int = 0) -> int:
    """How many messages user `index` types (cheap: the persona's first draw)."""
    rng = np.random.default_rng([seed, index])
    n = _volume(rng)
    return min(n, cap) if cap else n


def _volume(rng: np.random.Generator) -> int:
    return int(min(VOLUME_CAP, max(1, round(rng.lognormal(np.log(VOLUME_MEDIAN), VOLUME_SIGMA)))))


def persona(seed: int, index: int) -> Persona:
    """Draw user `index`'s persona from `default_rng([seed, index])`.

    Raises:
        ValueError: if index is negative.
    """
    if index < 0:
        raise ValueError(f"user index must be >= 0, got {index}")
    rng = np.random.default_rng([seed, index])
    n = _volume(rng)  # first draw, so num_messages() agrees
    topics = rng.dirichlet(np.full(len(TOPICS), TOPIC_ALPHA))
    k = int(rng.integers(3, 9))
    contacts = tuple(NAMES[i] for i in rng.choice(len(NAMES), size=k, replace=False))
    own = tuple(rare_word(int(i)) for i in rng.zipf(1.3, size=8) % 20000 + rng.integers(0, 40, size=8))
    contacts = tuple(rare_word(int(rng.integers(0, 20000))) if rng.random() < 0.3 else c for c in contacts)
    reactions = tuple(REACTIONS[i] for i in rng.choice(len(REACTIONS), size=4, replace=False))
    return Persona(
        user_id=user_id(index),
        num_messages=n,
        topic_cum=np.cumsum(topics).tolist(),
        contacts=contacts,
        contact_cum=zipf_weights(rng, k, 0.5),
        own_words=own,
        reactions=reactions,
        sentences_mean=float(rng.lognormal(np.log(SENTENCES_MEDIAN), 0.6)),
        short_rate=float(rng.beta(0.6, 3.0)),
        greeting_rate=float(rng.beta(1.0, 3.0)),
        reaction_rate=float(rng.beta(1.5, 4.0)),
        closer_rate=float(rng.beta(1.0, 3.0)),
        filler_rate=float(rng.beta(2.0, 4.0)),
        connector_rate=float(rng.beta(2.0, 3.0)),
        own_word_rate=float(rng.beta(1.5, 6.0)),
        slang_rate=float(rng.beta(0.4, 2.0)),
        capitalise=float(rng.choice([0.0, 0.5, 0.95], p=[0.35, 0.25, 0.4])),
        end_punct=float(rng.beta(1.0, 1.5)),
        emoticon_rate=float(rng.beta(0.5, 6.0)),
        typo_rate=float(rng.lognormal(np.log(0.04), 0.6)),
        autocorrect=float(rng.uniform(0.5, 0.95)),
        per_session=float(rng.lognormal(np.log(2.5), 0.5)),
        hour=float(rng.uniform(7, 23)),
        seed=int(rng.integers(0, 2**63 - 1)),
    )
