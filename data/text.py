"""Keyboard text normalisation: one raw message to the words a keyboard would suggest.

A suggestion strip offers whole words, not punctuation or capitalisation variants (the
keyboard re-applies capitalisation itself), and it never suggests a particular link, handle or
number: those are typed, pasted or picked elsewhere. So every stage of fedkeys sees a message as:

1. Unicode NFKC, then lowercase (`str.casefold` is not used: it maps "ß" to "ss").
2. Typographic apostrophes (U+2019, U+2018, U+02BC) become "'".
3. Tokens, left to right, the first rule that matches at a position winning:

   ============  ====================================================  ==============
   placeholder   matches                                               example
   ============  ====================================================  ==============
   `<url>`       `scheme://...`, `www....`, or `name.tld[/...]` for    `https://t.co/x`
                 a common TLD (com, org, net, io, ...), to the next
                 space
   `<email>`     `local@domain.tld`                                    `a.b@c.org`
   `<user>`      `@handle` not preceded by a letter, digit or `@`      `@Tony_Robinson`
   `<hashtag>`   `#tag` starting with a letter                         `#DSpace7`
   `<num>`       a digit run with internal `. , : / -` and optional     `9:30`, `2nd`,
                 letters after it, or any word holding a digit          `mp3`
   `<emoji>`     a run of emoji (pictographs, dingbats, flags, with     `👍🏽`, `😂😂`
                 their joiners, skin tones and variation selectors)
   ============  ====================================================  ==============

   Otherwise a word is a maximal run of letters and digits, optionally joined by single
   internal apostrophes: "don't" and "o'clock" are one word, "'tis" is "tis". Everything else
   (punctuation, symbols, emoticons such as ":)") separates words and is dropped.

So "Hey @Sam!! Don't forget the 9:30 meeting :) https://t.co/xjDKoVOsOq" becomes
`["hey", "<user>", "don't", "forget", "the", "<num>", "meeting", "<url>"]`.

Placeholders are ordinary words to the vocabulary, the model and the metrics: the model
learns where a link or a number goes ("at <num>"), a phone shows no placeholder in the
strip (docs/phone.md), and a link is one prediction instead of the four pseudo-words
(`https t co xjdkovosoq`) that splitting it at punctuation would make. The same function
feeds the vocabulary, the shards' word counts, the n-gram baselines, the statistics, the
metrics and the phone's tokenizer, so "a word" means the same thing everywhere (docs/data.md).
"""

from __future__ import annotations

import re
import unicodedata

URL, EMAIL, USER, HASHTAG, NUM, EMOJI = "<url>", "<email>", "<user>", "<hashtag>", "<num>", "<emoji>"
PLACEHOLDERS = (URL, EMAIL, USER, HASHTAG, NUM, EMOJI)

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})
_TLDS = ("com|org|net|edu|gov|mil|int|io|co|uk|us|ca|au|de|fr|nl|es|it|ch|be|eu|jp|cn|in|ru|br|ly|me|tv"
         "|info|biz|dev|app|ai")
_L = r"[^\W_]"  # a letter or digit (word characters minus underscore)
_EMOJI_CHARS = ("\U0001F000-\U0001FAFF"  # pictographs, emoticons, transport, flags' letters, ...
                "\u2300-\u23FF\u2600-\u27BF\u2B00-\u2BFF"  # watches, weather, dingbats, arrows, stars
                "\u200d\ufe0f\u20e3")  # joiner, emoji presentation selector, keycap
_TOKEN = re.compile(
    "|".join((
        rf"(?P<url>(?:[a-z][a-z0-9+.-]*://|www\.)\S+|\b(?:[a-z0-9-]+\.)+(?:{_TLDS})\b(?:/\S*)?)",
        r"(?P<email>[\w.+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)+)",
        r"(?P<user>(?<![\w@])@\w+)",
        r"(?P<hashtag>(?<![\w#])#[^\W\d_]\w*)",
        rf"(?P<num>\d(?:[\d.,:/-]*\d)?{_L}*)",
        rf"(?P<emoji>[{_EMOJI_CHARS}]+)",
        rf"(?P<word>{_L}+(?:'{_L}+)*)",
    )))
_PLACEHOLDER_OF = {"url": URL, "email": EMAIL, "user": USER, "hashtag": HASHTAG, "num": NUM, "emoji": EMOJI}
_DIGIT = re.compile(r"\d")


def _token(match: re.Match) -> str:
    kind = match.lastgroup
    if kind == "word":
        word = match.group()
        # A word holding a digit (mp3, utf8, a3f9e2c) is a code or a number, not a suggestion.
        return NUM if _DIGIT.search(word) else word
    return _PLACEHOLDER_OF[kind]


def words(text: str) -> list[str]:
    """Split one raw message into normalised words and placeholders.

    Args:
        text: a message as typed.

    Returns:
        Lowercased words, punctuation removed, links, addresses, handles, hashtags, numbers and
        emoji replaced by their placeholders (see the module docstring).

    Raises:
        ValueError: if `text` is not a str.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected message text as str, got {type(text).__name__}")
    norm = unicodedata.normalize("NFKC", text).lower().translate(_APOSTROPHES)
    return [_token(m) for m in _TOKEN.finditer(norm)]


def normalise(text: str) -> str:
    """The message as its words joined by single spaces (what SentencePiece is trained on)."""
    return " ".join(words(text))


def is_placeholder(word: str) -> bool:
    """True for the placeholder tokens (`<url>`, `<num>`, ...), which a phone never shows."""
    return word in PLACEHOLDERS


_PARTIAL = re.compile(rf"{_L}+(?:'{_L}*)*$")
_PLACEHOLDER_LEAD = re.compile(r"[@#/.:\w]$")  # a handle, hashtag, link or number in progress


def split_partial(text: str) -> tuple[str, str | None]:
    """Split typed text into what comes before the word being typed and that word, normalised.

    A keyboard completes the word under the cursor: the trailing run of letters (and internal
    apostrophes) when the text does not end in a space or punctuation. It is normalised as
    `words` does (NFKC, lowercase, apostrophes), so it is a prefix of vocabulary words.

    Args:
        text: the message typed so far.

    Returns:
        (before, partial): `partial` is "" when the text ends between words (the strip shows
        next words), None when the word in progress is a link, handle, hashtag or number
        (the strip shows nothing), else the normalised partial word.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected message text as str, got {type(text).__name__}")
    norm = unicodedata.normalize("NFKC", text).lower().translate(_APOSTROPHES)
    m = _PARTIAL.search(norm)
    if m is None:
        return norm, ""
    before, partial = norm[:m.start()], m.group()
    if _DIGIT.search(partial) or _PLACEHOLDER_LEAD.search(before):
        return before, None
    return before, partial
