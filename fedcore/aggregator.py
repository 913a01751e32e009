"""The aggregation-rule interface and its registry.

An aggregator turns a round's client updates into the one delta the server optimizer steps
along, in three calls over a state the caller holds (FedJAX's init / apply style):

    state = rule.init(template)          # before the first update
    rule.add_from(state, device_id, update, weight)   # once per accepted update, in arrival order
    aggregate = rule.result(state)       # when the round closes

`rule.weight(num_examples)` is the weight an update enters with, recorded beside it. `add_from`
is `add` with the sender's device id; only a rule with `tracks_devices` (fedcore/anomaly.py:
reputation per device) uses the id, the others ignore it, so callers always pass it.

A **linear** rule is a weighted mean: its state is a `fedmath.aggregate.RunningSum` that `add`
only adds to (after a deterministic per-update transform at most, as `fedcore.dp.ServerClip`
clips), so the collector can checkpoint the sum to disk as it goes and rebuild it by replaying
the updates after a checkpoint, and secure aggregation can compute it without seeing any one
update. A **non-linear** rule (a median, a trimmed mean, Krum) needs the individual
updates until the round closes: the collector keeps their spool files and replays them into
`add` at the close.

A new rule is one module that subclasses `Aggregator` and calls `register(name, cls)`; a
config names it by that name, or as "package.module:Class" (imported on first use, so a rule
outside this repository runs under gunicorn too). Either form may end in keyword arguments for
the factory, "name:key=value,key=value" (e.g. "krum:f=2", "pkg.mod:Class:beta=0.2"): a value
reads as an int, a float, true/false, or else a string.
"""

from __future__ import annotations

import abc
import importlib
import inspect
from typing import Any, Callable, ClassVar

from fedcore.messages import Aggregate
from fedmath.types import Weights

_REGISTRY: dict[str, Callable[..., "Aggregator"]] = {}


class Aggregator(abc.ABC):
    """An aggregation rule; see the module docstring."""

    name: ClassVar[str] = ""
    linear: ClassVar[bool] = False
    tracks_devices: ClassVar[bool] = False  # add_from uses the device id (a per-device reputation)

    @abc.abstractmethod
    def weight(self, num_examples: int) -> float:
        """The weight of an update trained on `num_examples` examples (> 0)."""

    @abc.abstractmethod
    def init(self, template: Weights) -> Any:
        """An empty state for a model shaped like `template`."""

    @abc.abstractmethod
    def add(self, state: Any, update: Weights, weight: float) -> None:
        """Fold one update (not kept: copy what must outlive the call) into `state`."""

    def add_from(self, state: Any, device_id: str, update: Weights, weight: float) -> None:
        """`add` for an update sent by `device_id` (ignored unless `tracks_devices`)."""
        self.add(state, update, weight)

    @abc.abstractmethod
    def result(self, state: Any) -> Aggregate:
        """The round's aggregate. Raises ValueError if nothing was added."""

    def describe(self) -> dict:
        return {"name": self.name, "linear": self.linear}


def register(name: str, factory: Callable[..., Aggregator]) -> None:
    """Make `factory` (usually the class; its keyword arguments are the rule's parameters) buildable
    as `name`. Re-registering a name replaces it."""
    if not name or ":" in name:
        raise ValueError(f"an aggregator name must be non-empty and without ':', got {name!r}")
    _REGISTRY[name] = factory


def names() -> list[str]:
    return sorted(_REGISTRY)


def build(name: str) -> Aggregator:
    """The aggregator registered as `name`, or "package.module:Class" imported, either one
    optionally followed by ":key=value,..." keyword arguments for its factory.

    Raises:
        ValueError: an unknown name, an import path that does not name an Aggregator, or
            parameters the factory does not take or rejects.
    """
    if name in _REGISTRY:
        return _REGISTRY[name]()
    base, params = _split_params(name)
    if base in _REGISTRY:
        return _call(name, _REGISTRY[base], params)
    if ":" in base:
        module, _, attr = base.partition(":")
        try:
            factory = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"aggregator {name!r}: cannot import it ({e})") from None
        rule = _call(name, factory, params)
        if not isinstance(rule, Aggregator):
            raise ValueError(f"aggregator {name!r} built a {type(rule).__name__}, not a fedcore Aggregator")
        return rule
    raise ValueError(f"unknown aggregator {name!r}; expected one of {names()} or 'package.module:Class'")


def _split_params(name: str) -> tuple[str, dict[str, Any]]:
    """("krum", {"f": 2}) for "krum:f=2"; (name, {}) when the part after the last ':' has no '='
    (an import path's "module:Class" never does)."""
    base, sep, tail = name.rpartition(":")
    if not sep or "=" not in tail:
        return name, {}
    params: dict[str, Any] = {}
    for item in tail.split(","):
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or not key.isidentifier() or key in params:
            raise ValueError(f"aggregator {name!r}: expected parameters as key=value,key=value, each key "
                             f"once, got {item!r}")
        params[key] = _parse_value(raw.strip())
    return base, params


def _parse_value(raw: str) -> Any:
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw


def _call(name: str, factory: Callable[..., Any], params: dict[str, Any]) -> Any:
    """factory(**params); a TypeError from binding names the parameters the factory takes."""
    if not params:
        return factory()
    try:
        inspect.signature(factory).bind(**params)
    except TypeError:
        raise ValueError(f"aggregator {name!r}: {getattr(factory, '__name__', factory)!s} takes "
                         f"{_signature(factory)}, got {sorted(params)}") from None
    except ValueError:  # no signature to inspect (a builtin): let the call itself complain
        pass
    return factory(**params)


def _signature(factory: Callable[..., Any]) -> str:
    """"(f=1, m=1)": the factory's parameters and defaults, without annotations."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return "(?)"
    return "(" + ", ".join(p.name if p.default is p.empty else f"{p.name}={p.default!r}" for p in params) + ")"
