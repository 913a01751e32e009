"""The server's side of a secure round: it relays keys and encrypted shares, sums the masked
vectors, and removes the masks with the shares the survivors return (Bonawitz et al. 2017,
Figure 4, on the SecAgg+ neighbour graph of Bell et al. 2020).

    stage       devices send               closes with (U_i: devices that answered it)
    advertise   two signed public keys     U1: sorted ids get indices 1..n; graph.choose picks
                                           (k, t) for n and the expected dropout; the Harary
                                           graph's ordering comes from the round's secret seed
    share       one AES-GCM message per    U2 (a message must cover exactly the roster's
                neighbour                  neighbours); each device's inbox: what U2 sent it
    masked      the packed masked vector   U3; the masked vectors are summed mod 2^b as they come
    unmask      seed shares of surviving,  U5; every v in U3 needs t seed shares from its
                key shares of dropped      neighbours, every v in U2 - U3 t key shares;
                neighbours                 otherwise the round is abandoned, saying which

The result is sum_{U3} (q_v) mod 2^b: the masked sum minus each survivor's self mask minus the
pairwise masks survivors added towards devices that dropped after sharing.

Every method is deterministic given the messages and the seed, so a collector that restarts
rebuilds the round by replaying its stored messages in order. A message sent again unchanged is
answered as the first time; a different one for a stage already answered is refused.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Callable, Container, Optional

import numpy as np

from fedcore.messages import Refusal
from fedmath import attestation
from secagg import client as client_mod
from secagg import crypto, graph, messages, ring, shamir

STAGES = ("advertise", "share", "masked", "unmask", "done", "abandoned")


def canonical(body: Any) -> bytes:
    """A JSON message's one byte form (sorted keys, no spaces): what is logged and digested."""
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def digest(body: Any) -> str:
    """sha256 of a binary message, or of a JSON message's canonical form."""
    raw = body if isinstance(body, (bytes, bytearray, memoryview)) else canonical(body)
    return hashlib.sha256(raw).hexdigest()


