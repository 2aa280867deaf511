"""``etcd.Publisher``: a key prefix, read once and then watched, over etcd's v3 JSON gateway."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import ssl
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

from .._discovery import DiscoveryPublisher as _Base
from .._util import describe, seconds
from ..errors import InvalidInstanceError
from ..instance import Instance
from ..publisher import Factory
from ._client import DEFAULT_ENDPOINTS, Client, EtcdError, b64, key_prefix, parse_endpoints, range_end
from ._values import parse_value

__all__ = ["Publisher"]

E = TypeVar("E")

# Keys per range request of a full read. etcd 3.4 counts the whole range for every page,
# so small pages cost more in total than they save.
_PAGE = 10_000
_FIRST_BACKOFF = 0.05


class _Resync(Exception):
    """The watch cannot go on from the last revision seen: read the prefix afresh."""


class _Reauthenticate(Exception):
    """The member no longer knows the token (it expired, or the member restarted): watch again with a new one."""


class Publisher(_Base[E]):
    """Publishes the instances registered under a key prefix of etcd, following every change.

    The prefix is read once (a linearizable range read, paged at a pinned revision), then
    watched from the next revision. Each key under ``prefix + "/"`` is one instance; its
    value is ``"host:port"`` or a JSON document ``{"host": ..., "port": ..., "weight": ...,
    "priority": ..., "tags": [...], "metadata": {...}}`` (see ``loadbalancer.etcd``).
    Instances are published in key order; a value that cannot be read is skipped and logged
    with its key and value; a deleted key (or an expired lease) removes its instance.

    - ``endpoints``: a connection string ``"http://h1:2379,h2:2379/namespace"`` or a sequence
      of member URLs; the namespace (or ``namespace=``) goes in front of every key.
    - A broken watch (an error line, the stream ending, a refused connection, a member that
      stops answering) moves to the next member and resumes from the revision after the
      last one seen, so no change is lost or applied twice. If the history there has been
      compacted, the prefix is read afresh and watched from that read.
    - ``keepalive``: after this many seconds without a word from the watch, the member is
      asked for its status; no answer within ``timeout``, or a member without a leader,
      counts as a broken watch. The watch also asks etcd to end it if its member loses the
      leader, and asks for progress notifications (sent if the server enables them).
    - When no member can be reached, the last good set stays (marked stale, ``last_error``
      set) and attempts go on, backing off up to ``max_backoff`` seconds; the set is fresh
      again as soon as a watch is re-established.
    - ``username``/``password``: etcd authentication (the token is renewed when it expires);
      ``verify`` (a bool, a CA file or an ``ssl.SSLContext``) and ``cert`` (a client
      certificate file, or ``(cert_file, key_file)``) apply to ``https://`` members.
    - ``refresh()`` (or ``await arefresh()``) reads the prefix now and returns the set.

    Watching runs on the library's shared background loop, with one HTTP connection pool per
    publisher.

    >>> publisher = Publisher("/services/api", str, endpoints="http://127.0.0.1:2379")  # doctest: +SKIP
    >>> publisher.refresh()  # doctest: +SKIP
    EndpointSet([10.0.0.1:8080, 10.0.0.2:8080])
    >>> publisher.close()  # doctest: +SKIP
    """

    def __init__(
        self,
        prefix: str,
        factory: Factory[E] | None = None,
        *,
        endpoints: str | Sequence[str] = DEFAULT_ENDPOINTS,
        namespace: str | None = None,
        username: str | None = None,
        password: str | None = None,
        verify: bool | str | ssl.SSLContext = True,
        cert: str | tuple[str, str] | None = None,
        timeout: float | timedelta = 5.0,
        keepalive: float | timedelta = 5.0,
        max_backoff: float | timedelta = 5.0,
        logger: Any = None,
        invalidate_after: float | timedelta | None = None,
        close_delay: float | timedelta = 1.0,
        tags: Iterable[str] | str | None = None,
    ) -> None:
        connection = parse_endpoints(endpoints, namespace)
        full = key_prefix(connection.namespace, prefix)
        self._timeout = seconds(timeout, "timeout", allow_zero=False)
        self._keepalive = seconds(keepalive, "keepalive", allow_zero=False)
        self._max_backoff = seconds(max_backoff, "max_backoff", allow_zero=False)
        client = Client(
            connection, username=username, password=password, verify=verify, cert=cert, timeout=self._timeout
        )
        super().__init__(
            factory, service=full, logger=logger, invalidate_after=invalidate_after, close_delay=close_delay, tags=tags
        )
        self._client = client
        self._log = self._log.bind(backend="etcd")
        raw = full.encode()
        self._range = {"key": b64(raw), "range_end": b64(range_end(raw))}
        self._values: dict[bytes, bytes] = {}  # key -> value (malformed ones too: a repeat is no change)
        self._revision = 0  # the etcd revision of the last change applied
        self._published = 0  # the etcd revision of the set published
        self._unflushed = False  # changes applied and not yet published
        self._cluster: str | None = None
        self._heard = 0.0  # loop time of the last word from the watch
        self._created = False
        self._reauthenticated = False  # a watch was just refused for its token and retried at once
        self._failures = 0  # consecutive broken watches, across members
        self._rounds = 0  # backoff doublings since the last good watch
        self._start(self._run())

    # -- public ----------------------------------------------------------------------------

    @property
    def prefix(self) -> str:
        """The key prefix watched, namespace included, ending in ``/``."""
        return self.service

    @property
    def revision(self) -> int:
        """The etcd revision that the published set reflects (0 before the first read)."""
        return self._published

    @property
    def member(self) -> str:
        """The URL of the member the publisher talks to now."""
        return self._client.member

    def __repr__(self) -> str:
        return f"etcd.Publisher({self.service!r}, endpoints={','.join(self._client.members)!r})"

    # -- background ------------------------------------------------------------------------

    async def _refresh(self) -> None:
        try:
            await self._sync(newer_only=True)
        except EtcdError as error:
            self._publish_error(error)
        except (ValueError, KeyError, TypeError) as error:  # a reply not as documented
            self._publish_error(EtcdError(f"etcd: {describe(error)}", key=self.prefix))

    async def _run(self) -> None:
        synced = False
        try:
            while not self.closed:
                member = self._client.member
                try:
                    if not synced:
                        await self._sync()
                        synced = True
                    await self._watch(member)
                except _Resync as reason:
                    synced = False
                    self._log.info("etcd_resync", member=member, revision=self._revision, reason=str(reason))
                except _Reauthenticate:
                    self._log.info("etcd_token_refused", member=member)
                    self._reauthenticated = True  # once: a second refusal counts as a failure
                except EtcdError as error:
                    if error.compacted:  # the other way etcd can say it: an error instead of a cancelled watch
                        synced = False
                        self._log.info("etcd_resync", member=member, revision=self._revision, reason=error.reason)
                        continue
                    await self._failed(member, error, synced)
                except Exception as error:  # a reply not as documented, or a bug: never stop watching
                    self._log.error("etcd_watch_crashed", member=member, error=describe(error), exc_info=error)
                    failure = EtcdError(f"etcd {member}: {describe(error)}", member=member, key=self.prefix)
                    await self._failed(member, failure, synced)
        finally:
            await self._client.aclose()

    async def _failed(self, member: str, error: EtcdError, synced: bool) -> None:
        """A read or watch failed: move to the next member, and back off once every member has failed."""
        self._failures += 1
        self._client.rotate(error.member or member)
        if synced and error.transient and self._failures < len(self._client.members):
            self._log.info("etcd_watch_broken", member=member, error=describe(error), next=self._client.member)
            return  # try the next member at once: the set stays fresh meanwhile
        # A full read already tried every member; so have this many broken watches in a row.
        self._publish_error(error)
        delay = min(self._max_backoff, _FIRST_BACKOFF * 2 ** min(self._rounds, 30))
        self._rounds += 1
        await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    def _connected(self, member: str) -> None:
        """A watch is established: reset the failure counts; a stale set is fresh again."""
        if self._failures or self.last_error is not None:
            self._log.info("etcd_watch_resumed", member=member, revision=self._revision)
        self._failures = self._rounds = 0
        if self.last_error is not None:
            self._publish_current()

    # -- reading ---------------------------------------------------------------------------

    async def _sync(self, *, newer_only: bool = False) -> None:
        """Read the whole prefix (at one revision) and publish it.

        ``newer_only``: drop the read if the watch has already gone past it (a refresh).
        """
        while True:
            try:
                found, revision, header = await self._read()
                break
            except EtcdError as error:
                if not error.compacted:
                    raise  # compacted between two pages: read again at the current revision
        if newer_only and revision < self._revision:
            return
        self._check_cluster(header)
        old, values, pairs = self._values, {}, []
        with self._lock:
            known = self._by_key
            for key, value in found:
                values[key] = value
                instance = known.get(key) if old.get(key) == value else self._parse(key, value)
                if instance is not None:
                    pairs.append((key, instance))
            self._values = values
            self._reset(pairs)
        self._revision = revision
        self._publish_current()

    async def _read(self) -> tuple[list[tuple[bytes, bytes]], int, dict[str, Any]]:
        body: dict[str, Any] = {**self._range, "limit": str(_PAGE)}
        found: list[tuple[bytes, bytes]] = []
        revision = 0
        header: dict[str, Any] = {}
        while True:
            reply = await self._client.call("/v3/kv/range", body, what="range", key=self.prefix)
            if not revision:
                header = reply.get("header", {})
                revision = int(header.get("revision", 0))
                body["revision"] = str(revision)  # the next pages: the same snapshot
            kvs = reply.get("kvs", ())
            found.extend((base64.b64decode(kv["key"]), base64.b64decode(kv.get("value", ""))) for kv in kvs)
            if not reply.get("more") or not kvs:
                return found, revision, header
            body["key"] = b64(found[-1][0] + b"\0")

    def _check_cluster(self, header: dict[str, Any]) -> None:
        cluster = header.get("cluster_id")
        if cluster is not None:
            if self._cluster is not None and cluster != self._cluster:
                self._log.warning("etcd_cluster_changed", was=self._cluster, now=cluster)
            self._cluster = cluster

    # -- watching --------------------------------------------------------------------------

    async def _watch(self, member: str) -> None:
        """Watch from the revision after the last one seen until the stream breaks (always raises)."""
        loop = asyncio.get_running_loop()
        start = self._revision + 1
        body = {"create_request": {**self._range, "start_revision": str(start), "progress_notify": True}}
        self._created = False
        self._heard = loop.time()
        reader = asyncio.ensure_future(self._consume(member, body, start))
        try:
            while True:
                if reader.done():
                    reader.result()  # raises: a watch only ends by failing
                    raise AssertionError("the watch ended without an error")
                idle = loop.time() - self._heard
                if not self._created:
                    wait = self._timeout - idle
                    if wait <= 0:
                        raise EtcdError(
                            f"etcd {member}: watch {self.prefix!r} failed: not created within {self._timeout:g}s",
                            member=member,
                            key=self.prefix,
                            transient=True,
                        )
                else:
                    wait = self._keepalive - idle
                    if wait <= 0:
                        await self._check_alive(member, reader)
                        continue
                await asyncio.wait({reader}, timeout=wait)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _check_alive(self, member: str, reader: asyncio.Future[None]) -> None:
        """The watch has been quiet for ``keepalive`` seconds: ask its member whether it is still there."""
        probe = asyncio.ensure_future(self._client.probe(member, self._timeout))
        try:
            await asyncio.wait({reader, probe}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not probe.done():
                probe.cancel()
                await asyncio.gather(probe, return_exceptions=True)
        if reader.done() or probe.cancelled():
            return  # the watch itself ended; the caller looks at why
        error = probe.exception()
        if error is not None:
            self._log.info("etcd_member_silent", member=member, error=describe(error))
            raise error
        self._heard = asyncio.get_running_loop().time()

    async def _consume(self, member: str, body: dict[str, Any], start: int) -> None:
        loop = asyncio.get_running_loop()
        async with contextlib.aclosing(self._client.watch(member, body, key=self.prefix)) as stream:
            async for result in stream:
                self._heard = loop.time()
                header = result.get("header", {})
                compact = int(result.get("compact_revision", 0))
                if compact:
                    raise _Resync(f"revision {start} is compacted (compact revision {compact})")
                if result.get("canceled"):
                    reason = str(result.get("cancel_reason", "no reason given"))
                    if "compacted" in reason:
                        raise _Resync(f"revision {start} is compacted ({reason})")
                    if "auth" in reason:
                        self._client.forget_token(member)
                        if "invalid auth token" in reason and not self._reauthenticated:
                            raise _Reauthenticate
                    raise EtcdError(
                        f"etcd {member}: watch {self.prefix!r} cancelled: {reason}",
                        member=member,
                        key=self.prefix,
                        transient="Unauthenticated" in reason or "auth token" in reason,
                    )
                if result.get("created"):
                    await self._check_store(member, header)
                    self._created = True
                    self._reauthenticated = False
                    self._connected(member)
                    continue
                events = result.get("events")
                if events:
                    self._apply(events)
                else:  # a progress notification: every change up to this revision has been sent
                    self._revision = max(self._revision, int(header.get("revision", 0)))
                    if not self._unflushed:
                        self._published = self._revision

    async def _check_store(self, member: str, header: dict[str, Any]) -> None:
        """On a new watch: if the store is behind the revision seen, find out whether it went back."""
        cluster = header.get("cluster_id")
        if cluster is not None and self._cluster is not None and cluster != self._cluster:
            raise _Resync(f"{member} belongs to another cluster ({cluster})")
        revision = int(header.get("revision", 0))
        if revision >= self._revision:
            return
        # Either this member lags behind (its watch will catch up), or the data was wiped.
        reply = await self._client.call(
            "/v3/kv/range", {**self._range, "count_only": True}, what="range", key=self.prefix
        )
        current = int(reply.get("header", {}).get("revision", 0))
        if current < self._revision:
            raise _Resync(f"the store's revision went back from {self._revision} to {current}")

    def _apply(self, events: list[dict[str, Any]]) -> None:
        """Apply one watch response's events (those after the revision already reflected).

        The new set is published once the watch has read every response already received:
        a burst of changes costs one publication, a lone change is published at once.
        """
        base = top = self._revision
        changed = False
        for event in events:
            kv = event.get("kv", {})
            revision = int(kv.get("mod_revision", 0))
            if revision <= base:
                continue  # already in the set: a refresh read past it
            top = max(top, revision)
            key = base64.b64decode(kv["key"])
            deleted = event.get("type") == "DELETE"
            value = b"" if deleted else base64.b64decode(kv.get("value", ""))
            changed |= self._change(key, None if deleted else value)
        self._revision = top
        if changed and not self._unflushed:
            self._unflushed = True
            asyncio.get_running_loop().call_soon(self._flush)
        elif not self._unflushed:
            self._published = top

    def _change(self, key: bytes, value: bytes | None) -> bool:
        """Put (``value``) or delete (``None``) one key; whether anything changed."""
        old = self._values.get(key)
        if old == value:
            return False
        with self._lock:
            if value is None:
                del self._values[key]
                self._delete(key)
                return True
            self._values[key] = value
            instance = self._parse(key, value)
            if instance is None:
                self._delete(key)  # a malformed value: its key publishes nothing
            else:
                self._put(key, instance)
        return True

    def _flush(self) -> None:
        if self._unflushed and not self.closed:
            self._publish_current()

    def _parse(self, key: bytes, value: bytes) -> Instance | None:
        try:
            return parse_value(value)
        except InvalidInstanceError as error:
            self._log.error(
                "etcd_value_invalid",
                key=key.decode(errors="backslashreplace"),
                value=value.decode(errors="backslashreplace")[:500],
                error=error.reason,
            )
            return None

    def _publish_current(self) -> None:
        self._unflushed = False
        self._published = self._revision  # before publishing: subscribers may read it
        self._commit()
