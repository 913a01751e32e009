"""RunConfig to and from plain dicts (config.json, preset files, the collector's JSON config)."""

from __future__ import annotations

import dataclasses
from typing import Any

from configs.schema import RunConfig


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def section_from_dict(cls: type, raw: Any, name: str) -> Any:
    """One section (a frozen dataclass) from its dict; missing fields keep their defaults.

    Raises:
        ValueError: `raw` is not an object, or names fields the section does not have.
    """
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ValueError(f"config section {name!r} must be an object, got {type(raw).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"config section {name!r} has unknown keys {unknown}; expected some of {sorted(known)}")
    return cls(**raw)


def from_dict(raw: dict[str, Any]) -> RunConfig:
    """Rebuild a RunConfig from config.json, rejecting unknown keys."""
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(RunConfig):
        if f.name not in raw:
            continue
        if f.name == "preset":
            kwargs["preset"] = raw["preset"]
            continue
        kwargs[f.name] = section_from_dict(type(getattr(RunConfig(), f.name)), raw[f.name], f.name)
    return RunConfig(**kwargs)
