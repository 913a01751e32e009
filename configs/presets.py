"""Named presets: `tiny` for tests, `default` for the demo (minutes on 2 cores), `gboard` (Hard 2018 sizes)."""

from __future__ import annotations

from dataclasses import replace

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
        server=ServerConfig(goal_count=3, batch_size=8, max_examples=32),
        devices=DeviceConfig(num_devices=4, rounds=1, concurrency=2),
    )


def _default() -> RunConfig:
    # FedAvgM as Gboard trained (server Nesterov momentum 0.9, server lr 1.0; Hard et al. 2018),
    # sized so `make demo` finishes in minutes on 2 cores. The phones follow the same client step.
    base = RunConfig(preset="default")
    return replace(
        base,
        train=replace(base.train, algorithm="fedavgm", rounds=40, local_epochs=2,
                      client_learning_rate=1.0, eval_every=10),
        server=replace(base.server, local_epochs=2, learning_rate=1.0),
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
    """Return the preset called `name`, or raise ValueError listing the known ones."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}") from None
