"""Text normalisation and the word-level SentencePiece vocabulary."""

from __future__ import annotations

import pytest

from data.special_ids import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from data.text import PLACEHOLDERS, is_placeholder, normalise, words
from data.tokenizer import Tokenizer, train_tokenizer


def test_words_hand_checked():
    assert words("Hey Sam!! Don't forget the 9:30 meeting :)") == \
        ["hey", "sam", "don't", "forget", "the", "<num>", "meeting"]
    assert words("It\u2019s   'tis__fine...") == ["it's", "tis", "fine"]
    assert words("") == []
    assert normalise("A  b,C") == "a b c"
    with pytest.raises(ValueError, match="str"):
        words(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("text, expected", [
    ("see https://t.co/xjDKoVOsOq now", ["see", "<url>", "now"]),
    ("docs at wiki.duraspace.org/display/DSPACE/Home.", ["docs", "at", "<url>"]),
    ("www.example.com?q=1", ["<url>"]),
    ("thanks @Tony_Robinson!", ["thanks", "<user>"]),
    ("mail a.b+x@c-d.org, ok", ["mail", "<email>", "ok"]),
    ("#DSpace7 rocks, #1 fan", ["<hashtag>", "rocks", "<num>", "fan"]),
    ("at 9:30 on 12/05/2026, 1,000.5 of 2nd mp3", ["at", "<num>", "on", "<num>", "<num>", "of", "<num>", "<num>"]),
    ("lol \U0001F602\U0001F602 ok \U0001F44D\U0001F3FD", ["lol", "<emoji>", "ok", "<emoji>"]),
    ("i \u2764\ufe0f it :)", ["i", "<emoji>", "it"]),
    ("e.g. node.js", ["e", "g", "node", "js"]),  # no known TLD: words, not a link
    ("x@y", ["x", "y"]),  # no domain: not an address; "@" inside a word: not a handle
])
def test_keyboard_placeholders(text, expected):
    assert words(text) == expected


def test_placeholders_are_words_to_the_vocabulary(tmp_path):
    tok = train_tokenizer(["see https://a.com at 5", "see www.b.org at 6"], str(tmp_path / "p"), 10)
    assert {"<url>", "<num>"} <= set(tok.words)
    assert tok.encode(["at 7"])[0][2] == tok.word_to_id("<num>") != UNK_ID
    assert all(is_placeholder(p) for p in PLACEHOLDERS) and not is_placeholder("the")


@pytest.fixture()
def tok(tmp_path) -> Tokenizer:
    texts = ["the cat sat", "The cat ran!", "the dog sat", "a cat"]
    return train_tokenizer(texts, str(tmp_path / "spm"), vocab_size=7)


def test_special_ids_fixed(tok):
    assert (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == (0, 1, 2, 3)
    assert [tok.id_to_word(i) for i in range(4)] == ["<pad>", "<unk>", "<s>", "</s>"]


def test_vocab_is_most_frequent_words(tok):
    # counts: the 3, cat 3, sat 2, ... -> 7 ids = 4 specials + 3 words
    assert tok.vocab_size == 7
    assert {tok.id_to_word(i) for i in range(4, 7)} == {"the", "cat", "sat"}


def test_encode_bos_eos_unk(tok):
    the, cat, sat = tok.word_to_id("the"), tok.word_to_id("cat"), tok.word_to_id("sat")
    assert tok.encode(["The cat sat.", "zebra cat", ""]) == [
        [BOS_ID, the, cat, sat, EOS_ID], [BOS_ID, UNK_ID, cat, EOS_ID], [BOS_ID, EOS_ID]]
    assert tok.decode([BOS_ID, the, UNK_ID, EOS_ID, PAD_ID]) == "the <unk>"
    with pytest.raises(ValueError, match="single str"):
        tok.encode("the cat")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\[0, 7\)"):
        tok.id_to_word(7)


def test_deterministic_and_quiet(tmp_path, capfd):
    texts = [f"w{i % 13} w{i % 7} w{i % 3}" for i in range(200)]
    a = train_tokenizer(texts, str(tmp_path / "a"), 12)
    b = train_tokenizer(texts, str(tmp_path / "b"), 12)
    assert a.words == b.words
    assert (tmp_path / "a.model").read_bytes() == (tmp_path / "b.model").read_bytes()
    assert (tmp_path / "a.vocab").read_text() == (tmp_path / "b.vocab").read_text()
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_small_corpus_gives_small_vocab(tmp_path):
    t = train_tokenizer(["one two two"], str(tmp_path / "s"), 100)
    assert t.vocab_size == 6


def test_bad_vocab_and_empty_texts(tmp_path):
    with pytest.raises(ValueError, match="at least 5"):
        train_tokenizer(["a"], str(tmp_path / "x"), 4)
    with pytest.raises(ValueError, match="no"):
        train_tokenizer(["!!", ""], str(tmp_path / "x"), 10)
