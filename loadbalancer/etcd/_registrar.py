"""``etcd.Registrar``: one instance registered under a lease, kept alive, removed when done."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import ssl
import weakref
from collections.abc import Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any, Self

from .._log import get_logger
from .._runtime import RUNTIME
from .._util import describe, seconds
from ..instance import Instance, parse_instance
from ._client import (
    DEFAULT_ENDPOINTS,
    Client,
    EtcdError,
    await_on_runtime,
    b64,
    key_prefix,
    parse_endpoints,
    wait_on_runtime,
)
from ._values import encode_value

__all__ = ["Registrar"]

_NOT_FOUND = 5  # gRPC NotFound: "requested lease not found" (it expired, or was revoked)
_EXIT_WAIT = 2.0  # seconds the interpreter's exit waits for registrars to deregister
_EXIT_TIMEOUT = 1.0  # per request, at exit

_live: weakref.WeakSet[Registrar] = weakref.WeakSet()  # registered now: deregistered at exit


class Registrar:
    """Registers ``instance`` under ``prefix`` in etcd for as long as it lives.

    The key is ``{namespace}{prefix}/{instance_id}`` (``instance_id`` defaults to the
    instance's ``host:port``), attached to a lease of ``ttl`` seconds: a whole number, at
    least 1, since etcd grants leases in whole seconds (it may raise the TTL to its minimum).
    The value is ``value`` if given (a ``"host:port"`` string suits readers that expect
    go-kit's plain form), else the JSON document a ``loadbalancer.etcd.Publisher`` reads
    back as the instance with its weight, priority, tags and metadata.

    ``register()`` grants the lease and puts the key; the lease is then kept alive every
    half TTL on the library's shared background loop. If etcd says the lease is gone (it
    expired while the cluster was unreachable, or was revoked), a new lease is granted and
    the key put again. ``deregister()`` revokes the lease, which deletes the key at once;
    ``close()`` deregisters and releases the connections. A registrar still registered
    when the interpreter exits is deregistered then, with a short timeout; a process that
    dies without that leaves its key until the lease expires, ``ttl`` seconds later.

    Every method has an async twin (``aregister()``, ``aderegister()``, ``aclose()``), and
    the registrar is a context manager (``with`` and ``async with``) that registers on entry.

    >>> registrar = Registrar("/services/api", "10.0.0.7:8080", endpoints="127.0.0.1:2379", ttl=10)
    >>> registrar.key
    '/services/api/10.0.0.7:8080'
    >>> with registrar:  # doctest: +SKIP
    ...     serve_forever()
    """

    def __init__(
        self,
        prefix: str,
        instance: Instance | str,
        *,
        endpoints: str | Sequence[str] = DEFAULT_ENDPOINTS,
        namespace: str | None = None,
        ttl: float | timedelta = 10.0,
        value: str | bytes | None = None,
        instance_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        verify: bool | str | ssl.SSLContext = True,
        cert: str | tuple[str, str] | None = None,
        timeout: float | timedelta = 5.0,
        logger: Any = None,
    ) -> None:
        connection = parse_endpoints(endpoints, namespace)
        seconds_ = seconds(timeout, "timeout", allow_zero=False)
        client = Client(connection, username=username, password=password, verify=verify, cert=cert, timeout=seconds_)
        self._setup(client, key_prefix(connection.namespace, prefix), instance, ttl, value, instance_id, None, logger)
        self._owns_client = True

    @classmethod
    def _attached(
        cls,
        client: Client,
        prefix: str,
        instance: Instance | str,
        ttl: float | timedelta,
        name: str,
        logger: Any,
    ) -> Registrar:
        """A registrar on a client shared with others (a ``Registry``'s), which it does not close."""
        self = cls.__new__(cls)
        self._setup(client, prefix, instance, ttl, None, None, name, logger)
        self._owns_client = False
        return self

    def _setup(
        self,
        client: Client,
        prefix: str,
        instance: Instance | str,
        ttl: float | timedelta,
        value: str | bytes | None,
        instance_id: str | None,
        name: str | None,
        logger: Any,
    ) -> None:
        self._instance = instance if isinstance(instance, Instance) else parse_instance(instance)
        requested = seconds(ttl, "ttl", allow_zero=False)
        # etcd grants leases in whole seconds: say so rather than round a fraction silently
        if requested < 1 or not requested.is_integer():
            bound = "at least 1 second" if requested < 1 else "a whole number of seconds"
            raise ValueError(f"ttl must be {bound} (etcd leases are whole seconds), got {requested:g}")
        if instance_id is None:
            instance_id = self._instance.address
        elif not isinstance(instance_id, str) or not instance_id or "/" in instance_id:
            raise ValueError(f"invalid instance_id {instance_id!r}: it must be a non-empty string without '/'")
        if value is None:
            value = encode_value(self._instance, name)
        elif not isinstance(value, str | bytes):
            raise TypeError(f"value must be a string or bytes, got {value!r}")
        self._client = client
        self._key = prefix + instance_id
        self._value = value.encode() if isinstance(value, str) else value
        self._lease_ttl = int(requested)
        self._granted = float(self._lease_ttl)
        self._lease: int | None = None
        self._registered = False
        self._keeper: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._closed = False
        self._log = get_logger(logger, key=self._key)

    # -- public ----------------------------------------------------------------------------

    @property
    def key(self) -> str:
        """The key registered (namespace included)."""
        return self._key

    @property
    def value(self) -> bytes:
        return self._value

    @property
    def instance(self) -> Instance:
        return self._instance

    @property
    def ttl(self) -> float:
        """The lease's time to live in seconds, as etcd granted it (as asked for, before registering)."""
        return self._granted

    @property
    def lease(self) -> int | None:
        """The ID of the current lease (``None`` while not registered)."""
        return self._lease

    @property
    def registered(self) -> bool:
        return self._registered

    def register(self) -> None:
        """Grant a lease, put the key and keep the lease alive from now on; no-op if registered.

        Raises ``EtcdError`` (naming the member and the key) if no member accepts it.
        """
        wait_on_runtime(self._register(), "Registrar.register()")

    async def aregister(self) -> None:
        """Async form of ``register()``."""
        await await_on_runtime(self._register())

    def deregister(self) -> None:
        """Stop the keep-alive and revoke the lease (the key goes with it); no-op if not registered.

        Raises ``EtcdError`` if no member could be told (the key then expires with its lease).
        """
        wait_on_runtime(self._deregister(), "Registrar.deregister()")

    async def aderegister(self) -> None:
        """Async form of ``deregister()``."""
        await await_on_runtime(self._deregister())

    def close(self) -> None:
        """Deregister (a failure is logged, not raised) and release the connections; idempotent."""
        wait_on_runtime(self._close(), "Registrar.close()")

    async def aclose(self) -> None:
        """Async form of ``close()``."""
        await await_on_runtime(self._close())

    def __enter__(self) -> Self:
        self.register()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        await self.aregister()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"etcd.Registrar({self._key!r}, ttl={self._granted:g})"

    # -- on the runtime --------------------------------------------------------------------

    async def _register(self) -> None:
        async with self._lock:
            if self._closed:
                raise RuntimeError(f"{self!r} is closed")
            if self._registered:
                return
            await self._put_with_new_lease()
            self._registered = True
            self._keeper = asyncio.create_task(self._keep_alive(), name=f"etcd-keepalive {self._key}")
            _live.add(self)
        self._log.info("etcd_registered", lease=self._lease, ttl=self._granted, member=self._client.member)

    async def _put_with_new_lease(self) -> None:
        """Grant a lease and put the key under it."""
        reply = await self._client.call(
            "/v3/lease/grant", {"TTL": str(self._lease_ttl)}, what="lease grant for", key=self._key
        )
        lease = int(reply["ID"])
        granted = float(reply.get("TTL", self._lease_ttl))
        try:
            await self._client.call(
                "/v3/kv/put",
                {"key": b64(self._key), "value": b64(self._value), "lease": str(lease)},
                what="put",
                key=self._key,
            )
        except BaseException:
            with contextlib.suppress(EtcdError):
                await self._revoke(lease, self._client.timeout)
            raise
        self._lease, self._granted = lease, granted

    async def _keep_alive(self) -> None:
        delay = self._granted / 2
        while True:
            await asyncio.sleep(delay)
            lease = self._lease
            try:
                if lease is None:  # lost, and putting it back failed last time
                    await self._put_with_new_lease()
                    self._log.info("etcd_reregistered", lease=self._lease, ttl=self._granted)
                else:
                    # Short timeouts: a slow member must not make the lease expire before the next one is tried.
                    timeout = min(self._client.timeout, max(self._granted / 4, 0.5))
                    reply = await self._client.call(
                        "/v3/lease/keepalive", {"ID": str(lease)}, what="lease keep-alive for", key=self._key,
                        within=timeout,
                    )  # fmt: skip
                    if int(reply.get("TTL", 0)) <= 0:  # etcd leaves TTL out: the lease is gone
                        self._log.warning("etcd_lease_lost", lease=lease)
                        self._lease = None
                        await self._put_with_new_lease()
                        self._log.info("etcd_reregistered", lease=self._lease, ttl=self._granted)
                delay = self._granted / 2
            except Exception as error:  # EtcdError, or a reply not as documented: keep trying
                self._log.warning("etcd_keepalive_failed", lease=lease, error=describe(error))
                delay = min(self._granted / 4, 1.0)  # again soon: the lease runs out meanwhile

    async def _stop_keeper(self) -> None:
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)

    async def _revoke(self, lease: int, within: float) -> None:
        try:
            await self._client.call(
                "/v3/lease/revoke", {"ID": str(lease)}, what="lease revoke for", key=self._key, within=within
            )
        except EtcdError as error:
            if error.code != _NOT_FOUND:  # not found: it expired already, and the key went with it
                raise

    async def _deregister(self, within: float | None = None) -> None:
        async with self._lock:
            if not self._registered:
                return
            await self._stop_keeper()
            self._registered = False
            _live.discard(self)
            lease, self._lease = self._lease, None
            if lease is None:
                return
            try:
                await self._revoke(lease, self._client.timeout if within is None else within)
            except EtcdError:
                self._log.warning("etcd_deregister_failed", lease=lease, member=self._client.member)
                raise
        self._log.info("etcd_deregistered", lease=lease)

    async def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._deregister()
        except EtcdError as error:
            self._log.warning("etcd_close_incomplete", error=describe(error))
        finally:
            if self._owns_client:
                await self._client.aclose()

    async def _at_exit(self) -> None:
        with contextlib.suppress(EtcdError):
            await self._deregister(_EXIT_TIMEOUT)


def _deregister_at_exit() -> None:
    """Remove the keys of registrars still registered when the interpreter exits (best effort)."""
    live = list(_live)
    if not live:
        return
    futures = [RUNTIME.submit(registrar._at_exit()) for registrar in live]
    concurrent.futures.wait(futures, timeout=_EXIT_WAIT)


# Registered after the runtime's own exit hook (imported above), so it runs before the loop stops.
atexit.register(_deregister_at_exit)
