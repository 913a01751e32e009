"""A deterministic, lazily generated population of keyboard users and their messages.

Why a simulator: fedkeys must run Gboard-style training (Hard et al. 2018, arXiv:1811.03604)
without anyone's real keystrokes. Real per-user text is heavy-tailed in volume and non-IID
across users (Caldas et al. 2018, "LEAF", arXiv:1812.01097; Hsu et al. 2019,
arXiv:1909.06335), and a useful next-word benchmark needs structure an n-gram cannot see.
So each simulated user has a persona, drawn once from `np.random.default_rng([seed, i])`:

- **volume**: messages ~ lognormal (median `VOLUME_MEDIAN`, sigma `VOLUME_SIGMA`), capped:
  most users type a little, a few type a lot;
- **topic mix**: Dirichlet over the twelve topics of data/lexicon.py, plus the user's own
  word preferences inside each topic (lognormal jitter on Zipf weights);
- **people and phrases**: a handful of contacts, favourite reactions, a pet/street/place name
  of their own (pseudo-words from `rare_word`, the long tail a 2k vocabulary cannot hold);
- **style**: a personal ranking of frames, subjects, modals, determiners, time phrases,
  greetings and connectors (Zipf over a per-user permutation), so users differ in function
  words too; sentences per message, a quick-reply rate ("lol", "on my way"), slang (`u`,
  `tmrw`), capitalisation, end punctuation, emoticons, a typo and an autocorrect rate;
- **time**: sessions on days of a `HORIZON_DAYS` window around a preferred hour.

The constants below are tuned so that `benchmarks/data_realism.py` puts the default population
inside the range of two real per-user corpora on volume skew, words per message and user-vs-
population JS divergence, with a Kneser-Ney trigram top-1 between 8% and 35% (docs/data.md).

Long-range structure: each message picks a topic first (sticky within a session), and every
content slot of every sentence in the message is filled from that topic, so the words after
"the" in sentence two depend on words a trigram has long forgotten.

User `i` is generated from its own seed alone, so users can be produced in any order, one at
a time (`iter_users`), and a population of 100,000 never sits in memory.
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from data.corpus import Message
from data.lexicon import (CONNECTORS, DETERMINERS, GENERIC_VERBS, FILLERS, GENERIC_FRAMES, GREETINGS, INTENSIFIERS, MOOD_MODALS, MOOD_Q_MODALS,
                          NAMES, NUMBERS, PREPOSITIONS, Q_SUBJECTS, QWORDS, REACTIONS, SLANG, SUBJECTS,
                          MOOD_TIMES, TOPICS, ing, parse_frame, plural)

VOLUME_MEDIAN = 8.0  # messages of the median user
VOLUME_SIGMA = 1.9  # lognormal sigma of messages per user: p99/p50 = exp(2.33 sigma)
VOLUME_CAP = 5000  # no user types more than this
HORIZON_DAYS = 60  # timestamps fall in [0, HORIZON_DAYS days)
TOPIC_ALPHA = 0.05  # Dirichlet concentration of a user's topic mix (small = specialised)
ZIPF_S = 1.0  # Zipf exponent of word choice inside a slot
PREFERENCE_SIGMA = 1.2  # lognormal jitter of a user's word weights (their vocabulary habits)
HABIT_ZIPF_S = 1.8  # how strongly a user favours their own frames, subjects, modals, ...
TOPIC_STICKINESS = 0.6  # chance a message keeps the previous message's topic within a session
SENTENCES_MEDIAN = 1.6  # median over users of the mean extra sentences per message
TAIL_RATE = 0.08  # chance a noun or place slot holds a long-tail proper noun of the topic
TAIL_EXPONENT = 0.7  # Pareto exponent of tail-noun ranks (smaller = heavier tail)
TAIL_SIZE = 5000  # tail nouns per topic
MOOD_FIDELITY = 0.9  # chance a clause's modal comes from the message's mood
REUSE_RATE = {"n": 0.5, "p": 0.5, "name": 0.5, "subject": 0.7, "v": 0.15, "a": 0.15}  # a slot repeats a word of the message

_FRAMES = tuple(parse_frame(f) for f in GENERIC_FRAMES)
_TOPIC_FRAME_SHARE = 0.2  # sentences from the message topic's own frames
_OPENING_TOPIC_FRAME_SHARE = 0.5  # ... for a message's first sentence, which sets the scene
_GENERIC_VERB_SHARE = 0.4  # verb slots filled with an everyday verb that fits any topic
_GRAMMAR_SHARE = 0.45  # sentences from the phrase grammar; the rest from the shared frames
_MOOD_TIMES = tuple(tuple(parse_frame(t) for t in group) for group in MOOD_TIMES)
_SYLLABLES = ("ka ri to mo na le vi sa do ru be lo mi ta zen kor bri sh ul an el ov ix "
              "ra ny pe qui dal fen gor hal jin").split()
_KEYS = "qwertyuiop asdfghjkl zxcvbnm"
_NEIGHBOURS = {c: "".join(_KEYS[j] for j in (i - 1, i + 1) if 0 <= j < len(_KEYS) and _KEYS[j] != " ")
               for i, c in enumerate(_KEYS) if c != " "}
_EMOTICONS = (":)", ":(", ":D", "<3", ";)", ":P", "xD")


def _choice(rnd: random.Random, items: tuple):
    return items[int(rnd.random() * len(items))]


def _poisson(rnd: random.Random, lam: float) -> int:
    """A Poisson draw by multiplying uniforms (Knuth; fine for the small means used here)."""
    limit, k, prod = math.exp(-lam), 0, rnd.random()
    while prod > limit:
        k += 1
        prod *= rnd.random()
    return k


def tail_word(topic: int, u: float) -> str:
    """A topic's long-tail proper noun (a band, a dish, an app) for the uniform draw `u`.

    Ranks follow a Pareto law (P(rank > r) ~ r^-TAIL_EXPONENT), so a few tail names are common
    enough to enter a vocabulary and most are not: the out-of-vocabulary words of a keyboard.
    """
    rank = min(int((1.0 - u) ** (-1.0 / TAIL_EXPONENT)), TAIL_SIZE) - 1
    return rare_word(1000 + topic * TAIL_SIZE + rank).capitalize()


def rare_word(index: int) -> str:
    """The `index`-th pseudo-word of the long tail (pet, street, shop and team names)."""
    n = len(_SYLLABLES)
    parts = [_SYLLABLES[index % n], _SYLLABLES[(index // n) % n]]
    if index >= n * n:
        parts.append(_SYLLABLES[(index // (n * n)) % n])
    return "".join(parts)


def _zipf_weights(rng: np.random.Generator, size: int, sigma: float) -> list[float]:
    """Cumulative weights of a Zipf law over `size` items, jittered by the user's taste."""
    base = 1.0 / np.arange(1, size + 1) ** ZIPF_S
    jitter = rng.lognormal(0.0, sigma, size) if sigma > 0 else np.ones(size)
    return np.cumsum(base * jitter).tolist()


