"""Named presets: `tiny` for tests, `default` for the demo (minutes on 2 cores), `gboard` (Hard 2018 sizes).

A preset can also be a JSON file in config.json's format (what `fedkeys tune` writes): every
`--preset` accepts a path ending in `.json` in place of a name.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace

from configs.dicts import from_dict
from configs.schema import (
    DataConfig,
    DeviceConfig,
    ModelConfig,
    PrivacyConfig,
    RunConfig,
    ServerConfig,
    TrainConfig,
)


def _tiny() -> RunConfig:
    return RunConfig(
        preset="tiny",
        data=DataConfig(num_users=60, vocab_size=300, seq_len=10, max_messages_per_user=40),
        model=ModelConfig(embedding_dim=16, lstm_units=32),
        train=TrainConfig(rounds=3, clients_per_round=4, batch_size=8, max_examples_per_client=32,
                          eval_every=1, eval_max_examples=400),
        privacy=PrivacyConfig(clip_norm=5.0, noise_multiplier=0.0),
        server=ServerConfig(goal_count=3),
        devices=DeviceConfig(num_devices=4, rounds=1, concurrency=2),
    )


def _default() -> RunConfig:
    # FedAvgM as Gboard trained (server Nesterov momentum 0.9, server lr 1.0; Hard et al. 2018),
    # sized so `make demo` finishes in minutes on 2 cores. The phones' plan and the collector's
    # server step read the same `train` section.
    base = RunConfig(preset="default")
    return replace(
        base,
        # 10k words as Gboard: on real typing (benchmarks/data_realism.py) 2k left 14% of held-out
        # words out of vocabulary; the simulator's proxy users type about 1,050 distinct words,
        # so there the vocabulary stays at that size.
        data=replace(base.data, vocab_size=10_000),
        # Client step 1.0 with each step's gradient clipped to norm 1: unclipped, 1.0 diverged on
        # real chat text at the 10k vocabulary and 0.5 trained slower (docs/decisions.md).
        train=replace(base.train, algorithm="fedavgm", server_momentum=0.9, rounds=40, local_epochs=2,
                      client_learning_rate=1.0, client_grad_clip=1.0, eval_every=10),
        privacy=replace(base.privacy, clip_norm=1.0, noise_multiplier=0.01),
    )


def _gboard() -> RunConfig:
    base = RunConfig(preset="gboard")
    return replace(
        base,
        # 20,000 users, so the 2,000 proxy users (10%) type the ~11,000 distinct words a
        # 10,000-word vocabulary needs (200 proxy users fill only about 2,500).
        data=replace(base.data, vocab_size=10_000, num_users=20_000),
        model=ModelConfig(embedding_dim=96, lstm_units=670, cell="cifg"),
        train=replace(base.train, rounds=100, clients_per_round=50),
    )


PRESETS = {"tiny": _tiny, "default": _default, "gboard": _gboard}


def preset(name: str) -> RunConfig:
    """The preset called `name`, or the one stored in the JSON file `name` (ends in `.json`).

    Raises:
        ValueError: an unknown name, or a file that is not a config.json-style object.
        FileNotFoundError: a `.json` path that does not exist.
    """
    if name.endswith(".json"):
        return preset_file(name)
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)} or a .json preset file") from None


def preset_file(path: str) -> RunConfig:
    """A RunConfig from a JSON file of config.json's layout (sections may leave fields out).

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: the file is not a JSON object of known sections and fields.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"preset file not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            raw = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"preset file {path}: expected a JSON object, got invalid JSON ({e.msg})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"preset file {path}: expected a JSON object, got {type(raw).__name__}")
    return from_dict(raw)
