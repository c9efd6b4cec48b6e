"""How a destination says it did not take a batch, whatever carries it (HTTP, files).

The engine acts on the kind, never on the transport: a :class:`TerminalError` fails
the batch's records, which are logged in ``sync_errors`` and tried again next run;
any other :class:`SinkError` (unreachable, credentials refused, a folder that cannot be
written) stops the destination, its run recorded ``failed`` with the reason. HTTP
answers map to them in :mod:`sync.http`; the csv destination raises them itself.
"""

from __future__ import annotations


class SinkError(Exception):
    """A batch the destination did not take; ``status`` is the HTTP status where
    there is one (None for connection errors and for destinations without HTTP)."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class TransientError(SinkError):
    """Worth retrying: throttled, a server error, no answer, a write that failed."""


class TerminalError(SinkError):
    """Retrying will not help: the request itself was refused."""


class AuthError(SinkError):
    """The destination refuses our credentials (HTTP 401 or 403), so every other
    request would be refused too. Not a :class:`TerminalError`: it stops the
    destination instead of failing records one by one."""
