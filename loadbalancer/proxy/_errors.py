"""The proxy's errors on the way to a backend, and HTTP/2's (kept apart from the modules a compiled build compiles:
mypyc makes no native class of a subclass of a built-in exception such as ``ConnectionError``)."""

from __future__ import annotations

__all__ = [
    "AnswerTimeoutError", "ConnectFailedError", "DiscardedAnswerError", "FailedAnswerError", "H2Error",
    "H2ProtocolError", "H2StreamError", "QueueTimeoutError", "StalledError", "UpstreamError",
]  # fmt: skip


class ConnectFailedError(ConnectionError):
    """The connection to a backend could not be made (the request never left: any method may go elsewhere)."""


class QueueTimeoutError(Exception):
    """Every connection a backend may have (``-n``) stayed busy for the whole bounded wait."""


class UpstreamError(Exception):
    """The backend's connection failed or sent a malformed answer."""


class StalledError(UpstreamError):
    """The backend sent nothing, or took none of the body, for ``--read-timeout``."""


class AnswerTimeoutError(TimeoutError):
    """The backend's answer did not begin within ``--timeout`` of the end of the request."""


class DiscardedAnswerError(Exception):
    """The backend answered with a status worth retrying elsewhere; the answer was dropped."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class FailedAnswerError(Exception):
    """The backend answered 5xx (relayed to the client): counts as its failure for ejection and feedback."""


class H2Error(Exception):
    """An HTTP/2 protocol error, with its error code (RFC 9113, 7)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class H2ProtocolError(H2Error):
    """A connection error: the client broke the protocol; a GOAWAY with ``code`` is queued."""


class H2StreamError(H2Error):
    """A stream cannot carry what this end was to send on it (closed, or over its window)."""

    def __init__(self, stream_id: int, code: int, message: str) -> None:
        super().__init__(code, message)
        self.stream_id = stream_id
