"""The refusal every part of the API raises: an HTTP status and the one line the client reads."""

from __future__ import annotations


class JobError(Exception):
    """A request the API refuses; carries the HTTP status and the detail the client sees."""

    def __init__(self, status_code: int, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status_code, self.detail, self.headers = status_code, detail, headers
