"""The toolkit's own failures of a gRPC call, as ``grpc.RpcError``s: a caller catching grpc's errors catches these."""

from __future__ import annotations

from typing import Any

import grpc

from ..errors import Error, NoEndpointsError, RetryTimeoutError

__all__ = ["DeadlineExceededError", "NoInstanceError", "RpcError"]


class RpcError(grpc.RpcError, grpc.Call, Error):
    """A call failed in the toolkit, not at a server: a ``grpc.RpcError`` (and a ``grpc.Call``)
    with ``code()`` and ``details()``, and a ``loadbalancer.Error``."""

    _code = grpc.StatusCode.UNKNOWN

    def __init__(self, details: str, *, method: str = "") -> None:
        Exception.__init__(self, details)
        self._details = details
        self.method = method

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def initial_metadata(self) -> tuple[Any, ...]:
        return ()

    def trailing_metadata(self) -> tuple[Any, ...]:
        return ()

    def debug_error_string(self) -> str:
        return self._details

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float:
        return 0.0

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Any) -> bool:
        return False

    def __str__(self) -> str:
        return f"<{type(self).__name__} {self._code.name}: {self._details}>"


class NoInstanceError(RpcError, NoEndpointsError):
    """No instance to call (none discovered, none healthy): ``UNAVAILABLE``, and a ``NoEndpointsError``."""

    _code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceededError(RpcError, RetryTimeoutError):
    """The call's deadline passed between attempts: ``DEADLINE_EXCEEDED``, and a ``RetryTimeoutError``
    whose ``errors`` hold each attempt's error."""

    _code = grpc.StatusCode.DEADLINE_EXCEEDED

    def __init__(self, details: str, errors: list[BaseException], *, method: str = "") -> None:
        super().__init__(details, method=method)
        self.errors = tuple(errors)
