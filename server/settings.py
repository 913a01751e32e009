"""The collector's settings: configs.ServerConfig and configs.PrivacyConfig, plus the knobs only
the server has (CollectorConfig), the phone bundle and the state directory.

A config file (or Flask's `test_config`) is one JSON object:

    {"server": {ServerConfig fields}, "privacy": {PrivacyConfig fields},
     "collector": {CollectorConfig fields}, "bundle_dir": str, "state_dir": str}

Every section is optional except the two directories; unknown keys are refused.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from configs.schema import PrivacyConfig, ServerConfig

PRIVACY_MODES = ("none", "device", "central")
NORM_POLICIES = ("reject", "reclip")
WEIGHTINGS = ("auto", "examples", "uniform")
DURABILITY = ("process", "power")


@dataclass(frozen=True)
class CollectorConfig:
    """Server-only settings (Bonawitz et al. 2019 round lifecycle, DP accounting, storage)."""

    report_deadline_s: float = 600.0  # reporting window, counted from the round's first accepted check-in
    min_reports: int = 0  # reports needed to publish at the deadline (0 = goal_count); fewer: round abandoned
    norm_policy: str = "reject"  # update above the plausible norm: "reject" (400) or "reclip" it to that norm
    weighting: str = "auto"  # "examples" (FedAvg), "uniform" (DP-FedAvg), "auto": uniform iff noise_multiplier > 0
    server_momentum: float = 0.0  # server SGD momentum on the mean delta (Gboard used 0.9); 0 = plain
    population: int = 0  # N for q = goal_count / N and the default delta 1/N^1.1 (0 = registered devices)
    checkpoint_every: int = 32  # write the running sum to disk every this many accepted updates
    durability: str = "process"  # "process": survives kill -9 (page cache); "power": also fsync every write
    rate_limit_per_s: float = 5.0  # per-device token bucket refill rate (requests per second)
    rate_limit_burst: int = 30  # per-device token bucket size
    register_rate_per_s: float = 50.0  # registrations per second per client address
    register_burst: int = 2000  # registration bucket size per client address
    max_retry_after_s: int = 600  # upper bound on the Retry-After handed to turned-away devices
    metrics_flush_s: float = 1.0  # how often a worker writes its request counters to SQLite


@dataclass(frozen=True)
class Settings:
    server: ServerConfig = field(default_factory=ServerConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    collector: CollectorConfig = field(default_factory=CollectorConfig)
    bundle_dir: str = ""
    state_dir: str = ""

    @property
    def slots(self) -> int:
        """Check-ins accepted per round: ceil(goal_count * over_selection)."""
        return math.ceil(self.server.goal_count * self.server.over_selection - 1e-9)

    @property
    def min_reports(self) -> int:
        return self.collector.min_reports or self.server.goal_count

    @property
    def uniform_weighting(self) -> bool:
        w = self.collector.weighting
        return w == "uniform" or (w == "auto" and self.privacy.mode != "none" and self.privacy.noise_multiplier > 0)


_SECTIONS = {"server": ServerConfig, "privacy": PrivacyConfig, "collector": CollectorConfig}


def _section(cls: type, raw: Any, name: str) -> Any:
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ValueError(f"config section {name!r} must be an object, got {type(raw).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"config section {name!r} has unknown keys {unknown}; expected some of {sorted(known)}")
    return cls(**raw)


def settings_from_dict(raw: dict[str, Any]) -> Settings:
    """Build and check Settings from the JSON shape above. Raises ValueError naming the problem."""
    if not isinstance(raw, dict):
        raise ValueError(f"server config must be a JSON object, got {type(raw).__name__}")
    allowed = set(_SECTIONS) | {"bundle_dir", "state_dir"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ValueError(f"server config has unknown keys {unknown}; expected some of {sorted(allowed)}")
    for key in ("bundle_dir", "state_dir"):
        if not isinstance(raw.get(key), str) or not raw.get(key):
            raise ValueError(f"server config needs {key!r} as a non-empty string, got {raw.get(key)!r}")
    s = Settings(
        **{name: _section(cls, raw.get(name), name) for name, cls in _SECTIONS.items()},
        bundle_dir=raw["bundle_dir"], state_dir=raw["state_dir"],
    )
    check(s)
    return s


def load_settings(path: str) -> Settings:
    with open(path) as f:
        raw = json.load(f)
    raw = dict(raw)
    base = os.path.dirname(os.path.abspath(path))
    for key in ("bundle_dir", "state_dir"):  # relative directories are relative to the config file
        if isinstance(raw.get(key), str) and raw[key] and not os.path.isabs(raw[key]):
            raw[key] = os.path.join(base, raw[key])
    return settings_from_dict(raw)


def _require(ok: bool, what: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"{what}, got {value!r}")


def check(s: Settings) -> None:
    sv, pv, cv = s.server, s.privacy, s.collector
    _require(sv.goal_count >= 1, "server.goal_count must be >= 1", sv.goal_count)
    _require(sv.over_selection >= 1.0, "server.over_selection must be >= 1.0", sv.over_selection)
    _require(sv.max_examples >= 1, "server.max_examples must be >= 1", sv.max_examples)
    _require(sv.max_body_bytes >= 1024, "server.max_body_bytes must be >= 1024", sv.max_body_bytes)
    _require(sv.norm_slack >= 0, "server.norm_slack must be >= 0", sv.norm_slack)
    _require(sv.retry_after_s >= 1, "server.retry_after_s must be >= 1", sv.retry_after_s)
    _require(pv.mode in PRIVACY_MODES, f"privacy.mode must be one of {PRIVACY_MODES}", pv.mode)
    _require(pv.clip_norm > 0, "privacy.clip_norm must be > 0", pv.clip_norm)
    _require(pv.noise_multiplier >= 0, "privacy.noise_multiplier must be >= 0", pv.noise_multiplier)
    _require(cv.report_deadline_s > 0, "collector.report_deadline_s must be > 0", cv.report_deadline_s)
    _require(0 <= cv.min_reports <= sv.goal_count, f"collector.min_reports must be in [0, goal_count={sv.goal_count}]",
             cv.min_reports)
    _require(cv.norm_policy in NORM_POLICIES, f"collector.norm_policy must be one of {NORM_POLICIES}", cv.norm_policy)
    _require(cv.weighting in WEIGHTINGS, f"collector.weighting must be one of {WEIGHTINGS}", cv.weighting)
    _require(0 <= cv.server_momentum < 1, "collector.server_momentum must be in [0, 1)", cv.server_momentum)
    _require(cv.population >= 0, "collector.population must be >= 0", cv.population)
    _require(0 <= pv.delta < 1, "privacy.delta must be in [0, 1) (0 = 1/N^1.1)", pv.delta)
    _require(cv.checkpoint_every >= 1, "collector.checkpoint_every must be >= 1", cv.checkpoint_every)
    _require(cv.durability in DURABILITY, f"collector.durability must be one of {DURABILITY}", cv.durability)
    _require(cv.rate_limit_per_s > 0 and cv.rate_limit_burst >= 1, "collector.rate_limit_* must be positive",
             (cv.rate_limit_per_s, cv.rate_limit_burst))
    _require(cv.register_rate_per_s > 0 and cv.register_burst >= 1, "collector.register_* must be positive",
             (cv.register_rate_per_s, cv.register_burst))
    _require(cv.max_retry_after_s >= sv.retry_after_s, "collector.max_retry_after_s must be >= server.retry_after_s",
             cv.max_retry_after_s)
