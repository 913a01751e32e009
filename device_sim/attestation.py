"""The platform's attestation service for a simulated fleet (fedmath/attestation.py).

A run whose collector requires attestation (`collector.attestation = "required"`, the default)
needs an issuer: `issuer_for_run` makes one (or loads the one a running collector trusts), puts
its PUBLIC key into the collector's config and hands back the issuer, from which each phone's
transport gets a certificate for its own device key (`transports(issuer)`). A `Keystore` keeps
each device id's key for the run, as a phone keeps its key in hardware: a second registration
of the same id (a token refresh, the fleet's probe in a later call) proves the same key.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Callable
from typing import Optional

from configs.schema import RunConfig
from device_sim.transport import Transport
from fedmath.attestation import DeviceIdentity, Issuer


def issuer_for_run(cfg: RunConfig, key_path: Optional[str] = None,
                   save_to: Optional[str] = None) -> tuple[RunConfig, Optional[Issuer]]:
    """(cfg with the issuer's public key in its collector section, the issuer); (cfg, None) when
    the collector does not require attestation.

    Args:
        key_path: the issuer's secret key (as `Issuer.save` writes it): the issuer of a collector
            already running (`fedkeys serve` writes it). None: a new issuer for this run.
        save_to: where to write a new issuer's secret key (so that another fleet can join).
    Raises:
        ValueError when the config names an issuer public key but no secret key is given, or the
        secret key is not that issuer's.
    """
    from server.settings import issuer_public_key

    cv = cfg.collector
    if cv.attestation != "required":
        return cfg, None
    configured = issuer_public_key(cv.attestation_public_key) if cv.attestation_public_key else ""
    if key_path:
        issuer = Issuer.load(key_path)
    elif configured:
        raise ValueError(f"the collector trusts the attestation issuer {configured[:16]}...; phones need that "
                         f"issuer's secret key for their certificates (--issuer-key PATH)")
    else:
        issuer = Issuer.generate()
        if save_to:
            issuer.save(save_to)
    if configured and configured != issuer.public_hex:
        raise ValueError(f"the issuer key {key_path} is {issuer.public_hex[:16]}..., but the collector trusts "
                         f"{configured[:16]}...")
    return dataclasses.replace(cfg, collector=dataclasses.replace(cv, attestation_public_key=issuer.public_hex)), issuer


class Keystore:
    """The device keys of a simulated fleet, one per device id, certified by `issuer` when made."""

    def __init__(self, issuer: Optional[Issuer]) -> None:
        self.issuer = issuer
        self._keys: dict[str, DeviceIdentity] = {}
        self._lock = threading.Lock()

    def identity(self, device_id: str) -> DeviceIdentity:
        with self._lock:
            if device_id not in self._keys:
                self._keys[device_id] = DeviceIdentity.create(device_id, self.issuer)
            return self._keys[device_id]


def transports(issuer: Optional[Issuer], keystore: Optional[Keystore] = None) -> Callable[[str], Transport]:
    """A transport factory (URL -> Transport) whose phones prove keys certified by `issuer` and
    check their secure-round neighbours' certificates against it (plain registration when
    `issuer` is None: a collector without attestation)."""
    if issuer is None and keystore is None:
        return Transport
    keys = keystore or Keystore(issuer)
    root = keys.issuer.public_hex if keys.issuer is not None else None
    return functools.partial(Transport, identities=keys.identity, issuer_public=root)
