"""Shared by the accuracy benchmarks (not a benchmark itself; `make bench` skips `_*.py`).

The data sets they run on, prepared once per folder, and the baselines scored on them:

- `default`: the preset's own data (the simulator's population for the built-in presets);
- `shakespeare`: the Shakespeare corpus in ../shared/corpora, one user per speaking role
  (roles with at least 5 speeches);
- `irc`: the duraspace IRC corpus in ../shared/corpora, one user per nick;
- `jsonl:PATH`: any `{"user", "text"}` JSONL corpus (gzip or plain; docs/data.md).

A prepared folder is reused when its data config matches (delete it after changing the
simulator's or the normaliser's code: the config cannot tell).
"""

from __future__ import annotations

import dataclasses
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPORA = os.path.join(os.path.dirname(REPO), "shared", "corpora")
SHAKESPEARE = os.path.join(CORPORA, "shakespeare_gutenberg", "shakespeare_gutenberg.jsonl.gz")
IRC = os.path.join(CORPORA, "duraspace_irc", "duraspace_irc.jsonl.gz")
NAMED = {"shakespeare": (SHAKESPEARE, 5), "irc": (IRC, 1)}  # name -> (path, min_messages)
JSONL = "jsonl:"
# `--small`: a quick check of the whole benchmark, figures far from converged.
SMALL = ("data.num_users=80", "data.max_users=80", "data.max_messages_per_user=30", "train.rounds=6",
         "train.clients_per_round=5", "train.max_examples_per_client=64", "train.eval_every=3",
         "train.eval_max_examples=600")


def add_arguments(ap, set_example: str, small_help: str) -> None:
    """The data-set options both accuracy benchmarks take: --datasets, --preset, --set, --small."""
    ap.add_argument("--datasets", default="default,shakespeare,irc",
                    help="comma-separated: default, shakespeare, irc, jsonl:PATH")
    ap.add_argument("--preset", default="default", help="a preset name or a JSON preset file (fedkeys tune)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                    help=f"override a config field (repeatable), e.g. --set {set_example}")
    ap.add_argument("--small", action="store_true", help=small_help)


def dataset_config(name: str, base):
    """`base` (a RunConfig) pointed at the data set `name` (see the module docstring).

    Raises:
        FileNotFoundError: the corpus file is missing.
        ValueError: `name` is not default, shakespeare, irc or jsonl:PATH.
    """
    if name == "default":
        return base
    if name in NAMED:
        path, min_messages = NAMED[name]
    elif name.startswith(JSONL) and len(name) > len(JSONL):
        path, min_messages = os.path.abspath(os.path.expanduser(name[len(JSONL):])), base.data.min_messages
    else:
        raise ValueError(f"unknown dataset {name!r}; expected default, {', '.join(NAMED)} or jsonl:PATH")
    if not os.path.exists(path):
        raise FileNotFoundError(f"corpus for dataset {name!r} not found at {path}")
    return dataclasses.replace(base, data=dataclasses.replace(base.data, source=f"jsonl:{path}",
                                                              min_messages=min_messages))


def dataset_label(name: str) -> str:
    """A folder name for `name`: a jsonl:PATH data set is named after its file."""
    if not name.startswith(JSONL):
        return name
    base = os.path.basename(name[len(JSONL):])
    for ext in (".gz", ".jsonl", ".json"):
        base = base[:-len(ext)] if base.endswith(ext) else base
    return base or "jsonl"


def run_config(preset_name: str, overrides=(), small: bool = False):
    """The preset (a name or a JSON preset file) with `SECTION.FIELD=VALUE` overrides.

    `small` first shrinks it to a quick check (80 users of at most 30 messages, 6 rounds of 5
    clients, 64 examples a client, 600 held-out windows): minutes for the whole benchmark,
    figures far from converged.
    """
    from configs.io import apply_overrides
    from configs.presets import preset

    cfg = preset(preset_name)
    if small:
        cfg = apply_overrides(cfg, SMALL)
    return apply_overrides(cfg, overrides)



def prepared(cfg, data_dir: str):
    """`data.dataset.FederatedData` for cfg.data in `data_dir`, preparing it unless already there.

    Raises:
        ValueError: `data_dir` holds data prepared with another data config.
    """
    from data.dataset import FederatedData
    from data.prepare import prepare

    if not os.path.exists(os.path.join(data_dir, "summary.json")):
        prepare(cfg.data, data_dir, progress=False)
    data = FederatedData(data_dir)
    if data.config != cfg.data:
        raise ValueError(f"{data_dir} was prepared with {data.config}, not {cfg.data}: delete it or pass "
                         f"another output folder")
    return data


def trigram_scores(cfg, data, keystroke_rows: int = 0, fit_users=None, windows=None) -> dict:
    """The interpolated KN trigram fit on every training user's text, scored on held-out windows.

    `fit_users` fits it on those users only and `windows` (x, y) scores it there instead: the
    converged LSTM's validation users, which it must not have counted (lstm_vs_ngram.py). With
    `keystroke_rows`, also its keystroke savings on the first that-many windows
    (model.metrics.KeystrokeSavings, as `fedkeys evaluate` scores a model).
    """
    from data.ngram import KneserNeyTrigram, score
    from model.metrics import KeystrokeSavings, NextWordAccumulator

    users = data.users("train") if fit_users is None else fit_users
    tri = KneserNeyTrigram(data.tokenizer.vocab_size).fit([toks for u in users for toks in data.tokens(u)])
    ex, ey = windows if windows is not None else data.pooled_examples(
        "heldout", cfg.data.seq_len, cfg.train.eval_max_examples)
    out = score(tri, ex, ey, NextWordAccumulator(ks=(1, 3)))
    if keystroke_rows:
        out.update(score(tri, ex[:keystroke_rows], ey[:keystroke_rows],
                         KeystrokeSavings(data.tokenizer.words, slots=3)))
    return out


def model_keystroke_savings(cfg, data, weights_path: str, rows: int) -> float:
    """Keystroke savings of the weights in `weights_path` on the first `rows` held-out windows."""
    from fedkeys.commands.evaluate import heldout, keystroke_savings
    from model.weights_io import load_weights

    x, y = heldout(cfg, data)
    return keystroke_savings(cfg, data, load_weights(weights_path)[1], (x, y), max_rows=rows)["keystroke_savings"]
