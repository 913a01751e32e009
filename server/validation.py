"""Upload validation at the door: every check an update passes before it may touch the sum.

The checks run cheapest first and change nothing; the first that fails raises Refusal with the
status docs/http_api.md gives it:

1. the body parses as `fedmath.wire` (400 `malformed`) and names the round of the URL (400);
2. a second upload by the same device for the round: the same `upload_id` gets the first answer
   again, another id 409 `duplicate`;
3. the round exists and is open (409 `round_closed`), the device was selected for it (403
   `not_selected`), the update was computed from the round's model version (409 `stale_version`);
4. `num_examples` within the plan's cap (400 `too_many_examples`), a known encoding
   (400 `bad_encoding`), the payload decodes to the model's shapes (400 `bad_payload`) with
   finite values only (400 `non_finite`);
5. its L2 norm at most what the clip plus the plan's noise allows
   (`fedmath.privacy.max_plausible_norm`: about sqrt(C^2 + s^2 dim) plus `norm_slack` noise
   standard deviations, exceeded by an honest update with probability at most
   exp(-norm_slack^2 / 2); C itself when the plan has no device noise): above it the update is
   refused (400 `norm_too_large`) or, with `norm_policy="reclip"`, scaled down to that norm.

The JSON bodies of registration and check-in pass `json_body` first: JSON nested at most
MAX_JSON_DEPTH deep (400 `bad_request` otherwise), so no later check or error message walks a
hostile structure.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from fedcore.messages import Refusal
from fedmath import encodings, privacy, wire
from fedmath.types import Shapes, Weights
from server import files
from server.storage import Round, UpdateRecord

MAX_INT = 2**63  # SQLite's INTEGER range; round and version numbers beyond it cannot exist
# Registration and check-in bodies are flat objects of a few short fields.
MAX_JSON_BYTES = 64 * 1024
MAX_STAGE_BYTES = 1 << 20  # a secure round's shares or unmask message: about 100 B per neighbour
MAX_JSON_DEPTH = 8


@dataclass(frozen=True)
class CheckedUpdate:
    header: wire.UploadHeader
    payload: memoryview  # the encoded update exactly as received (what is spooled)
    update: Weights  # decoded, before any re-clip
    norm: float  # its L2 norm
    clip_to: Optional[float]  # re-clip target when the norm was above the bound (reclip mode)


SHOWN_CHARS = 80  # how much of a client's value an error detail echoes


def shown(value: object) -> str:
    """A client's value as an error detail shows it: its repr, cut to SHOWN_CHARS characters."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}... ({len(text):,} characters)"


def json_body(data: bytes) -> object:
    """A request's JSON body, refused with 400 `bad_request` when it is not JSON or nests
    arrays and objects more than MAX_JSON_DEPTH deep (checked before parsing: json.loads of a
    deeper text can end in RecursionError rather than a ValueError)."""
    try:
        text = data.decode(json.detect_encoding(data))  # as json.loads(bytes) reads it: UTF-8, -16 or -32
    except UnicodeDecodeError as e:
        raise Refusal("bad_request", f"the body is not JSON text: {e}") from None
    if wire.nesting_exceeds(text, MAX_JSON_DEPTH):
        raise Refusal("bad_request", f"the body nests arrays or objects more than {MAX_JSON_DEPTH} deep")
    try:
        return json.loads(text)
    except ValueError as e:  # JSONDecodeError, or an integer literal beyond int's digit limit
        raise Refusal("bad_request", f"the body is not JSON: {e}") from None


def parse(body: bytes | memoryview, url_round: int) -> tuple[wire.UploadHeader, memoryview]:
    """Header and payload of an upload; the payload is a view into the body (no copy)."""
    try:
        header, payload = wire.unpack(memoryview(body))  # raises WireError saying what is wrong
    except wire.WireError as e:
        raise Refusal("malformed", str(e)) from None
    for name in ("round", "model_version", "num_examples"):
        if not 0 <= getattr(header, name) < MAX_INT:
            raise Refusal("malformed", f"header field {name!r} must be in [0, 2**63), got {getattr(header, name)}")
    if header.round != url_round:
        raise Refusal("malformed", f"header says round {header.round} but the URL says round {url_round}")
    return header, payload