def _pick(rnd: random.Random, items: tuple, cum: list[float]):
    return items[bisect.bisect_right(cum, rnd.random() * cum[-1], hi=len(cum) - 1)]


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
        contact_cum=_zipf_weights(rng, k, 0.5),
        own_words=own,
        reactions=reactions,
        sentences_mean=float(rng.lognormal(np.log(SENTENCES_MEDIAN), 0.6)),
        short_rate=float(rng.beta(0.6, 3.0)),
        greeting_rate=float(rng.beta(1.0, 3.0)),
        reaction_rate=float(rng.beta(1.5, 4.0)),
        closer_rate=float(rng.beta(1.0, 3.0)),
        filler_rate=float(rng.beta(1.0, 5.0)),
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


class _Writer:
    """Fills frames for one persona with its own Random (fast scalar draws)."""

    def __init__(self, p: Persona) -> None:
        self.p = p
        self.rnd = random.Random(p.seed)
        self.rng = np.random.default_rng(p.seed)
        self._cum: dict[tuple[int, str], list[float]] = {}
        self._habits: dict[int, list[float]] = {}
        self.memory: dict[str, list[str]] = {}  # content words used so far in the current message
        self.mood = 0  # the current message's mood (an index into MOOD_MODALS)

    def habit(self, items: tuple):
        """Pick from a style list (frames, subjects, modals, ...) with this user's own preferences.

        Each user ranks every style list in their own random order and picks by a jittered Zipf law
        over that ranking, so users differ in their function words, not only in their topics.
        """
        cum = self._habits.get(id(items))
        if cum is None:
            weights = 1.0 / (1.0 + self.rng.permutation(len(items))) ** HABIT_ZIPF_S
            cum = self._habits[id(items)] = np.cumsum(weights * self.rng.lognormal(0.0, 0.5, len(items))).tolist()
        return _pick(self.rnd, items, cum)

    def _slot_items(self, topic: int, slot: str) -> tuple:
        t = TOPICS[topic]
        return {"n": t.nouns, "ns": t.plurals, "v": t.verbs, "vi": t.verbs_ing,
                "a": t.adjectives, "p": t.places}[slot]

    def word(self, topic: int, slot: str) -> str:
        items = self._slot_items(topic, slot)
        key = (topic, "v" if slot == "vi" else "n" if slot == "ns" else slot)
        cum = self._cum.get(key)
        if cum is None:
            cum = self._cum[key] = _zipf_weights(self.rng, len(items), PREFERENCE_SIGMA)
        return _pick(self.rnd, items, cum)

    def fill(self, frame: tuple[str, ...], topic: int, out: list[str]) -> None:
        rnd, p = self.rnd, self.p
        for tok in frame:
            if tok[0] != "{":
                out.append(tok)
            elif tok == "{time}":
                mood = self.mood if rnd.random() < MOOD_FIDELITY else int(rnd.random() * len(_MOOD_TIMES))
                self.fill(self.habit(_MOOD_TIMES[mood]), topic, out)
            elif tok == "{num}":
                out.append(_choice(rnd, NUMBERS))
            else:
                slot = tok[1:-1]
                if slot in ("v", "vi") and rnd.random() < p.filler_rate:
                    out.append(self.habit(FILLERS))
                elif slot == "a" and out and out[-1] not in ("so", "too") and rnd.random() < p.filler_rate:
                    out.append(self.habit(INTENSIFIERS))
                out.append(self.content(topic, slot))

    def content(self, topic: int, slot: str) -> str:
        """A content word for a slot; words already used in this message come back (burstiness)."""
        rnd, p = self.rnd, self.p
        base = {"ns": "n", "vi": "v"}.get(slot, slot)
        seen = self.memory.get(base)
        if seen and rnd.random() < REUSE_RATE.get(base, 0.0):
            word = _choice(rnd, seen)
            if slot == "ns":
                return plural(word) if word.islower() else word
            return ing(word) if slot == "vi" else word
        if slot == "name":
            word = _pick(rnd, p.contacts, p.contact_cum).capitalize()
        elif slot in ("n", "p") and rnd.random() < p.own_word_rate * 0.5:
            word = _choice(rnd, p.own_words).capitalize()
        elif slot in ("n", "p") and rnd.random() < TAIL_RATE:
            word = tail_word(topic, rnd.random())
        elif base == "v" and rnd.random() < _GENERIC_VERB_SHARE:
            word = self.habit(GENERIC_VERBS)
            word = ing(word) if slot == "vi" else word
        else:
            word = self.word(topic, slot)
        if slot == base:
            self.memory.setdefault(base, []).append(word)
        return word

    def clause(self, topic: int) -> tuple[str, ...]:
        """A frame from the phrase grammar of data/lexicon.py (statement or question).

        The modal comes from the message's mood (`self.mood`) and the subject often repeats the
        message's earlier subject: both tie a clause to words several positions back.
        """
        rnd = self.rnd
        r = rnd.random
        mood = self.mood if r() < MOOD_FIDELITY else int(r() * len(MOOD_MODALS))
        question = r() < 0.3
        pool = Q_SUBJECTS if question else SUBJECTS
        seen = self.memory.get("subject")
        subject = _choice(rnd, seen) if seen and r() < REUSE_RATE["subject"] else self.habit(pool)
        self.memory.setdefault("subject", []).append(subject)
        if question:
            head = [self.habit(QWORDS), self.habit(MOOD_Q_MODALS[mood]), subject]
        else:
            head = [subject, self.habit(MOOD_MODALS[mood])]
        det = self.habit(DETERMINERS)
        frame = head + ["{v}", det, "{ns}" if det == "some" else "{n}"]
        if r() < 0.4:
            frame.append(self.habit(PREPOSITIONS))
        if r() < 0.3:
            frame.append("{time}")
        return parse_frame(" ".join(frame))

    def sentence(self, topic: int, first: bool = False) -> list[str]:
        rnd = self.rnd
        u = rnd.random()
        if u < (_OPENING_TOPIC_FRAME_SHARE if first else _TOPIC_FRAME_SHARE):
            frame = _choice(rnd, TOPICS[topic].frames)
        elif u < _TOPIC_FRAME_SHARE + _GRAMMAR_SHARE:
            frame = self.clause(topic)
        else:
            frame = self.habit(_FRAMES)
        out: list[str] = []
        self.fill(frame, topic, out)
        for i in range(len(out) - 1):  # "a apple" -> "an apple"
            if out[i] == "a" and out[i + 1][:1] in "aeiou":
                out[i] = "an"
        return out

    def _typo(self, w: str) -> str:
        rnd = self.rnd
        i = rnd.randrange(len(w) - 1)
        op = rnd.randrange(4)
        if op == 0:
            return w[:i] + w[i + 1] + w[i] + w[i + 2:]
        if op == 1:
            return w[:i] + w[i + 1:]
        if op == 2:
            return w[:i] + w[i] + w[i:]
        near = _NEIGHBOURS.get(w[i], "")
        return w[:i] + _choice(rnd, near) + w[i + 1:] if near else w

    def surface(self, sentence: list[str]) -> str:
        """Slang, typos, capitalisation and punctuation: the sentence as typed."""
        rnd, p = self.rnd, self.p
        out = []
        slip = p.typo_rate * (1.0 - p.autocorrect)
        for w in sentence:
            if w in SLANG and rnd.random() < p.slang_rate:
                w = SLANG[w]
            elif len(w) > 2 and rnd.random() < slip:
                w = self._typo(w)
            if w == "i" and p.capitalise > 0.3:
                w = "I"
            out.append(w)
        if out and rnd.random() < p.capitalise:
            out[0] = out[0][:1].upper() + out[0][1:]
        text = " ".join(out)
        if rnd.random() < p.end_punct:
            text += rnd.choice((".", ".", "!", "?", "!!", "..."))
        return text

    def message(self, topic: int) -> str:
        rnd, p = self.rnd, self.p
        self.memory = {}
        self.mood = int(rnd.random() * len(MOOD_MODALS))
        if rnd.random() < p.short_rate:  # a quick reply: "lol", "on my way Sam"
            words = _choice(rnd, p.reactions).split()
            if rnd.random() < 0.3:
                words.append(_pick(rnd, p.contacts, p.contact_cum).capitalize())
            return self.surface(words)
        parts: list[str] = []
        greeted = rnd.random() < p.greeting_rate
        if greeted:
            g = self.habit(GREETINGS)
            parts.append(self.surface(g.split() + [self.content(topic, "name")]))
        if rnd.random() < p.reaction_rate * 0.5:
            parts.append(self.surface(_choice(rnd, p.reactions).split()))
        n_sent = 1 + _poisson(rnd, p.sentences_mean)
        for k in range(n_sent):
            sentence = self.sentence(topic, first=k == 0)
            if k and rnd.random() < p.connector_rate:
                sentence = self.habit(CONNECTORS).split() + sentence
            parts.append(self.surface(sentence))
        if rnd.random() < p.closer_rate * (2.0 if greeted else 1.0):  # set by the topic and the greeting
            parts.append(self.surface(list(_choice(rnd, TOPICS[topic].closers))))
        elif rnd.random() < p.reaction_rate * 0.5:
            parts.append(self.surface(_choice(rnd, p.reactions).split()))
        text = " ".join(parts)
        if rnd.random() < p.emoticon_rate:
            text += " " + _choice(rnd, _EMOTICONS)
        return text


