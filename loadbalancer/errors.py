"""Errors that users of the library catch."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AttemptTimeoutError",
    "DiscoveryError",
    "Error",
    "ExtraNotInstalledError",
    "InvalidInstanceError",
    "InvalidTargetError",
    "NoEndpointsError",
    "NotReadyError",
    "PublisherClosedError",
    "RetryBudgetExhaustedError",
    "RetryError",
    "RetryTimeoutError",
    "UnhealthyError",
]


class Error(Exception):
    """Base class of every error this library raises."""


class InvalidInstanceError(Error, ValueError):
    """An instance string or field is malformed: ``invalid instance 'a:b': port is not a number``."""

    def __init__(self, value: object, reason: str) -> None:
        self.value = value
        self.reason = reason
        super().__init__(f"invalid instance {value!r}: {reason}")


class InvalidTargetError(Error, ValueError):
    """A target string is malformed or names what cannot be built: the message names the part.

    ``target`` is the string as given, ``reason`` what is wrong with it:
    ``invalid target 'dsn:///x': unknown scheme 'dsn' (known: consul, dns, ...)``.
    """

    def __init__(self, target: object, reason: str) -> None:
        self.target = target
        self.reason = reason
        super().__init__(f"invalid target {target!r}: {reason}")


class ExtraNotInstalledError(Error, ImportError):
    """A feature needs an optional dependency that is not installed; the message has the ``pip install`` line."""

    def __init__(self, feature: str, extra: str, missing: str) -> None:
        self.extra = extra
        super().__init__(
            f"{feature} needs an optional dependency ({missing}): pip install 'loadbalancer[{extra}]'", name=missing
        )


class NoEndpointsError(Error, LookupError):
    """A balancer was asked for an endpoint while its publisher has none.

    ``error`` is the publisher's last refresh failure, if that is why the set is empty.
    """

    def __init__(self, message: str, *, error: BaseException | None = None) -> None:
        self.error = error
        super().__init__(message)


class NotReadyError(NoEndpointsError):
    """A balancer was asked for an endpoint before its publisher's source first answered.

    Wait for the first answer with ``publisher.wait_ready(timeout)`` (or ``await
    publisher.await_ready(timeout)``); ``Retry`` and ``Hedge`` wait for it themselves, within
    their deadline.
    """


class PublisherClosedError(NoEndpointsError):
    """A balancer was asked for an endpoint after its publisher was closed: no retry can help."""


class DiscoveryError(Error):
    """A discovery source could not be read (timeout, refused connection, bad answer)."""


class AttemptTimeoutError(Error, TimeoutError):
    """An attempt ran past its deadline (its ``attempt_timeout``, or the call's) and was given up."""


class RetryError(Error):
    """``Retry`` gave up.

    ``errors`` holds every attempt's exception in order; ``final`` is the last one (and
    also ``__cause__``).
    """

    def __init__(self, message: str, errors: Sequence[BaseException]) -> None:
        self.errors: tuple[BaseException, ...] = tuple(errors)
        super().__init__(message)

    @property
    def final(self) -> BaseException | None:
        """The last attempt's exception (``None`` if no attempt was started)."""
        return self.errors[-1] if self.errors else None


class RetryBudgetExhaustedError(RetryError):
    """``Retry`` stopped retrying because its ``RetryBudget`` is spent (retries would multiply load)."""


class RetryTimeoutError(RetryError, TimeoutError):
    """``Retry`` ran out of its overall deadline; both a ``RetryError`` and a ``TimeoutError``."""


class UnhealthyError(Error):
    """A health check found an instance unhealthy; the message says what it saw."""
