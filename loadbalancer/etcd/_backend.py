"""``etcd.Backend``: etcd's v3 JSON gateway on the backend protocol of ``loadbalancer.backend``.

Listing is a linearizable range read of a key prefix, paged at one pinned revision; the
revision is the cursor. Watching resumes from the revision after it on the current member
and, when a stream breaks, moves on to the next member at once (the set stays fresh
meanwhile); only when every member has failed in a row does the watch raise, so that the
publisher marks its set stale and backs off. A compacted revision, a member of another
cluster, or a store whose revision went back raise ``CursorExpiredError``: the prefix is
read afresh. Registration is a key under a lease, kept alive; deregistration revokes it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from .._log import get_logger
from .._util import describe
from ..backend import Backend as _Backend
from ..backend import Batch, Change, CursorExpiredError, Health, Lease, LeaseLostError, Listing
from ..errors import InvalidInstanceError
from ..instance import Instance
from ._client import Client, EtcdError, b64, range_end
from ._values import encode_value, parse_value

__all__ = ["Backend"]

# Keys per range request of a full read. etcd 3.4 counts the whole range for every page,
# so small pages cost more in total than they save.
_PAGE = 10_000
_NOT_FOUND = 5  # gRPC NotFound: "requested lease not found" (it expired, or was revoked)
_CREATED = object()  # the reader's word that the watch is established
# the method ``list`` shadows the builtin in the class
_Names = list[str]
_Pairs = list[tuple[bytes, bytes]]


class _Reauthenticate(Exception):
    """The member no longer knows the token (it expired, or the member restarted): watch again with a new one."""


class Backend(_Backend):
    """etcd as a registry: ``service`` is a key prefix, or with ``root=`` a name under it.

    ``keepalive``: after this many seconds without a word from a watch, its member is asked
    for its status; no answer within the client's timeout, or a member without a leader,
    counts as a broken stream. The watch also asks etcd to end it if its member loses the
    leader, and asks for progress notifications (sent if the server enables them).
    """

    name = "etcd"

    def __init__(self, client: Client, *, root: str | None = None, keepalive: float = 5.0, logger: Any = None) -> None:
        self.client = client
        self._root = root
        self._keepalive = keepalive
        self.log = get_logger(logger, name=__name__)
        self._clusters: dict[str, str] = {}  # prefix -> the cluster id it was read from

    def prefix_of(self, service: str) -> str:
        """The key prefix (ending in ``/``) that holds ``service``'s instances."""
        if self._root is None:
            return service
        if not isinstance(service, str) or not service or "/" in service:
            raise ValueError(f"invalid service name {service!r}: it must be a non-empty string without '/'")
        return f"{self._root}{service}/"

    def position(self, cursor: Any) -> Any:
        return cursor

    # -- reading ---------------------------------------------------------------------------

    async def list(self, service: str) -> Listing:
        prefix = self.prefix_of(service)
        while True:
            try:
                found, revision, header = await self._read(prefix)
                break
            except EtcdError as error:
                if not error.compacted:
                    raise  # compacted between two pages: read again at the current revision
        self._check_cluster(prefix, header)
        instances: dict[Any, Instance] = {}
        for key, value in found:
            instance = self._parse(key, value)
            if instance is not None:
                instances[key] = instance
        return Listing(instances, revision)

    async def _read(self, prefix: str) -> tuple[_Pairs, int, dict[str, Any]]:
        raw = prefix.encode()
        body: dict[str, Any] = {"key": b64(raw), "range_end": b64(range_end(raw)), "limit": str(_PAGE)}
        found: _Pairs = []
        revision = 0
        header: dict[str, Any] = {}
        while True:
            reply = await self.client.call("/v3/kv/range", body, what="range", key=prefix)
            if not revision:
                header = reply.get("header", {})
                revision = int(header.get("revision", 0))
                body["revision"] = str(revision)  # the next pages: the same snapshot
            kvs = reply.get("kvs", ())
            found.extend((base64.b64decode(kv["key"]), base64.b64decode(kv.get("value", ""))) for kv in kvs)
            if not reply.get("more") or not kvs:
                return found, revision, header
            body["key"] = b64(found[-1][0] + b"\0")

    def _check_cluster(self, prefix: str, header: dict[str, Any]) -> None:
        cluster = header.get("cluster_id")
        if cluster is not None:
            known = self._clusters.get(prefix)
            if known is not None and cluster != known:
                self.log.warning("etcd_cluster_changed", prefix=prefix, was=known, now=cluster)
            self._clusters[prefix] = cluster

    def _parse(self, key: bytes, value: bytes) -> Instance | None:
        try:
            return parse_value(value)
        except InvalidInstanceError as error:
            self.log.error(
                "etcd_value_invalid",
                key=key.decode(errors="backslashreplace"),
                value=value.decode(errors="backslashreplace")[:500],
                error=error.reason,
            )
            return None

    # -- watching --------------------------------------------------------------------------

    async def watch(self, service: str, cursor: Any) -> AsyncIterator[Batch]:
        """Batches after revision ``cursor``, moving from member to member until every one failed in a row."""
        prefix = self.prefix_of(service)
        revision = int(cursor or 0)
        members = len(self.client.members)
        failures = 0
        reauthenticated = False
        while True:
            member = self.client.member
            try:
                async for batch in self._watch_member(member, prefix, revision):
                    if batch is _CREATED:
                        if failures:
                            self.log.info("etcd_watch_resumed", member=member, revision=revision)
                        failures = 0
                        reauthenticated = False
                        yield Batch((), revision)
                        continue
                    assert isinstance(batch, Batch)
                    revision = max(revision, int(batch.cursor))
                    yield batch
            except _Reauthenticate:
                self.log.info("etcd_token_refused", member=member)
                if not reauthenticated:
                    reauthenticated = True  # once: a second refusal counts as a failure
                    continue
                error: EtcdError = EtcdError(
                    f"etcd {member}: watch {prefix!r} refused the token again", member=member, key=prefix
                )
            except CursorExpiredError:
                raise  # the publisher logs it and reads the prefix afresh
            except EtcdError as failure:
                if failure.compacted:  # the other way etcd can say it: an error instead of a cancelled watch
                    raise CursorExpiredError(failure.reason) from failure
                error = failure
            except Exception as crash:  # a reply not as documented, or a bug: never stop watching
                self.log.error("etcd_watch_crashed", member=member, error=describe(crash), exc_info=crash)
                error = EtcdError(f"etcd {member}: {describe(crash)}", member=member, key=prefix)
            failures += 1
            self.client.rotate(error.member or member)
            if not (error.transient and failures < members):
                raise error  # every member failed in a row: the publisher marks the set stale and backs off
            self.log.info("etcd_watch_broken", member=member, error=describe(error), next=self.client.member)

    async def _watch_member(self, member: str, prefix: str, revision: int) -> AsyncIterator[object]:
        """One member's watch from ``revision + 1``: ``_CREATED``, then batches; raises when it breaks."""
        loop = asyncio.get_running_loop()
        start = revision + 1
        raw = prefix.encode()
        body = {
            "create_request": {
                "key": b64(raw),
                "range_end": b64(range_end(raw)),
                "start_revision": str(start),
                "progress_notify": True,
            }
        }
        queue: asyncio.Queue[object] = asyncio.Queue()
        reader = asyncio.ensure_future(self._consume(member, prefix, body, start, queue))
        created = False
        heard = loop.time()
        timeout = self.client.timeout
        try:
            while True:
                idle = loop.time() - heard
                wait = (self._keepalive if created else timeout) - idle
                if wait <= 0:
                    if not created:
                        raise EtcdError(
                            f"etcd {member}: watch {prefix!r} failed: not created within {timeout:g}s",
                            member=member,
                            key=prefix,
                            transient=True,
                        )
                    await self._check_alive(member, reader, queue)
                    heard = loop.time()
                    continue
                try:
                    async with asyncio.timeout(wait):
                        item = await queue.get()
                except TimeoutError:
                    continue
                heard = loop.time()
                if isinstance(item, BaseException):
                    raise item
                if item is _CREATED:
                    created = True
                yield item
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _check_alive(self, member: str, reader: asyncio.Future[None], queue: asyncio.Queue[object]) -> None:
        """The watch has been quiet for ``keepalive`` seconds: ask its member whether it is still there."""
        probe = asyncio.ensure_future(self.client.probe(member, self.client.timeout))
        try:
            await asyncio.wait({reader, probe}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not probe.done():
                probe.cancel()
                await asyncio.gather(probe, return_exceptions=True)
        if reader.done() or probe.cancelled() or not queue.empty():
            return  # the watch itself spoke or ended; the caller looks at what it said
        error = probe.exception()
        if error is not None:
            self.log.info("etcd_member_silent", member=member, error=describe(error))
            raise error

    async def _consume(
        self, member: str, prefix: str, body: dict[str, Any], start: int, queue: asyncio.Queue[object]
    ) -> None:
        try:
            async with contextlib.aclosing(self.client.watch(member, body, key=prefix)) as stream:
                async for result in stream:
                    item = await self._read_result(member, prefix, start, result)
                    if item is not None:
                        queue.put_nowait(item)
        except BaseException as error:
            queue.put_nowait(error)
            if isinstance(error, asyncio.CancelledError):
                raise

    async def _read_result(self, member: str, prefix: str, start: int, result: dict[str, Any]) -> object:
        header = result.get("header", {})
        compact = int(result.get("compact_revision", 0))
        if compact:
            raise CursorExpiredError(f"revision {start} is compacted (compact revision {compact})")
        if result.get("canceled"):
            reason = str(result.get("cancel_reason", "no reason given"))
            if "compacted" in reason:
                raise CursorExpiredError(f"revision {start} is compacted ({reason})")
            if "auth" in reason:
                self.client.forget_token(member)
                if "invalid auth token" in reason:
                    raise _Reauthenticate
            raise EtcdError(
                f"etcd {member}: watch {prefix!r} cancelled: {reason}",
                member=member,
                key=prefix,
                transient="Unauthenticated" in reason or "auth token" in reason,
            )
        if result.get("created"):
            await self._check_store(member, prefix, start - 1, header)
            return _CREATED
        events = result.get("events")
        if not events:  # a progress notification: every change up to this revision has been sent
            return Batch((), int(header.get("revision", 0)))
        changes: list[Change] = []
        top = start - 1
        for event in events:
            kv = event.get("kv", {})
            revision = int(kv.get("mod_revision", 0))
            top = max(top, revision)
            key = base64.b64decode(kv["key"])
            if event.get("type") == "DELETE":
                changes.append(Change(key, None, revision))
            else:
                # a malformed value: its key publishes nothing (as if deleted)
                changes.append(Change(key, self._parse(key, base64.b64decode(kv.get("value", ""))), revision))
        return Batch(changes, top)

    async def _check_store(self, member: str, prefix: str, revision: int, header: dict[str, Any]) -> None:
        """On a new watch: if the store is behind the revision seen, find out whether it went back."""
        cluster = header.get("cluster_id")
        known = self._clusters.get(prefix)
        if cluster is not None and known is not None and cluster != known:
            raise CursorExpiredError(f"{member} belongs to another cluster ({cluster})")
        if int(header.get("revision", 0)) >= revision:
            return
        # Either this member lags behind (its watch will catch up), or the data was wiped.
        raw = prefix.encode()
        reply = await self.client.call(
            "/v3/kv/range",
            {"key": b64(raw), "range_end": b64(range_end(raw)), "count_only": True},
            what="range",
            key=prefix,
        )
        current = int(reply.get("header", {}).get("revision", 0))
        if current < revision:
            raise CursorExpiredError(f"the store's revision went back from {revision} to {current}")

    # -- registering -----------------------------------------------------------------------

    async def register(self, service: str, instance: Instance, ttl: float) -> Lease:
        """Grant a lease of ``ttl`` whole seconds and put ``{prefix}{host:port}`` under it."""
        key = self.prefix_of(service) + instance.address
        value = encode_value(instance, service if self._root is not None else None)
        return await self.put_with_lease(service, instance, key, value.encode(), int(ttl))

    async def put_with_lease(self, service: str, instance: Instance, key: str, value: bytes, ttl: int) -> Lease:
        reply = await self.client.call("/v3/lease/grant", {"TTL": str(ttl)}, what="lease grant for", key=key)
        lease = int(reply["ID"])
        granted = float(reply.get("TTL", ttl))
        try:
            await self.client.call(
                "/v3/kv/put", {"key": b64(key), "value": b64(value), "lease": str(lease)}, what="put", key=key
            )
        except BaseException:
            with contextlib.suppress(EtcdError):
                await self._revoke(lease, key, self.client.timeout)
            raise
        return Lease(service, instance, granted, (lease, key, value), lease)

    async def keepalive(self, lease: Lease) -> None:
        lease_id, key, _ = lease.handle
        # Short timeouts: a slow member must not make the lease expire before the next one is tried.
        within = min(self.client.timeout, max(lease.ttl / 4, 0.5))
        reply = await self.client.call(
            "/v3/lease/keepalive", {"ID": str(lease_id)}, what="lease keep-alive for", key=key, within=within
        )
        if int(reply.get("TTL", 0)) <= 0:  # etcd leaves TTL out: the lease is gone
            raise LeaseLostError(f"etcd: lease {lease_id:x} of {key!r} expired or was revoked")

    async def deregister(self, lease: Lease, within: float | None = None) -> None:
        lease_id, key, _ = lease.handle
        await self._revoke(lease_id, key, self.client.timeout if within is None else within)

    async def _revoke(self, lease: int, key: str, within: float) -> None:
        try:
            await self.client.call(
                "/v3/lease/revoke", {"ID": str(lease)}, what="lease revoke for", key=key, within=within
            )
        except EtcdError as error:
            if error.code != _NOT_FOUND:  # not found: it expired already, and the key went with it
                raise

    async def services(self) -> _Names:
        """The names with at least one key under ``root`` (a ``Registry``'s backend only)."""
        if self._root is None:
            raise NotImplementedError("an etcd backend without root= holds one prefix, not services by name")
        raw = self._root.encode()
        reply = await self.client.call(
            "/v3/kv/range",
            {"key": b64(raw), "range_end": b64(range_end(raw)), "keys_only": True},
            what="range",
            key=self._root,
        )
        names = set()
        for kv in reply.get("kvs", ()):
            rest = base64.b64decode(kv["key"])[len(raw) :].decode(errors="replace")
            name, slash, _ = rest.partition("/")
            if slash and name:
                names.add(name)
        return sorted(names)

    async def health(self) -> Health:
        try:
            await self.client.probe(self.client.member, self.client.timeout)
        except EtcdError as error:
            return Health(False, {"member": self.client.member, "error": describe(error)})
        return Health(True, {"member": self.client.member})

    async def aclose(self) -> None:
        await self.client.aclose()

    def __repr__(self) -> str:
        return f"etcd.Backend({','.join(self.client.members)!r})"
