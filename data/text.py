"""Text normalisation: one raw message to the words a keyboard would suggest.

A suggestion strip offers whole words, not punctuation or capitalisation variants (the
keyboard re-applies capitalisation itself), so every stage of fedkeys sees a message as:

1. Unicode NFKC, then lowercase (`str.casefold` is not used: it maps "ß" to "ss").
2. Typographic apostrophes (U+2019, U+2018, U+02BC) become "'".
3. Words are maximal runs of letters and digits, optionally joined by single internal
   apostrophes: "don't" and "o'clock" are one word, "'tis" is "tis". Everything else
   (punctuation, emoji, symbols, URL separators) separates words and is dropped.

So "Hey Sam!! Don't forget the 9:30 meeting :)" becomes
`["hey", "sam", "don't", "forget", "the", "9", "30", "meeting"]`.

The same function feeds the vocabulary, the shards' word counts, the n-gram baselines and
the metrics, so "a word" means the same thing everywhere (docs/data.md).
"""

from __future__ import annotations

import re
import unicodedata

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})
# A letter or digit is [^\W_] (word characters minus underscore).
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def words(text: str) -> list[str]:
    """Split one raw message into normalised words.

    Args:
        text: a message as typed.

    Returns:
        Lowercased words, punctuation removed (see the module docstring).

    Raises:
        ValueError: if `text` is not a str.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected message text as str, got {type(text).__name__}")
    norm = unicodedata.normalize("NFKC", text).lower().translate(_APOSTROPHES)
    return _WORD.findall(norm)


def normalise(text: str) -> str:
    """The message as its words joined by single spaces (what SentencePiece is trained on)."""
    return " ".join(words(text))