class ServerRound:
    """One secure round on the server (module docstring). `identity_key(device_id)` returns the
    device key (hex) the collector registered for an id, or None (then the advertised keys are
    refused)."""

    def __init__(self, session: bytes, size: int, bits: int, graph_seed: int, dropout: float,
                 identity_key: Callable[[str], Optional[str]], corrupt: float = 0.05, min_devices: int = 3,
                 security_bits: float = 40.0, correctness_bits: float = 20.0,
                 issuer_public: Optional[str] = None) -> None:
        if size < 1 or not 2 <= bits <= 32 or min_devices < 2:
            raise ValueError(f"need size >= 1, 2 <= bits <= 32, min_devices >= 2; got {size}, {bits}, {min_devices}")
        self.session, self.size, self.bits, self.seed = session, size, bits, graph_seed
        self.dropout, self.corrupt, self.min_devices = dropout, corrupt, min_devices
        self.security_bits, self.correctness_bits = security_bits, correctness_bits
        self.identity_key = identity_key
        # with an issuer, every device checks its neighbours' certificates (secagg/client.py): one
        # that would fail them all is refused here, at advertising, not left to abort k neighbours
        self.issuer = attestation.public_key(issuer_public) if issuer_public else None
        self.stage = "advertise"
        self.note = ""
        self.params: Optional[graph.Parameters] = None
        self._digests: dict[tuple[str, str], str] = {}
        self.advertised: dict[str, dict] = {}
        self.index: dict[str, int] = {}
        self.ids: dict[int, str] = {}
        self.nbrs: dict[int, list[int]] = {}
        self._entries: dict[int, bytes] = {}  # index -> its packed roster entry (`_entry`)
        self.mail: dict[int, dict[int, bytes]] = {}  # receiver -> sender -> AES-GCM share message
        self.u2: set[int] = set()
        self.u3: set[int] = set()
        self.masked_sum = np.zeros(size, np.uint32)  # mod 2^32, read mod 2^b (2^b divides 2^32)
        self.unmasks: dict[int, tuple[dict[int, bytes], dict[int, bytes]]] = {}
        self.result: Optional[np.ndarray] = None

    # -- helpers --------------------------------------------------------------------------------
    def _open(self, stage: str, device_id: str, body_digest: str) -> Optional[dict]:
        """None when the body of digest `body_digest` is new for this device and stage; the first
        answer when it repeats."""
        seen = self._digests.get((stage, device_id))
        if seen is not None:
            if seen == body_digest:
                return {"accepted": True, "repeat": True}
            raise Refusal("duplicate", f"device already sent a different {stage} message this round")
        if self.stage != stage:
            raise Refusal("secagg_stage", f"the round is at stage {self.stage!r}, not {stage!r}")
        return None

    def _member(self, device_id: str, members: Container[int], what: str) -> int:
        if self.stage == "abandoned":
            raise Refusal("round_closed", f"the secure round was abandoned: {self.note}")
        i = self.index.get(device_id)
        if i is None or i not in members:
            raise Refusal("not_selected", f"device is not among the devices that {what}")
        return i

    def abandon(self, reason: str) -> None:
        self.stage, self.note = "abandoned", reason
        self.masked_sum = np.zeros(0, np.uint32)

    # -- stage 0: advertise -------------------------------------------------------------------
    def advertise(self, device_id: str, body: Any, body_digest: str = "") -> dict:
        body_digest = body_digest or digest(body)
        repeat = self._open("advertise", device_id, body_digest)
        if repeat is not None:
            return repeat
        b = messages.fields(body, {"cipher_key", "mask_key", "signature", "certificate"}, "advertise")
        c_pk = messages.unb64(b["cipher_key"], 32, "cipher_key")
        s_pk = messages.unb64(b["mask_key"], 32, "mask_key")
        key = self.identity_key(device_id)
        if key is None:
            raise Refusal("bad_signature", "secure aggregation needs a device registered with a device key")
        identity = bytes.fromhex(key)
        cert = None
        if b["certificate"] is not None:  # the roster carries it without repeating the id and key
            try:
                cert = attestation.Certificate.from_json(b["certificate"])
            except attestation.AttestationError as e:
                raise Refusal("bad_secagg", f"certificate: {e}") from None
            if cert.device_id != device_id or cert.public_key != identity.hex():
                raise Refusal("bad_secagg", "the certificate must name this device's id and its key, in lower-case "
                                            "hex (neighbours rebuild it from the roster's id and key bytes)")
        if self.issuer is not None:
            try:
                if cert is None:
                    raise attestation.AttestationError("no certificate came with the keys")
                cert.verify(self.issuer)
            except attestation.AttestationError as e:
                raise Refusal("bad_signature", f"neighbours check every certificate against the issuer: {e}") from None
        try:
            sig = attestation._hex(b["signature"], attestation.SIG_HEX, "signature")
            attestation.public_key(key).verify(sig, crypto.advertise_message(self.session, device_id, c_pk, s_pk))
        except Exception:
            raise Refusal("bad_signature", "the advertised keys are not signed by this device's key") from None
        self.advertised[device_id] = {"cipher_key": c_pk, "mask_key": s_pk, "signature": sig, "certificate": cert,
                                      "identity_key": identity}
        self._digests[("advertise", device_id)] = body_digest
        return {"accepted": True}

    def close_advertise(self) -> None:
        if self.stage != "advertise":
            return
        n = len(self.advertised)
        if n < self.min_devices:
            return self.abandon(f"only {n} devices advertised keys, fewer than the {self.min_devices} needed")
        self.params = graph.choose(n, self.dropout, self.corrupt, self.security_bits, self.correctness_bits)
        for i, d in enumerate(sorted(self.advertised), start=1):
            self.index[d], self.ids[i] = i, d
        for i, near in enumerate(graph.neighbours(n, self.params.degree, self.seed), start=1):
            self.nbrs[i] = [j + 1 for j in near]
        self.stage = "share"

    def _roster_of(self, device_id: str) -> int:
        if self.stage in ("advertise",):
            raise Refusal("secagg_wait", "the key advertising stage is still open")
        i = self._member(device_id, self.ids, "advertised keys")
        assert self.params is not None
        return i

    def _entry(self, j: int) -> bytes:
        """Neighbour j's roster entry, packed once for the round (it goes into k rosters)."""
        part = self._entries.get(j)
        if part is None:
            a = self.advertised[self.ids[j]]
            cert = a["certificate"]
            own = () if cert is None else (cert.attestation_id, cert.issued_unix, bytes.fromhex(cert.signature))
            part = self._entries[j] = messages.Entry(j, self.ids[j], a["identity_key"], a["cipher_key"],
                                                     a["mask_key"], a["signature"], *own).pack()
        return part

    def roster(self, device_id: str) -> bytes:
        """The device's roster (secagg/messages.py): its index, the threshold, its neighbours."""
        i = self._roster_of(device_id)
        return messages.pack_roster(i, self.params.threshold, [self._entry(j) for j in sorted(self.nbrs[i])])

    # -- stage 1: share keys ------------------------------------------------------------------
    def share(self, device_id: str, body: Any, body_digest: str = "") -> dict:
        body_digest = body_digest or digest(body)
        repeat = self._open("share", device_id, body_digest)
        if repeat is not None:
            return repeat
        i = self._member(device_id, self.ids, "advertised keys")
        near = sorted(self.nbrs[i])
        for j, message in zip(near, messages.parse_shares(body, len(near))):
            self.mail.setdefault(j, {})[i] = message
        self.u2.add(i)
        self._digests[("share", device_id)] = body_digest
        return {"accepted": True}

    def close_share(self) -> None:
        if self.stage != "share":
            return
        if len(self.u2) < self.min_devices:
            return self.abandon(f"only {len(self.u2)} devices shared keys, fewer than the {self.min_devices} needed")
        self.stage = "masked"

    def inbox(self, device_id: str) -> bytes:
        """The shares sent to the device by neighbours that finished sharing (secagg/messages.py)."""
        if self.stage in ("advertise", "share"):
            raise Refusal("secagg_wait", "the key sharing stage is still open")
        i = self._member(device_id, self.u2, "shared keys")
        mail = self.mail.get(i, {})
        return messages.pack_inbox({j: m for j, m in mail.items() if j in self.u2})

    # -- stage 2: masked input ----------------------------------------------------------------
    def masked(self, device_id: str, payload: bytes | memoryview, body_digest: str = "") -> dict:
        body_digest = body_digest or digest(payload)
        repeat = self._open("masked", device_id, body_digest)
        if repeat is not None:
            return repeat
        i = self._member(device_id, self.u2, "shared keys")
        try:  # added mod 2^32 straight from the packed bytes; read mod 2^b once, at the end
            ring.add_packed(self.masked_sum, payload, self.bits)
        except ValueError as e:
            raise Refusal("bad_payload", str(e)) from None
        self.u3.add(i)
        self._digests[("masked", device_id)] = body_digest
        return {"accepted": True}

    def close_masked(self) -> None:
        if self.stage != "masked":
            return
        if len(self.u3) < self.min_devices:
            return self.abandon(f"only {len(self.u3)} masked vectors arrived, fewer than the {self.min_devices} needed")
        self.stage = "unmask"

    def survivors(self, device_id: str) -> dict:
        if self.stage in ("advertise", "share", "masked"):
            raise Refusal("secagg_wait", "the masked input stage is still open")
        i = self._member(device_id, self.u3, "uploaded masked vectors")
        near = [j for j in self.nbrs[i] if j in self.u2]
        return {"survivors": sorted([i] + [j for j in near if j in self.u3]),
                "dropped": [j for j in near if j not in self.u3]}

    # -- stage 3: unmask ----------------------------------------------------------------------
    def unmask(self, device_id: str, body: Any, body_digest: str = "") -> dict:
        body_digest = body_digest or digest(body)
        repeat = self._open("unmask", device_id, body_digest)
        if repeat is not None:
            return repeat
        i = self._member(device_id, self.u3, "uploaded masked vectors")
        asked = self.survivors(device_id)
        self.unmasks[i] = messages.parse_unmask(body, set(asked["survivors"]) - {i}, asked["dropped"])
        self._digests[("unmask", device_id)] = body_digest
        return {"accepted": True}

    def _shares(self, v: int, kind: int, t: int) -> list[shamir.Share]:
        """The first t shares of device v's self-mask seed (kind 0) or mask key (kind 1) that its
        neighbours returned, in the roster's order (all of them when fewer than t came back)."""
        shares = []
        for r in self.nbrs[v]:
            answer = self.unmasks.get(r)
            if answer is not None and v in answer[kind]:
                shares.append(shamir.Share(r, int.from_bytes(answer[kind][v], "big")))
                if len(shares) == t:
                    break
        return shares

    def close_unmask(self) -> None:
        """Recover the sum, or abandon the round naming the first secret short of shares.

        Every secret is recovered and checked before any mask is expanded; the masks are then
        removed together (`crypto.apply_masks`), so a round abandoned here expands nothing.
        """
        if self.stage != "unmask":
            return
        assert self.params is not None
        t = self.params.threshold
        masks: list[tuple[bytes, int]] = []  # (seed, sign) of every mask to remove from the sum
        for v in sorted(self.u3):
            shares = self._shares(v, 0, t)
            if len(shares) < t:
                return self.abandon(f"device {v}'s self mask: {len(shares)} of its neighbours answered the "
                                    f"unmasking stage, fewer than the threshold {t}")
            masks.append((shamir.combine(shares, t), -1))  # the b-bit mask plus a multiple of 2^b
        for v in sorted(self.u2 - self.u3):
            shares = self._shares(v, 1, t)
            if len(shares) < t:
                return self.abandon(f"dropped device {v}'s mask key: {len(shares)} shares came back, fewer than "
                                    f"the threshold {t}")
            secret = shamir.combine(shares, t)
            try:
                ok = crypto.public_bytes(crypto.key_from_secret(secret)) == self.advertised[self.ids[v]]["mask_key"]
            except ValueError:
                ok = False
            if not ok:
                return self.abandon(f"dropped device {v}'s key shares do not rebuild the key it advertised")
            for u in self.nbrs[v]:
                if u not in self.u3:
                    continue
                pair = crypto.agree(secret, self.advertised[self.ids[u]]["mask_key"], self.session,
                                    client_mod.PAIR_MASK, u, v)
                masks.append((pair, -1 if u < v else 1))
        total = self.masked_sum.copy()
        crypto.apply_masks(total, masks, self.bits)  # mod 2^32 throughout, reduced mod 2^b at its end
        self.result = total
        self.stage = "done"
        self.note = f"summed {len(self.u3)} masked vectors ({len(self.u2) - len(self.u3)} dropped after sharing)"

    def all_answered(self) -> bool:
        """True when no device can still answer the open stage (`waiting_on` is empty), counted
        rather than listed: the collector asks after every message."""
        if self.stage == "advertise":
            return True
        # each stage's answers come only from its members (`_member`), so equal counts mean all
        members = {"share": len(self.ids), "masked": len(self.u2), "unmask": len(self.u3)}.get(self.stage, 0)
        done = {"share": len(self.u2), "masked": len(self.u3), "unmask": len(self.unmasks)}.get(self.stage, 0)
        return done >= members

    def waiting_on(self) -> set[str]:
        """Devices that may still answer the open stage (the stage can close once this is empty)."""
        if self.stage == "advertise":
            return set()
        members = {"share": set(self.ids), "masked": self.u2, "unmask": self.u3}.get(self.stage, set())
        done = {"share": self.u2, "masked": self.u3, "unmask": set(self.unmasks)}.get(self.stage, set())
        return {self.ids[i] for i in members - done}

    def close_stage(self) -> None:
        {"advertise": self.close_advertise, "share": self.close_share, "masked": self.close_masked,
         "unmask": self.close_unmask}.get(self.stage, lambda: None)()
