"""A device's side of a secure round (Bonawitz et al. 2017, "Practical Secure Aggregation for
Privacy-Preserving Machine Learning", CCS; SecAgg+ neighbourhoods, Bell et al. 2020).

    ClientRound(identity, session, size, bits)
      advertise()            -> two X25519 public keys, signed with the device identity key
      share_keys(roster)     -> checks every neighbour's signature (and certificate), splits the
                                self-mask seed b and the mask key's secret s_sk into Shamir
                                shares, one AES-GCM message per neighbour
      masked_input(inbox, q) -> y = q + PRG(b) + sum_v +-PRG(s_uv) mod 2^b over the neighbours
                                whose shares arrived (packed bytes)
      unmask(survivors)      -> b-shares of surviving neighbours, s_sk-shares of dropped ones;
                                never both for one neighbour, and only once per round

Any check that fails raises `ProtocolAbort`: the device drops out of the round (a dropout the
server handles), it never continues with keys or shares it cannot trust.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

from fedmath import attestation
from secagg import crypto, messages, ring, shamir

PAIR_MASK = b"mask"
PAIR_SHARES = b"shares"


class ProtocolAbort(ValueError):
    """The device stops taking part in this round; the message says why."""


class ClientRound:
    """One device in one secure round; methods must be called in stage order."""

    def __init__(self, identity: attestation.DeviceIdentity, session: bytes, size: int, bits: int,
                 issuer_public: Optional[str] = None, min_threshold: int = 2) -> None:
        self.identity = identity
        self.session = session
        self.size = size
        self.bits = bits
        self.issuer = attestation.public_key(issuer_public) if issuer_public else None
        self.min_threshold = min_threshold
        self._cipher = crypto.new_key()
        self._mask = crypto.new_key()
        self._seed = os.urandom(crypto.KEY_BYTES)
        self.stage = "advertise"
        self.index = 0
        self.threshold = 0
        self.neighbours: dict[int, messages.Entry] = {}  # checked roster entries by index
        self._received: dict[int, tuple[bytes, bytes]] = {}
        self._unmask_answer: Optional[tuple[tuple, bytes]] = None

    # -- stage 0 -----------------------------------------------------------------------------------
    def advertise(self) -> dict:
        c_pk, s_pk = crypto.public_bytes(self._cipher), crypto.public_bytes(self._mask)
        sig = self.identity.sign(crypto.advertise_message(self.session, self.identity.device_id, c_pk, s_pk))
        cert = self.identity.certificate.to_json() if self.identity.certificate is not None else None
        self.stage = "share"
        return {"cipher_key": messages.b64(c_pk), "mask_key": messages.b64(s_pk), "signature": sig,
                "certificate": cert}

    # -- stage 1 -----------------------------------------------------------------------------------
    def share_keys(self, roster: Any) -> bytes:
        """The shares message (secagg/messages.py) for the server's roster."""
        self._expect("share")
        try:
            index, t, entries = messages.parse_roster(roster)
        except messages.Refusal as e:
            raise ProtocolAbort(f"roster: {e.detail}") from None
        neighbours = {e.index: self._check_neighbour(e) for e in entries}
        k = len(neighbours)
        if index in neighbours:
            raise ProtocolAbort("roster lists this device among its neighbours")
        if not (t > k // 2 and t >= min(self.min_threshold, k) and t <= k):
            raise ProtocolAbort(f"threshold {t} is unsafe for {k} neighbours (needs k/2 < t <= k, t >= "
                                f"{self.min_threshold})")
        self.index, self.threshold, self.neighbours = index, t, neighbours
        xs = sorted(neighbours)
        seed_shares = shamir.split(self._seed, xs, t)
        key_shares = shamir.split(crypto.secret_bytes(self._mask), xs, t)
        out = []
        for x, bs, ks in zip(xs, seed_shares, key_shares):
            key = crypto.agree(self._cipher, neighbours[x].cipher_key, self.session, PAIR_SHARES, index, x)
            plain = messages.share_plaintext(index, x, bs, ks)
            out.append(crypto.encrypt(key, plain, crypto.share_aad(self.session, index, x)))
        self.stage = "masked"
        return b"".join(out)

    def _check_neighbour(self, e: messages.Entry) -> messages.Entry:
        try:
            if self.issuer is not None:  # the certificate names the entry's own id and key
                cert = attestation.Certificate.from_json(e.certificate())
                cert.verify(self.issuer)
            attestation.public_key(e.identity_key.hex()).verify(
                e.signature, crypto.advertise_message(self.session, e.device_id, e.cipher_key, e.mask_key))
        except Exception as err:  # InvalidSignature, AttestationError, a malformed key
            raise ProtocolAbort(f"neighbour {e.index}'s keys are not signed by its device key, or its certificate "
                                f"does not verify ({err!r})") from None
        return e

    # -- stage 2 -----------------------------------------------------------------------------------
    def masked_input(self, inbox: Any, quantized: np.ndarray) -> bytes:
        """The packed masked vector for `quantized` (uint32 values in Z_(2^b), ring.quantize)."""
        self._expect("masked")
        try:
            got = messages.parse_inbox(inbox, set(self.neighbours))
        except messages.Refusal as e:
            raise ProtocolAbort(f"inbox: {e.detail}") from None
        if len(got) < self.threshold:
            raise ProtocolAbort(f"only {len(got)} neighbours shared keys, fewer than the threshold {self.threshold}")
        for v, message in got.items():
            key = crypto.agree(self._cipher, self.neighbours[v].cipher_key, self.session, PAIR_SHARES,
                               self.index, v)
            try:
                plain = crypto.decrypt(key, message, crypto.share_aad(self.session, v, self.index))
                self._received[v] = messages.parse_share_plaintext(plain, v, self.index)
            except crypto.ShareDecryptError as err:
                raise ProtocolAbort(f"share from neighbour {v}: {err}") from None
        if quantized.shape != (self.size,) or quantized.dtype != np.uint32:
            raise ValueError(f"expected {self.size} uint32 ring values, got {quantized.dtype} {quantized.shape}")
        masks = [(self._seed, 1)]
        for v in sorted(self._received):
            pair = crypto.agree(self._mask, self.neighbours[v].mask_key, self.session, PAIR_MASK, self.index, v)
            masks.append((pair, 1 if self.index < v else -1))
        y = quantized.copy()
        crypto.apply_masks(y, masks, self.bits)
        self.stage = "unmask"
        return ring.pack(y, self.bits)

    # -- stage 3 -----------------------------------------------------------------------------------
    def unmask(self, survivors: Any) -> bytes:
        """Shares for the server's survivor list; the same list again gets the same answer, another
        list is refused (answering two lists could reveal both secrets of one neighbour)."""
        try:
            body = messages.fields(survivors, {"survivors", "dropped"}, "survivors")
            alive = messages.index_list(body["survivors"], "survivors")
            dropped = messages.index_list(body["dropped"], "dropped")
        except messages.Refusal as e:
            raise ProtocolAbort(f"survivors: {e.detail}") from None
        asked = (tuple(sorted(alive)), tuple(sorted(dropped)))
        if self._unmask_answer is not None:
            if self._unmask_answer[0] != asked:
                raise ProtocolAbort("the server asked to unmask a second, different survivor list")
            return self._unmask_answer[1]
        self._expect("unmask")
        if set(alive) & set(dropped):
            raise ProtocolAbort("a neighbour is listed both as survivor and as dropped")
        if not set(alive) | set(dropped) <= set(self._received) | {self.index}:
            raise ProtocolAbort("the survivor list names devices whose shares this device never received")
        if self.index not in alive or set(self._received) - set(alive) - set(dropped):
            raise ProtocolAbort("the survivor list must name this device and every neighbour that shared keys")
        if len(set(alive) - {self.index}) < self.threshold:
            raise ProtocolAbort(f"only {len(alive) - 1} surviving neighbours, fewer than the threshold {self.threshold}")
        answer = messages.pack_unmask([self._received[v][0] for v in sorted(alive) if v != self.index],
                                      [self._received[v][1] for v in sorted(dropped)])
        self._unmask_answer = (asked, answer)
        self.stage = "done"
        return answer

    def _expect(self, stage: str) -> None:
        if self.stage != stage:
            raise ProtocolAbort(f"stage {stage!r} called while at {self.stage!r}")
