"""The error the ``http`` extractor raises when a request fails or a response cannot be used."""

from __future__ import annotations

from pipectl.errors import PipectlError


class HttpExtractorError(PipectlError):
    """A request failed for good, or its response was not what the options say it is.

    The message names the method and URL (secret query values shown as ``***``), the HTTP status
    when there was a response, and what was wrong. ``url`` and ``status`` hold the same.
    """

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None):
        super().__init__(message)
        self.url = url
        self.status = status
