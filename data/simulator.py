"""The keystroke simulator: a deterministic, lazily generated population typing messages.

Why: fedkeys must run Gboard-style training (Hard et al. 2018, arXiv:1811.03604) without anyone's
real keystrokes, on users as heavy-tailed and non-IID as real ones (data/persona.py), and with
structure a next-word model can learn that an n-gram cannot.

Each user types `persona.num_messages` messages in sessions over `HORIZON_DAYS` days. A message
is a few sentences from three sources (a topic's own frames, a small phrase grammar, everyday
frames; data/lexicon.py), with the user's style habits (a personal ranking of frames, subjects,
modals, determiners, time phrases, greetings, connectors, everyday verbs), then surface noise:
slang, typos that autocorrect missed, capitalisation, punctuation, emoticons.

Long-range structure, fixed at the start of each message: a topic (sticky within a session)
fills every content slot and picks the closing phrase; a mood (plans, duties, chances) picks the
question words, subjects, modals and time phrases of every clause; texting style ("u", "tmrw") is
all or nothing; and words already used come back (burstiness). So the word after "the" or "we"
in sentence two depends on words a trigram has long forgotten.

The constants here and in data/persona.py are tuned so that `benchmarks/data_realism.py` puts the
default population inside the range of two real per-user corpora on volume skew, words per
message and user-vs-population JS divergence, with a Kneser-Ney trigram top-1 between 8% and 35%
(docs/data.md). Users are generated one at a time from their own seed (`iter_users`).
"""

from __future__ import annotations

import bisect
import math
import random
from typing import Iterator

import numpy as np

from data.corpus import Message
from data.lexicon import (CONNECTORS, DETERMINERS, FILLERS, GENERIC_FRAMES, GENERIC_VERBS, GREETINGS,
                          INTENSIFIERS, MOOD_MODALS, MOOD_Q_MODALS, MOOD_Q_SUBJECTS, MOOD_QWORDS, MOOD_SUBJECTS,
                          MOOD_TIMES, NUMBERS, PREPOSITIONS, SLANG, TOPICS, ing, parse_frame, plural)
from data.persona import (HORIZON_DAYS, VOLUME_CAP, Persona, num_messages, persona, rare_word, user_id,
                          zipf_weights)

__all__ = ["HORIZON_DAYS", "VOLUME_CAP", "Persona", "iter_users", "num_messages", "persona", "user_id",
           "user_messages"]

PREFERENCE_SIGMA = 0.6  # lognormal jitter of a user's word weights (their vocabulary habits)
HABIT_ZIPF_S = 2.0  # how strongly a user favours their own frames, subjects, modals, ...
TOPIC_STICKINESS = 0.6  # chance a message keeps the previous message's topic within a session
TAIL_RATE = 0.08  # chance a noun or place slot holds a long-tail proper noun of the topic
TAIL_EXPONENT = 0.7  # Pareto exponent of tail-noun ranks (smaller = heavier tail)
TAIL_SIZE = 5000  # tail nouns per topic
SLANG_CONSISTENCY = 0.9  # in a texting-style message, share of slang-able words that are slanged
MOOD_FIDELITY = 0.9  # chance a clause's modal comes from the message's mood
# chance a slot repeats a word already used in the message, by slot kind
REUSE_RATE = {"n": 0.5, "p": 0.5, "name": 0.5, "subject": 0.7, "v": 0.15, "a": 0.15}

_FRAMES = tuple(parse_frame(f) for f in GENERIC_FRAMES)
_TOPIC_FRAME_SHARE = 0.2  # sentences from the message topic's own frames
_OPENING_TOPIC_FRAME_SHARE = 0.5  # ... for a message's first sentence, which sets the scene
_GENERIC_VERB_SHARE = 0.2  # verb slots filled with an everyday verb that fits any topic (the rest: the topic's own)
_GRAMMAR_SHARE = 0.45  # sentences from the phrase grammar; the rest from the shared frames
_MOOD_TIMES = tuple(tuple(parse_frame(t) for t in group) for group in MOOD_TIMES)
_KEYS = "qwertyuiop asdfghjkl zxcvbnm"
_NEIGHBOURS = {c: "".join(_KEYS[j] for j in (i - 1, i + 1) if 0 <= j < len(_KEYS) and _KEYS[j] != " ")
               for i, c in enumerate(_KEYS) if c != " "}  # same-row neighbour keys, for typos
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


def _pick(rnd: random.Random, items: tuple, cum: list[float]):
    return items[bisect.bisect_right(cum, rnd.random() * cum[-1], hi=len(cum) - 1)]


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
        self.slang = False  # whether the current message is typed in texting style ("u", "tmrw")

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
            cum = self._cum[key] = zipf_weights(self.rng, len(items), PREFERENCE_SIGMA)
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

        The question word, subject and modal come from the message's mood (`self.mood`), and the
        subject often repeats the message's earlier one: both tie a clause to words typed several
        positions back.
        """
        rnd = self.rnd
        r = rnd.random
        mood = self.mood if r() < MOOD_FIDELITY else int(r() * len(MOOD_MODALS))
        question = r() < 0.3
        pool = (MOOD_Q_SUBJECTS if question else MOOD_SUBJECTS)[mood]
        seen = self.memory.get("subject")
        subject = _choice(rnd, seen) if seen and r() < REUSE_RATE["subject"] else self.habit(pool)
        self.memory.setdefault("subject", []).append(subject)
        if question:
            head = [self.habit(MOOD_QWORDS[mood]), self.habit(MOOD_Q_MODALS[mood]), subject]
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
            if self.slang and w in SLANG and rnd.random() < SLANG_CONSISTENCY:
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
        self.slang = rnd.random() < p.slang_rate  # texting style is a per-message register
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