def check_round(header: wire.UploadHeader, device_id: str, rnd: Optional[Round], selected: bool,
                existing: Optional[UpdateRecord], now: float) -> Optional[dict]:
    """Checks against the round's state. Returns the earlier answer for an idempotent retry."""
    if existing is not None:
        if existing.upload_id == header.upload_id:
            return {"accepted": True, "round_complete": bool(existing.round_complete)}
        raise Refusal("duplicate",
                       f"device {device_id!r} already reported for round {header.round} with upload_id "
                       f"{existing.upload_id!r}; this upload has {header.upload_id!r}")
    if rnd is None:
        raise Refusal("round_closed", f"round {header.round} does not exist")
    if rnd.state != "open":
        raise Refusal("round_closed", f"round {header.round} is {rnd.state}")
    if rnd.reports >= rnd.goal_count:
        raise Refusal("round_closed", f"round {header.round} already has its {rnd.goal_count} reports")
    if rnd.deadline is not None and now > rnd.deadline:
        raise Refusal("round_closed", f"round {header.round}'s reporting deadline {rnd.deadline:.3f} has passed")
    if not selected:
        raise Refusal("not_selected", f"device {device_id!r} was not selected for round {header.round}")
    if header.model_version != rnd.model_version:
        raise Refusal("stale_version",
                       f"round {header.round} trains model version {rnd.model_version}, "
                       f"the update was computed from version {header.model_version}")
    return None


def check_content(header: wire.UploadHeader, payload: memoryview, shapes: Shapes, *, max_examples: int,
                  clip_norm: float, noise_std: float, norm_slack: float,
                  norm_policy: str) -> CheckedUpdate:
    """Checks of the update itself: examples cap, encoding, shapes, finiteness, norm.

    Any encoding in `fedmath.encodings.DECODERS` is accepted, whatever the plan suggested: a
    phone may send a smaller encoding than planned, and the server decodes what the header names.
    A float32 payload of the right size is checked where it lies (`update` views the body, and
    one float64 pass gives the norm and finiteness); anything else, and every refusal's detail,
    goes through `encodings.decode`.
    """
    if header.num_examples > max_examples:
        raise Refusal("too_many_examples",
                       f"num_examples {header.num_examples} exceeds the plan's cap of {max_examples}")
    if header.encoding not in encodings.DECODERS:
        raise Refusal("bad_encoding",
                       f"unknown encoding {header.encoding!r}; expected one of {sorted(encodings.DECODERS)}")
    dim = sum(math.prod(s) for s in shapes)
    update, norm = None, math.nan
    if header.encoding == "float32" and len(payload) == 4 * dim:
        # The reference float32 layout, read in place: views into the body, no decoded copy.
        flat = np.frombuffer(payload, dtype="<f4")
        norm = l2_norm(flat)
        if math.isfinite(norm):  # else a NaN or inf is in there: decode() below says how many
            update = files.tensor_views(flat, shapes)
    if update is None:
        try:
            update = encodings.decode(header.encoding, payload, shapes)
        except encodings.NonFiniteError as e:
            raise Refusal("non_finite", str(e)) from None
        except encodings.EncodingError as e:
            raise Refusal("bad_payload", str(e)) from None
        norm = privacy.global_l2_norm(update)
    bound = privacy.max_plausible_norm(clip_norm, noise_std, dim, norm_slack)
    clip_to = None
    if norm > bound:
        if norm_policy == "reclip":
            clip_to = bound
        else:
            raise Refusal("norm_too_large",
                           f"update L2 norm {norm:.6g} exceeds {bound:.6g}, the most a clip of {clip_norm:g} plus "
                           f"noise std {noise_std:g} over {dim} values allows (chi bound, {norm_slack:g} std of slack)")
    return CheckedUpdate(header, payload, update, norm, clip_to)


def l2_norm(flat: np.ndarray) -> float:
    """The L2 norm of a float32 vector, accumulated in float64 like
    `fedmath.privacy.global_l2_norm`: one `einsum` call, which casts through its own small
    buffers (no full-size float64 temporary) and holds the GIL only to start and finish, so
    another request's thread runs meanwhile (a loop of cache-sized numpy calls took the GIL back
    about forty times per gboard update). Not BLAS: OpenBLAS threads spin on a busy 2-core
    machine. NaN or inf exactly when the vector holds a NaN or an inf: the square of a finite
    float32 is below 1.2e77, so no sum of them overflows float64."""
    return math.sqrt(float(np.einsum("i,i->", flat, flat, dtype=np.float64)))


def prepared(update: Weights, clip_to: Optional[float]) -> Weights:
    """The update as it enters the sum: re-clipped when the record says so. Deterministic, so a
    replay from the spool after a restart adds exactly the same numbers."""
    if clip_to is None:
        return update
    clipped, _ = privacy.clip_by_global_norm(update, clip_to)
    return clipped
