"""The one exception the collector raises at its boundary; routes turn it into JSON.

Every refusal is `{"error": code, "detail": what was wrong}` with an HTTP status, and
`Retry-After` when the device should come back later (docs/http_api.md).
"""

from __future__ import annotations

from typing import Optional


class ApiError(Exception):
    """A request the collector refuses; nothing in the server's state has changed."""

    def __init__(self, status: int, code: str, detail: str, retry_after: Optional[int] = None) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.retry_after = retry_after

    def body(self) -> dict:
        out = {"error": self.code, "detail": self.detail}
        if self.retry_after is not None:
            out["retry_after"] = self.retry_after
        return out