def _timestamps(p: Persona, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Ascending send times (seconds) and the session index of each message."""
    sessions = max(1, int(np.ceil(n / p.per_session)))
    day = rng.integers(0, HORIZON_DAYS, size=sessions)
    hour = np.clip(rng.normal(p.hour, 2.5, size=sessions), 0, 23.99)
    starts = np.sort(day * 86400.0 + hour * 3600.0)
    session = np.sort(rng.integers(0, sessions, size=n))
    gaps = rng.exponential(45.0, size=n)
    # messages of a session follow its start by cumulative gaps (session is sorted)
    csum = np.cumsum(gaps)
    first = np.searchsorted(session, session, side="left")
    before = np.where(first > 0, csum[first - 1], 0.0)
    t = starts[session] + csum - before
    order = np.argsort(t, kind="stable")
    return t[order], session[order]


def user_messages(seed: int, index: int, cap: int = 0) -> list[Message]:
    """All `(t, text)` messages of user `index`, ascending in t.

    Args:
        seed: population seed (DataConfig.seed).
        index: user number.
        cap: keep only the first `cap` messages (0 = all); generation stops there.
    """
    p = persona(seed, index)
    n = min(p.num_messages, cap) if cap else p.num_messages
    w = _Writer(p)
    t, session = _timestamps(p, p.num_messages, w.rng)
    out: list[Message] = []
    topic = 0
    last_session = -1
    for j in range(n):
        if session[j] != last_session or w.rnd.random() > TOPIC_STICKINESS:
            topic = bisect.bisect_right(p.topic_cum, w.rnd.random() * p.topic_cum[-1], hi=len(TOPICS) - 1)
        last_session = int(session[j])
        out.append((round(float(t[j]), 3), w.message(topic)))
    return out


def iter_users(seed: int, num_users: int, cap: int = 0, start: int = 0) -> Iterator[tuple[str, list[Message]]]:
    """Yield `(user_id, messages)` for users `start .. num_users - 1`, one at a time."""
    if num_users < 0:
        raise ValueError(f"num_users must be >= 0, got {num_users}")
    for i in range(start, num_users):
        yield user_id(i), user_messages(seed, i, cap)
