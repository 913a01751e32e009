"""The collector's settings: the run's `server`, `collector`, `privacy` and `train` sections
(configs/schema.py), the phone bundle and the state directory.

A config file (or Flask's `test_config`) is one JSON object:

    {"server": {ServerConfig fields}, "collector": {CollectorConfig fields},
     "privacy": {PrivacyConfig fields}, "train": {TrainConfig fields},
     "bundle_dir": str, "state_dir": str}

Every section is optional except the two directories; unknown keys are refused. `train` is the
algorithm: the plan's client step, the aggregation rule and the server optimizer, the same
section the TFF simulation reads.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from configs.dicts import section_from_dict
from configs.schema import CollectorConfig, PrivacyConfig, SecAggConfig, ServerConfig, TrainConfig
from fedcore.algorithm import build as build_algorithm
from fedcore.buffered import BufferedAsync, StalenessWeight
from fedcore.secure import build as build_secure
from fedcore.policy import SyncRounds

PRIVACY_MODES = ("none", "device", "central")
NORM_POLICIES = ("reject", "reclip")
DURABILITY = ("process", "power")
ATTESTATION = ("required", "off")
POLICIES = ("sync", "fedbuff")


def issuer_public_key(value: str) -> str:
    """The issuer key of `collector.attestation_public_key`: 64 hex digits, given inline or as the
    path of a file holding them. Raises ValueError naming what was wrong."""
    from fedmath import attestation

    raw = value.strip()
    if len(raw) != attestation.KEY_HEX or not all(ch in "0123456789abcdefABCDEF" for ch in raw):
        try:
            with open(raw) as f:
                raw = f.read().strip()
        except OSError as e:
            raise ValueError(f"collector.attestation_public_key must be {attestation.KEY_HEX} hex digits or a "
                             f"readable file holding them, got {value[:80]!r} ({e.strerror})") from None
    try:
        attestation.public_key(raw.lower())
    except ValueError as e:
        raise ValueError(f"collector.attestation_public_key is not an Ed25519 public key: {e}") from None
    return raw.lower()


@dataclass(frozen=True)
class Settings:
    server: ServerConfig = field(default_factory=ServerConfig)
    collector: CollectorConfig = field(default_factory=CollectorConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    secagg: SecAggConfig = field(default_factory=SecAggConfig)
    bundle_dir: str = ""
    state_dir: str = ""

    @property
    def rounds(self) -> SyncRounds:
        """The round policy (raises ValueError for impossible counts)."""
        return SyncRounds(self.server.goal_count, self.server.over_selection, self.collector.report_deadline_s,
                          self.collector.min_reports)

    @property
    def buffered(self) -> Optional[BufferedAsync]:
        """The FedBuff policy when collector.policy is "fedbuff", else None (ValueError for bad counts)."""
        cv = self.collector
        if cv.policy != "fedbuff":
            return None
        return BufferedAsync(self.server.goal_count, cv.concurrency or self.rounds.slots, cv.max_staleness,
                             StalenessWeight.parse(cv.staleness_weight))

    @property
    def slots(self) -> int:
        """Check-ins accepted per round: ceil(goal_count * over_selection)."""
        return self.rounds.slots

    @property
    def min_reports(self) -> int:
        return self.rounds.publish_at

    @property
    def max_examples(self) -> int:
        """The most examples an upload may claim (train.max_examples_per_client; 0 there = no cap)."""
        return self.train.max_examples_per_client or 2 ** 62

    @property
    def issuer_key(self) -> str:
        """The attestation issuer's public key (hex), or "" when none is configured."""
        key = self.collector.attestation_public_key
        return issuer_public_key(key) if key else ""

    @property
    def dp_noise(self) -> bool:
        """Whether updates carry DP noise (devices' or the collector's)."""
        return self.privacy.mode != "none" and self.privacy.noise_multiplier > 0


