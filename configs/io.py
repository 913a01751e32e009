"""Resolve a preset with `section.field=value` overrides; write and read config.json."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Iterable

from configs.dicts import from_dict, to_dict
from configs.presets import preset
from configs.schema import RunConfig


def _coerce(value: str, current: Any, where: str) -> Any:
    if isinstance(current, bool):
        if value.lower() in ("1", "true", "yes"):
            return True
        if value.lower() in ("0", "false", "no"):
            return False
        raise ValueError(f"{where}: expected a boolean, got {value!r}")
    for kind in (int, float):
        if isinstance(current, kind):
            try:
                return kind(value)
            except ValueError:
                raise ValueError(f"{where}: expected {kind.__name__}, got {value!r}") from None
    return value


# The collector runs the server optimizer configured in `train` (one field for both paths);
# these names are the same fields under the section a collector operator looks in.
ALIASES = {
    "collector.server_momentum": "train.server_momentum",
    "collector.server_learning_rate": "train.server_learning_rate",
}


def apply_overrides(cfg: RunConfig, overrides: Iterable[str]) -> RunConfig:
    """Apply overrides such as `train.rounds=5` to a RunConfig, checking names and types."""
    for item in overrides:
        key, sep, value = item.partition("=")
        key = ALIASES.get(key, key)
        section, dot, name = key.partition(".")
        if not sep or not dot:
            raise ValueError(f"override {item!r}: expected SECTION.FIELD=VALUE, e.g. train.rounds=5")
        if section not in {f.name for f in dataclasses.fields(cfg)} or section == "preset":
            raise ValueError(f"override {item!r}: unknown section {section!r}")
        sub = getattr(cfg, section)
        fields = {f.name for f in dataclasses.fields(sub)}
        if name not in fields:
            raise ValueError(f"override {item!r}: {section} has no field {name!r}; expected one of {sorted(fields)}")
        new_sub = dataclasses.replace(sub, **{name: _coerce(value, getattr(sub, name), key)})
        cfg = dataclasses.replace(cfg, **{section: new_sub})
    return cfg


def resolve(preset_name: str, overrides: Iterable[str] = ()) -> RunConfig:
    """The preset with the overrides applied."""
    return apply_overrides(preset(preset_name), overrides)


def write_config(cfg: RunConfig, out_dir: str) -> str:
    """Write config.json into out_dir (created if missing); return its path."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "config.json")
    with open(path, "w") as f:
        json.dump(to_dict(cfg), f, indent=2, sort_keys=True)
        f.write("\n")
    return path


def read_config(run_dir: str) -> RunConfig:
    with open(os.path.join(run_dir, "config.json")) as f:
        return from_dict(json.load(f))


def finished_result(run_dir: str, cfg: RunConfig, result_file: str) -> dict | None:
    """A finished run's saved result (`run_dir/result_file`, JSON) when the run was made with this
    very config (its config.json equals `cfg`); None when there is none to reuse."""
    done = os.path.join(run_dir, result_file)
    if not (os.path.exists(done) and os.path.exists(os.path.join(run_dir, "config.json"))):
        return None
    if to_dict(read_config(run_dir)) != to_dict(cfg):
        return None
    with open(done) as f:
        return json.load(f)
