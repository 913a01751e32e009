"""One simulated phone: its user's examples, a TFLite model, and one training session per call.

A session follows the Gboard protocol (Bonawitz et al. 2019, "Towards Federated Learning at
Scale"; Hard et al. 2018, "Federated Learning for Mobile Keyboard Prediction"):

    check in (idle, charging, unmetered, num_examples)   -> not selected: come back later
      | selected: plan
    download weights of plan.model_version  (cached by version, ETag / If-None-Match)
    download trainable.tflite               (once per phone)
    train: local_epochs passes over the first max_examples rows, in order, static batches
    delta  = trained - downloaded
    delta += residual                       (error feedback: top-k encodings, unless told otherwise)
    delta  = clip(delta, C) + N(0, noise_std^2)
    payload = encode(delta), decoded no longer than max(C, ||delta||); residual = delta - decode(payload)
    upload fedmath.wire.pack(header, payload)

Clipping, noise, encodings and the wire format are the shared `fedmath` kernels; the transport
only moves bytes. A phone that drops out or misses its deadline uploads nothing: it is an
`Outcome`, not an exception.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from data.sequences import batches
from device_sim.transport import Plan, Transport, TransportError
from fedmath import encodings, privacy, wire
from fedmath.error_feedback import ErrorFeedback
from fedmath.types import Weights

# Outcome statuses
ACCEPTED = "accepted"  # the server took the update
REJECTED = "rejected"  # the server refused it (4xx; see Outcome.error)
DROPPED = "dropped"  # the phone left mid-session (no upload)
LATE = "late"  # would finish after the round's deadline: abandoned before upload (straggler)
NOT_SELECTED = "not_selected"  # checked in, told to come back later
INELIGIBLE = "ineligible"  # not idle/charging/unmetered, or no data: did not check in
FAILED = "failed"  # transport or runtime failure after retries

TFLITE_FILE = "trainable.tflite"


class TrainableModel(Protocol):
    """What a phone needs from `tflite_export.runtime.TFLiteModel`."""

    def set_weights(self, weights: Sequence[np.ndarray]) -> None: ...
    def get_weights(self) -> list[np.ndarray]: ...
    def train_step(self, x: np.ndarray, y: np.ndarray, lr: float, clip: float = 0.0) -> float: ...


ModelFactory = Callable[[str], TrainableModel]  # path of trainable.tflite -> model


@dataclass(frozen=True)
class Conditions:
    """What the phone reports at check-in (fedmath.availability.DeviceState has the same fields)."""

    idle: bool = True
    charging: bool = True
    unmetered: bool = True

    @property
    def ok(self) -> bool:
        return self.idle and self.charging and self.unmetered


@dataclass(frozen=True)
class Fate:
    """What the simulated world does to a session once its plan is known.

    drop_after_steps: leave after this many training steps (0 = before training); None = stay.
    late: the simulated session would end after the plan's deadline, so the phone gives up
        before uploading (the server would not count it anyway).
    """

    drop_after_steps: int | None = None
    late: bool = False


FateFn = Callable[[Plan, int, int], Fate]  # (plan, training steps, examples) -> Fate


@dataclass
class Outcome:
    """One session of one phone: what happened and what it cost."""

    device_id: str
    status: str
    round: int | None = None
    model_version: int | None = None
    num_examples: int = 0  # real (unpadded) rows trained on
    steps: int = 0  # train_step calls made
    loss: float | None = None  # mean training loss over the steps made
    update_norm: float | None = None  # L2 norm of the delta (after error feedback) before clipping
    bytes_up: int = 0
    bytes_down: int = 0
    encoding: str = ""
    payload_bytes: int = 0
    round_complete: bool = False
    retry_after: float | None = None
    error: str = ""  # server error code, or the exception's class
    detail: str = ""
    train_s: float = 0.0  # wall time training
    wall_s: float = 0.0  # wall time of the whole session


class DeviceStore:
    """What a simulated phone keeps on "disk": the bundle file and downloaded weights.

    The simulation shares one store among many phones so that 1,000 phones do not hold 1,000
    copies of identical bytes; each phone still keeps its own record of what it downloaded
    (and pays the bytes), so the transfer accounting is per phone.

    Args:
        root: directory for bundle files (a temporary one when None).
        max_versions: weight versions kept in memory.
    """

    def __init__(self, root: str | None = None, max_versions: int = 3) -> None:
        self.root = root or tempfile.mkdtemp(prefix="fedkeys-devices-")
        os.makedirs(self.root, exist_ok=True)
        self.max_versions = max_versions
        self._weights: OrderedDict[tuple[int, str], Weights] = OrderedDict()
        self._lock = threading.Lock()

    def put_file(self, name: str, content: bytes) -> str:
        """Write content under a name derived from its hash; returns the path."""
        import hashlib

        digest = hashlib.sha256(content).hexdigest()[:16]
        path = os.path.join(self.root, f"{digest}-{name}")
        if not os.path.exists(path):
            tmp = f"{path}.{uuid.uuid4().hex}.tmp"
            with open(tmp, "wb") as f:
                f.write(content)
            os.replace(tmp, path)
        return path

    def get_weights(self, version: int, etag: str) -> Weights | None:
        with self._lock:
            w = self._weights.get((version, etag))
            if w is not None:
                self._weights.move_to_end((version, etag))
            return w

    def put_weights(self, version: int, etag: str, weights: Weights) -> None:
        with self._lock:
            self._weights[(version, etag)] = weights
            while len(self._weights) > self.max_versions:
                self._weights.popitem(last=False)


def encode_within_norm(name: str, update: Weights, rng: np.random.Generator, max_tries: int = 4,
                       limit: float | None = None) -> tuple[bytes, Weights]:
    """Encode `update`, making sure the decoded update is no longer than `limit`.

    The server refuses updates longer than the clip bound (plus the declared noise). Top-k never
    lengthens a vector, but an unbiased quantizer does: E||Q(u)||^2 = ||u||^2 (1 + its relative
    error), a hair for int8 stochastic rounding, about 1.5% in norm for "hadamard:1.75" on the
    default model and 25% for "hadamard:1" (two levels everywhere). Encodings
    in `encodings.NORM_BOUNDED` shrink their own scales to fit; for the others the input is
    shrunk by the excess and encoded again.

    Args:
        limit: the largest decoded norm allowed; ||update|| when None.

    Returns:
        (payload, decoded) with ||decoded|| <= limit (1e-6 relative slack).
    """
    shapes = [np.shape(u) for u in update]
    limit = privacy.global_l2_norm(update) if limit is None else float(limit)
    bounded = encodings.base_name(name) in encodings.NORM_BOUNDED
    target = update
    for attempt in range(max_tries):
        payload = encodings.encode(name, target, rng=rng, max_norm=limit if bounded else None)
        decoded = encodings.decode(name, payload, shapes)
        got = privacy.global_l2_norm(decoded)
        if got <= limit * (1 + 1e-6) or got == 0 or attempt == max_tries - 1:
            return payload, decoded
        # Shrink by the excess and a margin that grows each try: a fresh stochastic rounding
        # lengthens the vector again by about as much (int8: ~1e-4 relative), so a fixed margin
        # of that size would fail about half the time.
        margin = min(10.0 ** (attempt - 4), 0.1)  # 1e-4, 1e-3, 1e-2, then 0.1 (tries 5 on)
        target = [(np.asarray(t, np.float64) * (limit / got) * (1 - margin)).astype(np.float32) for t in target]
    raise ValueError(f"max_tries must be at least 1, got {max_tries}")


class Phone:
    """A simulated phone holding one user's examples.

    Args:
        device_id: the id it registers with (the training user id).
        x, y: int32 [N, T] examples, in the user's order.
        transport: its HTTP client (one per phone: it holds the token).
        model_factory: path of trainable.tflite -> a model with set_weights / get_weights /
            train_step (a `tflite_export.runtime.TFLiteModel`, or a fake in tests).
        rng: draws the noise and the stochastic rounding.
        store: where downloaded bytes live (shared among phones in a fleet).
        encoding: overrides the plan's encoding (e.g. "topk:0.05"); None = use the plan's.
        error_feedback: keep a residual across rounds; None = on for lossy encodings with
            top-k (where it matters), off otherwise.
        keep_personal: keep, beside the global weights, the weights this phone's last complete
            local training produced (`personal`, `personal_version`): the global model fine-tuned
            on its owner's data by the TFLite `train` signature, never uploaded, used for its own
            suggestions (device_sim/personal.py scores them). Off by default: a fleet of
            1,000 phones would hold 1,000 models.
    """

    def __init__(self, device_id: str, x: np.ndarray, y: np.ndarray, transport: Transport,
                 model_factory: ModelFactory, rng: np.random.Generator, *,
                 store: DeviceStore | None = None, encoding: str | None = None,
                 error_feedback: bool | None = None, keep_personal: bool = False) -> None:
        x, y = np.asarray(x, dtype=np.int32), np.asarray(y, dtype=np.int32)
        if x.shape != y.shape or x.ndim != 2:
            raise ValueError(f"expected x and y of the same shape [N, T], got {x.shape} and {y.shape}")
        if encoding is not None:
            encodings.parse_name(encoding)
        self.device_id = device_id
        self.x, self.y = x, y
        self.transport = transport
        self.model_factory = model_factory
        self.rng = rng
        self.store = store or DeviceStore()
        self.encoding = encoding
        self.error_feedback = error_feedback
        self.registered = False
        self.bundle_path: str | None = None  # trainable.tflite, once downloaded
        self.weights_version: int | None = None  # the version this phone holds
        self.weights_etag: str | None = None
        self.feedback: ErrorFeedback | None = None
        self.keep_personal = keep_personal
        self.personal: Weights | None = None  # with keep_personal: the last fine-tuned weights
        self.personal_version: int | None = None  # the global version they were fine-tuned from

    @property
    def num_examples(self) -> int:
        return int(self.x.shape[0])

    # --- steps of a session -----------------------------------------------------------------
    def ensure_registered(self) -> None:
        if not self.registered:
            self.transport.register(self.device_id)
            self.registered = True

    def _bundle(self) -> str:
        if self.bundle_path is None:
            dl = self.transport.bundle_file(TFLITE_FILE)
            self.bundle_path = self.store.put_file(TFLITE_FILE, dl.content or b"")
        return self.bundle_path

    def _weights(self, version: int, model: TrainableModel) -> Weights:
        """The weights of `version`: from the shared store when any phone already decoded them."""
        if self.weights_version == version and self.weights_etag is not None:
            held = self.store.get_weights(version, self.weights_etag)
            if held is not None:
                return held
        dl = self.transport.weights(version)
        etag = dl.etag or f"v{version}"
        weights = self.store.get_weights(version, etag)  # another phone decoded this version already
        if weights is None:
            shapes = [tuple(np.shape(w)) for w in model.get_weights()]
            weights = encodings.decode_float32(dl.content or b"", shapes)
            self.store.put_weights(version, etag, weights)
        self.weights_version, self.weights_etag = version, etag
        return weights

    def _uses_feedback(self, encoding: str) -> bool:
        if self.error_feedback is not None:
            return self.error_feedback
        return encodings.base_name(encoding).startswith("topk")

    def privatize_and_encode(self, delta: Weights, plan: Plan, encoding: str) -> tuple[bytes, float]:
        """Error feedback, clip, noise, encode (see the module docstring for the order).

        Returns:
            (payload, norm of the delta after error feedback, before clipping).
        """
        shapes = [tuple(np.shape(d)) for d in delta]
        fb = None
        if self._uses_feedback(encoding):
            if self.feedback is None or self.feedback.shapes != [tuple(s) for s in shapes]:
                self.feedback = ErrorFeedback(shapes)
            fb = self.feedback
            delta = fb.correct(delta)
        norm = privacy.global_l2_norm(delta)
        if plan.clip_norm > 0:
            delta, norm = privacy.clip_by_global_norm(delta, plan.clip_norm)
        delta = privacy.add_gaussian_noise(delta, plan.noise_std, self.rng)
        if encodings.base_name(encoding) in encodings.LOSSLESS:
            payload, sent = encodings.encode(encoding, delta, rng=self.rng), delta
        else:
            # What the server accepts: the clip bound, or the (noised) update's own norm when
            # that is longer (the server allows the declared noise on top of the clip).
            limit = privacy.global_l2_norm(delta)
            if plan.clip_norm > 0:
                limit = max(limit, plan.clip_norm)
            payload, sent = encode_within_norm(encoding, delta, self.rng, limit=limit)
        if fb is not None:
            fb.update(delta, sent)
        return payload, norm

    # --- a whole session --------------------------------------------------------------------
    def run_round(self, conditions: Conditions = Conditions(), fate: FateFn | None = None) -> Outcome:
        """Check in and, if selected, train and upload once. Never raises for protocol outcomes.

        Args:
            conditions: idle / charging / unmetered right now. An ineligible phone does not
                check in (and so can never train).
            fate: the simulated world's say on dropout and lateness, given the plan.
        """
        start = time.perf_counter()
        up0, down0 = self.transport.stats.bytes_up, self.transport.stats.bytes_down
        out = Outcome(self.device_id, INELIGIBLE)
        try:
            if not conditions.ok or self.num_examples == 0:
                out.detail = "not idle, charging and unmetered" if not conditions.ok else "no examples"
                return out
            self._session(conditions, fate, out)
        except TransportError as e:
            out.status, out.error, out.detail = FAILED, e.error or "transport", str(e)
        except (ValueError, encodings.EncodingError) as e:
            out.status, out.error, out.detail = FAILED, type(e).__name__, str(e)
        finally:
            out.bytes_up = self.transport.stats.bytes_up - up0
            out.bytes_down = self.transport.stats.bytes_down - down0
            out.wall_s = time.perf_counter() - start
        return out

    def _secure_report(self, plan: Plan, delta: Weights, n: int, out: Outcome, secagg: dict | None = None) -> None:
        """The four secure stages instead of an upload (device_sim/secure.py); the ring carries the
        clip and the noise, so the plan's float noise is not added here."""
        from device_sim.secure import SecureReport  # the cryptography is loaded only by secure rounds
        from secagg.client import ProtocolAbort

        if self.transport.identity is None:
            out.status, out.error, out.detail = REJECTED, "no_identity", "secure rounds need a device key"
            return
        try:
            SecureReport(self.transport, self.transport.identity, plan.round, self.transport.issuer_public,
                         info=secagg).run(delta, n)
        except (ProtocolAbort, TransportError) as e:
            out.status, out.error, out.detail = REJECTED, getattr(e, "error", "") or "secure_abort", str(e)
            return
        out.status = ACCEPTED

    def _session(self, conditions: Conditions, fate: FateFn | None, out: Outcome) -> None:
        self.ensure_registered()
        n_rows = self.num_examples
        check = self.transport.checkin(conditions.idle, conditions.charging, conditions.unmetered, n_rows)
        if not check.selected or check.plan is None:
            out.status, out.retry_after = NOT_SELECTED, check.retry_after
            out.error, out.detail = check.error, check.detail
            return
        plan = check.plan
        out.round, out.model_version = plan.round, plan.model_version
        encoding = self.encoding or plan.encoding
        out.encoding = encoding

        n = min(n_rows, plan.max_examples) if plan.max_examples > 0 else n_rows
        xs, ys = self.x[:n], self.y[:n]
        plan_batches = batches(xs, ys, plan.batch_size, pad_last=True)
        steps_total = plan.local_epochs * len(plan_batches)
        verdict = fate(plan, steps_total, n) if fate is not None else Fate()

        model = self.model_factory(self._bundle())
        downloaded = self._weights(plan.model_version, model)
        model.set_weights(downloaded)

        t0 = time.perf_counter()
        losses: list[float] = []
        stop = steps_total if verdict.drop_after_steps is None else min(steps_total, verdict.drop_after_steps)
        for _ in range(plan.local_epochs):
            for xb, yb in plan_batches:
                if len(losses) >= stop:
                    break
                losses.append(float(model.train_step(xb, yb, plan.learning_rate, plan.grad_clip)))
        out.train_s = time.perf_counter() - t0
        out.steps = len(losses)
        out.loss = float(np.mean(losses)) if losses else None
        if verdict.drop_after_steps is not None and verdict.drop_after_steps < steps_total:
            out.status, out.detail = DROPPED, f"left after {out.steps} of {steps_total} steps"
            return
        if verdict.late:
            out.status, out.detail = LATE, "would miss the round deadline; abandoned before upload"
            return
        out.num_examples = n

        trained = model.get_weights()
        if self.keep_personal:
            self.personal = [np.array(t, np.float32) for t in trained]
            self.personal_version = plan.model_version
        delta = [(np.asarray(t, np.float32) - np.asarray(d, np.float32)) for t, d in zip(trained, downloaded)]
        if check.secure:
            self._secure_report(plan, delta, n, out, check.secagg)
            return
        before = list(self.feedback.residual) if self.feedback is not None else None
        payload, out.update_norm = self.privatize_and_encode(delta, plan, encoding)
        out.payload_bytes = len(payload)
        header = wire.UploadHeader(round=plan.round, model_version=plan.model_version, num_examples=n,
                                   encoding=encodings.base_name(encoding),
                                   upload_id=f"{self.device_id[:64]}-{uuid.uuid4().hex[:16]}")
        result = self.transport.upload(plan.round, wire.pack(header, payload))
        out.round_complete = result.round_complete
        if result.accepted:
            out.status = ACCEPTED
        else:
            out.status, out.error, out.detail = REJECTED, result.error or str(result.status), result.detail
            if self.feedback is not None:  # nothing was delivered: back to the residual before
                self.feedback.residual = before if before is not None else \
                    [np.zeros(s, np.float32) for s in self.feedback.shapes]
