"""When a simulated phone may train: one availability model shared by TFF selection and device_sim.

A generative diurnal model in the spirit of Bonawitz et al. 2019 ("Towards Federated Learning
at Scale", section 2): a device is eligible only while it is idle, charging and on an unmetered
network, has at least `min_ram_gb` of RAM and holds enough examples. Each device has a fixed
profile drawn from (seed, device id): a time zone, a nightly sleep window during which it sits
idle on the charger, whether that happens on home Wi-Fi, RAM, relative compute speed, link
bandwidths and latency and a per-round dropout chance. Outside the sleep window each simulated
hour independently draws idle / charging / unmetered with small daytime probabilities, so a few
devices are eligible by day and most at night (the day/night swing Gboard sees).

Everything is a pure function of (seed, device id, simulated time): TFF's selection and the phone
fleet ask the same question and get the same answer. No TensorFlow, no clock.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

SECONDS_PER_HOUR = 3600.0
SECONDS_PER_DAY = 86400.0


@dataclass(frozen=True)
class AvailabilityModel:
    """Parameters of the generative model (defaults give roughly 5% eligible by day, 45% at night)."""

    tz_spread_h: float = 3.0  # time zones uniform in [-spread, +spread] hours around UTC
    sleep_start_mean_h: float = 23.0  # local hour the nightly charge usually starts
    sleep_start_sd_h: float = 1.5
    sleep_len_mean_h: float = 7.5  # hours idle on the charger at night
    sleep_len_sd_h: float = 1.0
    p_charges_at_night: float = 0.8  # share of devices that charge overnight
    p_home_wifi: float = 0.75  # share whose overnight network is unmetered
    p_idle_day: float = 0.25  # per daytime hour: idle
    p_charging_day: float = 0.2  # per daytime hour: on a charger
    p_unmetered_day: float = 0.5  # per daytime hour: on Wi-Fi
    ram_gb_choices: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0)
    ram_gb_probs: tuple[float, ...] = (0.05, 0.15, 0.25, 0.25, 0.2, 0.1)
    min_ram_gb: float = 2.0  # eligibility: at least this much RAM (Bonawitz 2019)
    speed_log_sd: float = 0.5  # relative compute speed ~ lognormal(0, sd)
    dropout_mean: float = 0.08  # mean per-round chance of dropping out (6-10% in Bonawitz 2019)


@dataclass(frozen=True)
class DeviceProfile:
    """Fixed traits of one device (drawn once from (seed, device id))."""

    device_id: str
    tz_offset_h: float
    sleep_start_h: float  # local hour in [0, 24)
    sleep_len_h: float
    charges_at_night: bool
    home_wifi: bool
    ram_gb: float
    speed: float  # relative compute speed (1.0 = median phone)
    up_kbps: float
    down_kbps: float
    latency_ms: float
    dropout_prob: float  # chance of dropping out of a round it was selected for


@dataclass(frozen=True)
class DeviceState:
    """Conditions of one device at one simulated instant."""

    idle: bool
    charging: bool
    unmetered: bool

    @property
    def ok(self) -> bool:
        return self.idle and self.charging and self.unmetered


def _key(device_id: str) -> int:
    return int.from_bytes(hashlib.sha256(device_id.encode("utf-8")).digest()[:8], "little")


def _rng(seed: int, device_id: str, *extra: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, _key(device_id), *[int(e) for e in extra]])


def device_profile(device_id: str, seed: int = 0, model: AvailabilityModel = AvailabilityModel()) -> DeviceProfile:
    """The fixed profile of `device_id` under `seed` (same inputs, same profile)."""
    r = _rng(seed, device_id, 0)
    tz = float(r.uniform(-model.tz_spread_h, model.tz_spread_h))
    start = float(r.normal(model.sleep_start_mean_h, model.sleep_start_sd_h)) % 24.0
    length = float(np.clip(r.normal(model.sleep_len_mean_h, model.sleep_len_sd_h), 2.0, 12.0))
    charges = bool(r.random() < model.p_charges_at_night)
    wifi = bool(r.random() < model.p_home_wifi)
    probs = np.asarray(model.ram_gb_probs, dtype=np.float64)
    ram = float(r.choice(np.asarray(model.ram_gb_choices), p=probs / probs.sum()))
    speed = float(math.exp(r.normal(0.0, model.speed_log_sd)))
    up = float(r.lognormal(math.log(2000.0), 0.7))  # kbit/s
    down = float(r.lognormal(math.log(10000.0), 0.7))
    latency = float(r.lognormal(math.log(60.0), 0.5))
    drop = float(np.clip(r.beta(2.0, 2.0 / max(model.dropout_mean, 1e-6) - 2.0), 0.0, 0.9)) \
        if model.dropout_mean > 0 else 0.0
    return DeviceProfile(device_id, tz, start, length, charges, wifi, ram, speed, up, down, latency, drop)


def local_hour(profile: DeviceProfile, t_s: float) -> float:
    """Local time of day in hours [0, 24) at simulated time `t_s` (seconds since the epoch)."""
    return (t_s / SECONDS_PER_HOUR + profile.tz_offset_h) % 24.0


def asleep(profile: DeviceProfile, t_s: float) -> bool:
    """Inside the nightly window (which may wrap past midnight)."""
    h = local_hour(profile, t_s)
    return ((h - profile.sleep_start_h) % 24.0) < profile.sleep_len_h


def device_state(profile: DeviceProfile, t_s: float, seed: int = 0,
                 model: AvailabilityModel = AvailabilityModel()) -> DeviceState:
    """Idle / charging / unmetered at `t_s`: fixed by night, drawn per simulated hour by day."""
    if asleep(profile, t_s):
        return DeviceState(idle=True, charging=profile.charges_at_night, unmetered=profile.home_wifi)
    hour_index = int(math.floor(t_s / SECONDS_PER_HOUR))
    u = _rng(seed, profile.device_id, 1, hour_index).random(3)
    return DeviceState(idle=bool(u[0] < model.p_idle_day), charging=bool(u[1] < model.p_charging_day),
                       unmetered=bool(u[2] < model.p_unmetered_day))


def is_eligible(profile: DeviceProfile, t_s: float, num_examples: int, seed: int = 0,
                model: AvailabilityModel = AvailabilityModel(), min_examples: int = 1) -> bool:
    """Idle, charging, unmetered, enough RAM and at least `min_examples` examples at `t_s`."""
    if num_examples < min_examples or profile.ram_gb < model.min_ram_gb:
        return False
    return device_state(profile, t_s, seed, model).ok


def eligible_devices(device_ids: Sequence[str], t_s: float, example_counts: Mapping[str, int],
                     seed: int = 0, model: AvailabilityModel = AvailabilityModel(),
                     min_examples: int = 1) -> list[str]:
    """The ids in `device_ids` (order kept) that are eligible at `t_s`."""
    return [d for d in device_ids
            if is_eligible(device_profile(d, seed, model), t_s, int(example_counts.get(d, 0)),
                           seed, model, min_examples)]


def drops_out(profile: DeviceProfile, round_num: int, seed: int = 0, rate: float | None = None) -> bool:
    """Whether the device abandons round `round_num` after being selected.

    `rate` overrides the profile's own dropout chance (a fleet-wide configured fraction).
    """
    p = profile.dropout_prob if rate is None else rate
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout rate must be in [0, 1], got {p!r}")
    return bool(_rng(seed, profile.device_id, 2, round_num).random() < p)


def eligible_fraction(device_ids: Iterable[str], hours: Sequence[float], seed: int = 0,
                      model: AvailabilityModel = AvailabilityModel()) -> list[float]:
    """Share of `device_ids` eligible (ignoring data size) at each UTC hour in `hours` (for plots)."""
    ids = list(device_ids)
    profiles = [device_profile(d, seed, model) for d in ids]
    out = []
    for h in hours:
        t = h * SECONDS_PER_HOUR
        out.append(sum(p.ram_gb >= model.min_ram_gb and device_state(p, t, seed, model).ok
                       for p in profiles) / max(len(ids), 1))
    return out