_SECTIONS = {"server": ServerConfig, "collector": CollectorConfig, "privacy": PrivacyConfig, "train": TrainConfig,
             "secagg": SecAggConfig}


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
        **{name: section_from_dict(cls, raw.get(name), name) for name, cls in _SECTIONS.items()},
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
    sv, pv, cv, tv = s.server, s.privacy, s.collector, s.train
    _require(sv.goal_count >= 1, "server.goal_count must be >= 1", sv.goal_count)
    _require(sv.over_selection >= 1.0, "server.over_selection must be >= 1.0", sv.over_selection)
    _require(tv.max_examples_per_client >= 0, "train.max_examples_per_client must be >= 0 (0 = no cap)",
             tv.max_examples_per_client)
    _require(tv.local_epochs >= 1, "train.local_epochs must be >= 1", tv.local_epochs)
    _require(tv.batch_size >= 1, "train.batch_size must be >= 1", tv.batch_size)
    _require(tv.client_learning_rate > 0, "train.client_learning_rate must be > 0", tv.client_learning_rate)
    _require(tv.client_grad_clip >= 0, "train.client_grad_clip must be >= 0", tv.client_grad_clip)
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
    _require(cv.population >= 0, "collector.population must be >= 0", cv.population)
    _require(0 <= pv.delta < 1, "privacy.delta must be in [0, 1) (0 = 1/N^1.1)", pv.delta)
    _require(cv.checkpoint_every >= 1, "collector.checkpoint_every must be >= 1", cv.checkpoint_every)
    _require(cv.durability in DURABILITY, f"collector.durability must be one of {DURABILITY}", cv.durability)
    _require(cv.rate_limit_per_s > 0 and cv.rate_limit_burst >= 1, "collector.rate_limit_* must be positive",
             (cv.rate_limit_per_s, cv.rate_limit_burst))
    _require(cv.register_rate_per_s > 0 and cv.register_burst >= 1, "collector.register_* must be positive",
             (cv.register_rate_per_s, cv.register_burst))
    _require(not (pv.mode == "central" and pv.noise_multiplier > 0 and tv.max_examples_per_client == 0),
             "central noise needs train.max_examples_per_client > 0 (it bounds the weight one update can have)",
             tv.max_examples_per_client)
    _require(cv.max_retry_after_s >= sv.retry_after_s, "collector.max_retry_after_s must be >= server.retry_after_s",
             cv.max_retry_after_s)
    _require(cv.attestation in ATTESTATION, f"collector.attestation must be one of {ATTESTATION}", cv.attestation)
    _require(cv.attestation != "required" or bool(cv.attestation_public_key),
             "collector.attestation = 'required' needs collector.attestation_public_key (the issuer's public key;"
             " `fedkeys serve` and `fedkeys devices` make a simulated issuer), or attestation = 'off'",
             cv.attestation_public_key)
    s.issuer_key  # readable and a valid key
    _require(cv.max_devices_per_attestation >= 1, "collector.max_devices_per_attestation must be >= 1",
             cv.max_devices_per_attestation)
    _require(cv.keyboard_rate_per_s > 0 and cv.keyboard_burst >= 1, "collector.keyboard_* must be positive",
             (cv.keyboard_rate_per_s, cv.keyboard_burst))
    _require(cv.token_ttl_s >= 0, "collector.token_ttl_s must be >= 0 (0 = tokens do not expire)", cv.token_ttl_s)
    s.rounds  # the round policy checks its counts
    _require(cv.policy in POLICIES, f"collector.policy must be one of {POLICIES}", cv.policy)
    _require(cv.concurrency >= 0, "collector.concurrency must be >= 0 (0 = the sync round's slots)", cv.concurrency)
    _require(cv.max_staleness >= 0, "collector.max_staleness must be >= 0", cv.max_staleness)
    StalenessWeight.parse(cv.staleness_weight)
    _require(not cv.upstream or cv.upstream.startswith(("http://", "https://")),
             "collector.upstream must be an http(s) URL of the root collector, or empty", cv.upstream)
    _require(not (cv.upstream and cv.policy != "sync"), "an edge (collector.upstream) runs policy 'sync'", cv.policy)
    _require(cv.upstream_timeout_s > 0, "collector.upstream_timeout_s must be > 0", cv.upstream_timeout_s)
    _require(not cv.database or cv.database.startswith(("postgresql://", "postgres://")),
             "collector.database must be empty (SQLite in state_dir) or a postgresql:// URL", cv.database[:80])
    # these keep their own tables with SQLite-only statements (server/buffered.py, secure_rounds.py, reputation.py)
    _require(not cv.database or (cv.policy == "sync" and not s.secagg.enabled
                                 and not s.train.aggregator.startswith("screened")),
             "collector.database (PostgreSQL) runs sync rounds without secagg or a screened rule; got policy, "
             "secagg.enabled, train.aggregator", (cv.policy, s.secagg.enabled, s.train.aggregator))
    rule = build_algorithm(s.train, dp_noise=s.dp_noise).aggregator  # the algorithm, rule and optimizer settings
    # The accountant treats a round as a Gaussian mechanism on the sum of clipped updates; a
    # non-linear rule (a median of noised updates, each carrying 1/sqrt(n) of the noise) is not
    # that, so no epsilon could honestly be reported for it.
    sa = s.secagg
    if sa.enabled:
        _require(2 <= sa.bits <= 32, "secagg.bits must be in 2..32", sa.bits)
        _require(0 <= sa.coord_bound <= pv.clip_norm, "secagg.coord_bound must be in [0, privacy.clip_norm]",
                 sa.coord_bound)
        _require(0 <= sa.dropout < 1 and 0 <= sa.corrupt < 0.5, "secagg.dropout must be in [0, 1) and "
                 "secagg.corrupt in [0, 0.5)", (sa.dropout, sa.corrupt))
        _require(sa.min_devices >= 2 and sa.stage_timeout_s > 0, "secagg.min_devices must be >= 2 and "
                 "secagg.stage_timeout_s > 0", (sa.min_devices, sa.stage_timeout_s))
        _require(cv.policy == "sync", "secure aggregation runs synchronous rounds (collector.policy 'sync'); "
                 "FedBuff's buffers are not secure rounds yet", cv.policy)
        _require(pv.mode != "central" or pv.noise_multiplier == 0, "secure aggregation takes its noise from the "
                 "devices (privacy.mode 'device' or 'none'), not central noise", pv.mode)
        _require(rule.weight(1) == 1 or tv.max_examples_per_client > 0, "secure aggregation with a rule weighted by "
                 "examples needs train.max_examples_per_client > 0 (the largest weight)", tv.max_examples_per_client)
        build_secure(rule, sa.bits, pv.clip_norm, sa.coord_bound, s.slots, 0.0,
                     rule.weight(tv.max_examples_per_client or 1))  # linear rule, and a ring that fits the cohort
    _require(not (s.dp_noise and not rule.linear),
             f"DP noise (privacy.noise_multiplier > 0) needs a linear aggregation rule; train.aggregator "
             f"{s.train.aggregator!r} is not linear", s.train.aggregator)
