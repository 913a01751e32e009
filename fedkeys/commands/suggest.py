"""Show the suggestion strip for typed text: next words, or completions of a partial word.

`fedkeys suggest --bundle DIR "see you"` loads a phone bundle (or a run directory: one holding
bundle/, or a `fedkeys train` output) and prints the top-3 next words after the text with their
probabilities and, when the text ends inside a word, the top-3 completions of that word.
`--interactive` reads one text per line until end of input. The text is normalised and
tokenized as a phone does (docs/phone.md); the model runs in numpy (keyboard/), so this command
imports no TensorFlow and starts in well under a second of CPU time.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from keyboard.strip import SLOTS, Keyboard, Suggestion


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("text", nargs="?", help="the text typed so far (omit with --interactive)")
    p.add_argument("--bundle", required=True, help="a bundle directory or a run directory")
    p.add_argument("--interactive", action="store_true", help="read texts line by line from stdin")
    p.add_argument("-k", type=int, default=SLOTS, help="suggestions per strip (default 3)")


def _line(label: str, found: tuple[Suggestion, ...]) -> str:
    shown = "  ".join(f"{s.word} {s.prob:.3g}" for s in found) if found else "(none)"
    return f"{label:<24}{shown}"


def show(kb: Keyboard, text: str, k: int, out: TextIO) -> None:
    """Print the next-word strip after `text` and, inside a word, its completions."""
    strip = kb.suggest(text, k)
    print(_line("next words:", kb.next_words(text, k)), file=out)
    if strip.kind == "completion":
        print(_line(f"completing {strip.prefix!r}:", strip.suggestions), file=out)
    out.flush()


def run(args: argparse.Namespace) -> int:
    if args.k < 1:
        raise ValueError(f"-k must be >= 1, got {args.k}")
    if args.interactive == (args.text is not None):
        raise ValueError("give either a text or --interactive")
    kb = Keyboard.load(args.bundle)
    if not args.interactive:
        show(kb, args.text, args.k, sys.stdout)
        return 0
    version = "" if kb.version is None else f" v{kb.version}"
    print(f"model{version}: {kb.weights.vocab_size} words; type a text, end with Ctrl-D", flush=True)
    while True:
        print("> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line:
            print()
            return 0
        show(kb, line.rstrip("\r\n"), args.k, sys.stdout)
