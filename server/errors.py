"""Domain refusals mapped to HTTP: the one place a `fedcore.Refusal` code becomes a status.

Domain code (the collector, validation, pacing) raises `Refusal(code, detail, retry_after)` and
knows nothing of HTTP; the app's error handler answers `{"error": code, "detail": what was wrong}`
with the status below, and `Retry-After` when the device should come back later
(docs/http_api.md).
"""

from __future__ import annotations

from fedcore.messages import Refusal

STATUS: dict[str, int] = {
    # the request itself is malformed or implausible
    "bad_request": 400, "malformed": 400, "bad_framing": 400, "bad_encoding": 400, "bad_payload": 400,
    "non_finite": 400, "norm_too_large": 400, "too_many_examples": 400, "bad_secagg": 400,
    # who is asking
    "unauthorized": 401, "not_selected": 403,
    "attestation_required": 401, "bad_attestation": 401, "bad_proof": 401, "key_mismatch": 403,
    "attestation_cap": 403, "bad_signature": 403,
    "not_found": 404,
    # the request conflicts with the round's state
    "duplicate": 409, "round_closed": 409, "stale_version": 409, "secagg_stage": 409, "secure_only": 409,
    "too_stale": 409,  # fedbuff: trained on a version more than collector.max_staleness behind
    "too_large": 413,
    # pacing: come back later (Retry-After)
    "rate_limited": 429, "not_eligible": 503, "round_full": 503, "already_reported": 503,
    "secagg_wait": 503,
}


def http_status(refusal: Refusal) -> int:
    """The HTTP status of a refusal. Raises KeyError for a code missing from STATUS (a bug: the
    table and the codes raised are checked against each other in tests/test_server_api.py)."""
    return STATUS[refusal.code]


__all__ = ["Refusal", "STATUS", "http_status"]
