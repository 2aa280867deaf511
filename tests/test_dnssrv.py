"""dnssrv.Publisher against a real BIND 9 changed at runtime with RFC 2136 updates.

Every query goes to 127.0.0.1 or ::1: each publisher gets a resolver naming the test server.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import struct
import threading
import time
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.inet
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loadbalancer import DiscoveryError, EndpointSet, RoundRobin, backend, dnssrv, static
from loadbalancer._runtime import RUNTIME
from loadbalancer.dnssrv._resolver import async_resolver
from loadbalancer.dnssrv._wire import Key, Malformed, UdpQuery, key_records, read_name, scan
from tests.helpers import Factory, aeventually, events, eventually
from tests.servers import BindServer, BlackHole, FakeDNS, rcode_reply, srv_reply

Resolver = dns.resolver.Resolver | dns.asyncresolver.Resolver


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    """Which kind of dnspython resolver the publisher is given."""
    return str(request.param)


def resolver(port: int, kind: str = "sync", *, host: str = "127.0.0.1", timeout: float = 1.0) -> Resolver:
    made: Resolver = (
        dns.resolver.Resolver(configure=False) if kind == "sync" else dns.asyncresolver.Resolver(configure=False)
    )
    made.nameservers = [host]
    made.port = port
    made.timeout = timeout
    made.lifetime = 2 * timeout
    return made


def publisher(
    server: BindServer | FakeDNS,
    name: str,
    factory: Any = None,
    *,
    kind: str = "sync",
    interval: float = 0.05,
    timeout: float = 1.0,
    **options: Any,
) -> dnssrv.Publisher[Any]:
    full = server.name(name) if isinstance(server, BindServer) else name
    options.setdefault("close_delay", 0)
    return dnssrv.Publisher(
        full, interval, factory or Factory(), resolver=resolver(server.port, kind, timeout=timeout), **options
    )


def addresses(endpoints: EndpointSet[Any]) -> list[str]:
    return [str(instance) for instance in endpoints.instances]


def host(srv_name: str, label: str) -> str:
    """A target name of this test's own: ``("_t7._tcp", "a")`` -> ``"t7-a"``."""
    return f"{srv_name.split('.')[0].lstrip('_')}-{label}"


def probes(p: Any) -> list[float]:
    """The polls of ``p`` that asked its backend to revalidate, counted as they start.

    A poll starts only once the one before it has ended, and what it published with it:
    ``n + 1`` polls started since a moment means ``n`` whole polls ran after it.
    """
    started: list[float] = []
    revalidate = p.backend.revalidate

    def counted(service: str, cursor: Any, done: Any) -> Any:
        started.append(time.monotonic())
        return revalidate(service, cursor, done)

    p.backend.revalidate = counted
    return started


def wait_polls(started: list[float], count: int, what: str) -> None:
    """Wait until ``count`` whole polls have run from now (``started``: from ``probes()``)."""
    target = len(started) + count + 1
    eventually(lambda: len(started) >= target, 10, what)


# -- following the records ------------------------------------------------------------------


def test_follows_targets_added_removed_and_reweighted(bind: BindServer, srv_name: str, kind: str) -> None:
    a, b, c = (f"{host(srv_name, x)}.example.test" for x in "abc")
    bind.set_srv(srv_name, [(10, 5, 8080, a + "."), (10, 5, 8081, b + ".")])
    factory = Factory()
    with publisher(bind, srv_name, factory, kind=kind) as p:
        eventually(lambda: addresses(p.endpoints()) == [f"{a}:8080", f"{b}:8081"], what="first set")
        first_a = p.endpoints()[0]

        bind.add_srv(srv_name, [(5, 1, 9000, c + ".")])
        eventually(lambda: addresses(p.endpoints()) == [f"{c}:9000", f"{a}:8080", f"{b}:8081"], what="added")

        removed = next(e for e in factory.made if e.address == f"{b}:8081")
        bind.delete_srv(srv_name, [(10, 5, 8081, b + ".")])
        eventually(lambda: addresses(p.endpoints()) == [f"{c}:9000", f"{a}:8080"], what="removed")
        eventually(lambda: removed.closed, what="removed endpoint closed")

        bind.set_srv(srv_name, [(10, 50, 8080, a + "."), (5, 1, 9000, c + ".")])
        eventually(lambda: [i.weight for i in p.endpoints().instances] == [1, 50], what="re-weighted")
        assert p.endpoints()[1] is first_a  # the same instance keeps its endpoint
        assert factory.calls == {f"{a}:8080": 1, f"{b}:8081": 1, f"{c}:9000": 1}
        assert not any(e.closed for e in factory.made if e is not removed)
    assert all(e.closed for e in factory.made)  # close() closes the rest


def test_instances_carry_priority_weight_and_ttl_sorted(bind: BindServer, srv_name: str) -> None:
    records = [(20, 1, 1, "z"), (10, 1, 2, "y"), (10, 9, 3, "x"), (10, 9, 4, "w")]
    bind.set_srv(srv_name, [(p, w, port, host(srv_name, t)) for p, w, port, t in records], ttl=30)
    with publisher(bind, srv_name) as p:
        eventually(lambda: len(p.endpoints()) == 4)
        got = [(i.host.split(".")[0], i.port, i.priority, i.weight, i.ttl) for i in p.endpoints().instances]
        assert got == [
            (host(srv_name, "w"), 4, 10, 9, 30),
            (host(srv_name, "x"), 3, 10, 9, 30),
            (host(srv_name, "y"), 2, 10, 1, 30),
            (host(srv_name, "z"), 1, 20, 1, 30),
        ]
        assert p.endpoints().instances[0].host == f"{host(srv_name, 'w')}.example.test"  # no trailing dot
        assert p.name == p.service == bind.name(srv_name)


def test_an_unchanged_answer_is_not_published_again(bind: BindServer, srv_name: str) -> None:
    # BIND shuffles the records of a set on each answer; a TTL-only change is no change either.
    records = [(10, 1, 80 + i, host(srv_name, str(i))) for i in range(4)]
    bind.set_srv(srv_name, records, ttl=5)
    with publisher(bind, srv_name, interval=0.02) as p:
        polls = probes(p)
        eventually(lambda: len(p.endpoints()) == 4)
        seen: list[EndpointSet[Any]] = []
        p.subscribe(seen.append)
        for _ in range(5):
            p.refresh()  # through the resolver (a refresh publishes before it returns)
        wait_polls(polls, 12, "a dozen probes")
        bind.set_srv(srv_name, list(reversed(records)), ttl=60)
        p.refresh()
        wait_polls(polls, 3, "probes of the answer with the new TTL")
        assert len(seen) == 1
        assert {i.ttl for i in p.endpoints().instances} == {5}
        bind.set_srv(srv_name, records[:3], ttl=60)  # a real change is published: the subscription works
        eventually(lambda: len(seen) == 2, what="the change published")


def test_nxdomain_keeps_the_last_set_stale(bind: BindServer, srv_name: str, logs: pytest.LogCaptureFixture) -> None:
    bind.set_srv(srv_name, [(10, 1, 80, host(srv_name, "a"))])
    with publisher(bind, srv_name) as p:
        eventually(lambda: len(p.endpoints()) == 1)
        endpoint = p.endpoints()[0]
        bind.delete_name(srv_name)
        eventually(lambda: p.endpoints().stale, what="stale")
        assert len(p.endpoints()) == 1 and isinstance(p.last_error, dnssrv.NameNotFoundError)  # a failure
        assert not endpoint.closed
        assert events(logs, "srv_name_not_found")
        bind.set_srv(srv_name, [(10, 1, 81, host(srv_name, "a"))])
        eventually(lambda: [i.port for i in p.endpoints().instances] == [81], what="back")


def test_an_answer_without_srv_records_empties_the_set(bind: BindServer, srv_name: str) -> None:
    bind.set_srv(srv_name, [(10, 1, 80, host(srv_name, "a"))])
    with publisher(bind, srv_name) as p:
        eventually(lambda: len(p.endpoints()) == 1)
        bind.delete_srv(srv_name, [(10, 1, 80, host(srv_name, "a"))])
        bind.set_records(srv_name, "TXT", ['"no SRV here"'])  # the name stays, with no SRV record
        eventually(lambda: len(p.endpoints()) == 0)
        assert not p.endpoints().stale


def test_a_dot_target_means_decidedly_not_available(
    bind: BindServer, srv_name: str, logs: pytest.LogCaptureFixture
) -> None:
    bind.set_srv(srv_name, [(10, 1, 80, host(srv_name, "a"))])
    with publisher(bind, srv_name) as p:
        eventually(lambda: len(p.endpoints()) == 1)
        bind.set_srv(srv_name, [(0, 0, 0, ".")])
        eventually(lambda: len(p.endpoints()) == 0)
        assert not p.endpoints().stale
        assert events(logs, "srv_service_not_available")
        bind.set_srv(srv_name, [(0, 0, 0, "."), (10, 1, 81, host(srv_name, "a"))])
        eventually(lambda: [i.port for i in p.endpoints().instances] == [81], what="'.' beside a real target")


def test_a_large_answer_comes_over_tcp(bind: BindServer, srv_name: str) -> None:
    records = [(10, 1, 1000 + i, f"{host(srv_name, 'x')}-{i:02d}") for i in range(40)]
    bind.set_srv(srv_name, records)  # far beyond 512 bytes: truncated over UDP
    with publisher(bind, srv_name) as p:
        eventually(lambda: len(p.endpoints()) == 40)
        bind.delete_srv(srv_name, records[:1])
        eventually(lambda: len(p.endpoints()) == 39)


def test_ipv6_nameserver(bind: BindServer, srv_name: str) -> None:
    bind.set_srv(srv_name, [(10, 1, 80, host(srv_name, "a"))])
    with dnssrv.Publisher(bind.name(srv_name), 0.05, str, resolver=bind.resolver(v6=True), close_delay=0) as p:
        eventually(lambda: len(p.endpoints()) == 1)
        bind.set_srv(srv_name, [(10, 1, 81, host(srv_name, "a"))])
        eventually(lambda: [i.port for i in p.endpoints().instances] == [81])


def test_steady_state_polls_are_probes_and_changes_go_through_the_resolver(bind: BindServer, srv_name: str) -> None:
    records = [(10, 1, 80 + i, host(srv_name, str(i))) for i in range(3)]
    bind.set_srv(srv_name, records)
    with publisher(bind, srv_name, interval=0.02) as p:
        polls = probes(p)
        eventually(lambda: len(p.endpoints()) == 3)
        lookups: list[str] = []
        resolve = p.backend.list

        async def counted(service: str) -> Any:
            lookups.append(service)
            return await resolve(service)

        p.backend.list = counted  # type: ignore[method-assign]
        wait_polls(polls, 12, "a dozen polls of an unchanged (but shuffled) answer")
        assert lookups == []
        bind.set_srv(srv_name, records[:2])
        eventually(lambda: len(p.endpoints()) == 2)
        assert lookups


def test_a_reconfigured_async_resolver_is_followed(bind: BindServer, srv_name: str) -> None:
    bind.set_srv(srv_name, [(10, 1, 80, host(srv_name, "a"))])
    given = resolver(bind.port, "async")
    with (
        FakeDNS(lambda query: srv_reply(query, [(1, 1, 99, "other.example.")])) as other,
        dnssrv.Publisher(bind.name(srv_name), 0.05, str, resolver=given) as p,
    ):
        eventually(lambda: [i.port for i in p.endpoints().instances] == [80])
        given.port = other.port  # the probe must not keep asking the old server
        eventually(lambda: [i.port for i in p.endpoints().instances] == [99])


# -- resolving targets to addresses ---------------------------------------------------------


def test_resolve_targets_from_the_additional_section(bind: BindServer, srv_name: str) -> None:
    a, none = host(srv_name, "a"), host(srv_name, "none")
    bind.set_address(a, ["127.0.0.2", "::2"])
    bind.set_srv(srv_name, [(10, 5, 80, a), (20, 1, 81, none)])  # ``none`` has no address
    factory = Factory()
    with publisher(bind, srv_name, factory, resolve_targets=True) as p:
        eventually(lambda: addresses(p.endpoints()) == ["127.0.0.2:80", "[::2]:80"])
        assert {(i.priority, i.weight) for i in p.endpoints().instances} == {(10, 5)}
        bind.set_address(a, ["127.0.0.3"])  # only the glue changes
        eventually(lambda: addresses(p.endpoints()) == ["127.0.0.3:80"])
        assert sorted(factory.calls) == ["127.0.0.2:80", "127.0.0.3:80", "[::2]:80"]


def test_resolve_targets_looks_addresses_up_without_glue() -> None:
    def handler(query: dns.message.Message) -> bytes | None:
        question = query.question[0]
        if question.rdtype == dns.rdatatype.SRV:
            return srv_reply(query, [(10, 1, 80, "a.example."), (10, 1, 81, "gone.example.")])
        if question.name == dns.name.from_text("gone.example."):
            return rcode_reply(query, dns.rcode.NXDOMAIN)
        reply = dns.message.make_response(query)
        if question.rdtype == dns.rdatatype.A:
            rrset = reply.find_rrset(reply.answer, question.name, dns.rdataclass.IN, dns.rdatatype.A, create=True)
            rrset.add(dns.rdata.from_text("IN", "A", "127.0.0.5"), 7)
        return reply.to_wire()

    with FakeDNS(handler) as server, publisher(server, "_api._tcp.example.", resolve_targets=True) as p:
        eventually(lambda: addresses(p.endpoints()) == ["127.0.0.5:80"])
        assert p.endpoints().instances[0].ttl == 0  # the smaller of the SRV and A record TTLs


# -- failures: stale beats empty ------------------------------------------------------------


def test_stopped_server_keeps_the_last_good_set_and_recovery_on_the_same_port(
    private_bind: BindServer, kind: str, logs: pytest.LogCaptureFixture
) -> None:
    bind = private_bind
    bind.set_srv("_api._tcp", [(10, 1, 80, "a")])
    with publisher(bind, "_api._tcp", kind=kind, timeout=0.1, max_backoff=0.2) as p:
        eventually(lambda: len(p.endpoints()) == 1)
        endpoint = p.endpoints()[0]
        bind.stop()
        eventually(lambda: p.endpoints().stale, timeout=10, what="stale")
        assert p.endpoints()[0] is endpoint and not endpoint.closed
        error = p.last_error
        assert isinstance(error, DiscoveryError)
        assert bind.name("_api._tcp") in str(error) and f"127.0.0.1@{bind.port}" in str(error)
        failed = events(logs, "srv_lookup_failed")
        assert failed and failed[0].server == f"127.0.0.1@{bind.port}"  # type: ignore[attr-defined]

        bind.start()  # the same port, the same records
        eventually(lambda: not p.endpoints().stale, timeout=10, what="recovered")
        assert p.endpoints()[0] is endpoint
        bind.set_srv("_api._tcp", [(10, 1, 81, "a")])
        eventually(lambda: [i.port for i in p.endpoints().instances] == [81], what="following again")


def test_a_server_that_never_answers_keeps_the_set_and_logs_timeouts(
    private_bind: BindServer, kind: str, logs: pytest.LogCaptureFixture
) -> None:
    bind = private_bind
    bind.set_srv("_api._tcp", [(10, 1, 80, "a")])
    with publisher(bind, "_api._tcp", kind=kind, timeout=0.1, max_backoff=0.2) as p:
        eventually(lambda: len(p.endpoints()) == 1)
        bind.stop()
        with BlackHole(port=bind.port) as hole:
            eventually(lambda: p.endpoints().stale, timeout=10, what="stale")
            assert addresses(p.endpoints()) == ["a.example.test:80"]
            assert "timed out" in str(p.last_error) or "Timeout" in str(p.last_error)
            assert hole.queries > 0
            assert any("Timeout" in str(r.error) for r in events(logs, "srv_lookup_failed"))  # type: ignore[attr-defined]
        bind.start()
        eventually(lambda: not p.endpoints().stale, timeout=10, what="recovered")


@pytest.mark.parametrize("failure", ["servfail", "refused", "malformed", "truncated", "wrong id"])
def test_bad_answers_keep_the_last_good_set(failure: str, logs: pytest.LogCaptureFixture) -> None:
    good = [(10, 1, 80, "a.example."), (20, 1, 81, "b.example.")]
    healthy = threading.Event()
    healthy.set()

    def handler(query: dns.message.Message) -> bytes | None:
        if healthy.is_set():
            return srv_reply(query, good)
        if failure == "servfail":
            return rcode_reply(query, dns.rcode.SERVFAIL)
        if failure == "refused":
            return rcode_reply(query, dns.rcode.REFUSED)
        wire = bytearray(srv_reply(query, good))
        if failure == "malformed":
            struct.pack_into("!H", wire, 6, 5)  # claims five answers, holds two
        elif failure == "truncated":
            wire[2] |= 0x02  # TC: dnspython retries over TCP, where nothing listens
        else:
            wire[0] ^= 0xFF  # not the query's ID: ignored, so the query times out
        return bytes(wire)

    with FakeDNS(handler) as server, publisher(server, "_api._tcp.example.", timeout=0.1, max_backoff=0.2) as p:
        eventually(lambda: len(p.endpoints()) == 2)
        healthy.clear()
        eventually(lambda: p.endpoints().stale, timeout=10, what="stale")
        assert addresses(p.endpoints()) == ["a.example:80", "b.example:81"]
        assert f"127.0.0.1@{server.port}" in str(p.last_error)
        assert "_api._tcp.example." in str(p.last_error)
        assert events(logs, "srv_lookup_failed") and events(logs, "refresh_failed")
        healthy.set()
        eventually(lambda: not p.endpoints().stale, timeout=10, what="recovered")


def test_invalidate_after_drops_a_set_stale_for_too_long(private_bind: BindServer) -> None:
    private_bind.set_srv("_api._tcp", [(10, 1, 80, "a")])
    with publisher(private_bind, "_api._tcp", timeout=0.1, invalidate_after=0.2) as p:
        eventually(lambda: len(p.endpoints()) == 1)
        endpoint = p.endpoints()[0]
        private_bind.stop()
        eventually(lambda: len(p.endpoints()) == 0 and p.endpoints().stale, timeout=10)
        eventually(lambda: endpoint.closed)


# -- construction ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "invalid SRV name '': it is empty"),
        (".", "invalid SRV name '.': it is empty"),
        ("_api._tcp..example.", "invalid SRV name '_api._tcp..example.': empty label"),
        ("bad name.example.", "label 'bad name' may hold only"),
        ("-a.example.", "label '-a' may hold only"),
        ("a" * 64 + ".example.", "is longer than 63 characters"),
        ("a." * 127 + "b", "longer than 253 characters"),
    ],
)
def test_a_bad_name_is_a_value_error(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        dnssrv.Publisher(name, 5.0, str, resolver=resolver(1))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"interval": 0}, "interval must be positive, got 0.0"),
        ({"interval": -1.5}, "interval must be positive, got -1.5"),
        ({"timeout": 0}, "timeout must be positive, got 0.0"),
        ({"jitter": 1.0}, r"jitter must be a fraction in \[0, 1\), got 1.0"),
        ({"jitter": -0.1}, "jitter must be a fraction"),
        ({"min_interval": 10, "max_interval": 5}, r"min_interval \(10\) must not exceed max_interval \(5\)"),
        ({"max_backoff": -1}, "max_backoff must be non-negative, got -1.0"),
        ({"close_delay": -1}, "close_delay must be non-negative"),
    ],
)
def test_bad_options_are_value_errors(options: dict[str, Any], message: str) -> None:
    interval = options.pop("interval", 5.0)
    with pytest.raises(ValueError, match=message):
        dnssrv.Publisher("_api._tcp.example.", interval, str, resolver=resolver(1), **options)


def test_wrong_types_are_type_errors() -> None:
    with pytest.raises(TypeError, match="the SRV name must be a string"):
        dnssrv.Publisher(dns.name.from_text("a.example."), 5.0, str, resolver=resolver(1))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="resolver must be a dns.resolver.Resolver"):
        dnssrv.Publisher("a.example.", 5.0, str, resolver="127.0.0.1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="factory must be callable"):
        dnssrv.Publisher("a.example.", 5.0, 42, resolver=resolver(1))  # type: ignore[arg-type]


def test_durations_accept_timedelta_and_names_may_be_relative(bind: BindServer, srv_name: str) -> None:
    from datetime import timedelta

    bind.set_srv(srv_name, [(10, 1, 80, host(srv_name, "a"))])
    relative = bind.name(srv_name).rstrip(".")
    with dnssrv.Publisher(relative, timedelta(milliseconds=50), str, resolver=resolver(bind.port)) as p:
        assert p.name == relative + "."
        eventually(lambda: len(p.endpoints()) == 1)
        assert repr(p) == f"dnssrv.Publisher({relative + '.'!r}, interval=0.05)"


def test_resolver_settings() -> None:
    sync = dns.resolver.Resolver(configure=False)
    sync.nameservers = ["127.0.0.1", "::1"]
    sync.port = 5300
    sync.nameserver_ports = {"::1": 5301}
    sync.timeout, sync.lifetime = 0.3, 0.7
    sync.use_edns(0, 0, 1232)
    twin = async_resolver(sync)
    assert isinstance(twin, dns.asyncresolver.Resolver)
    assert (twin.nameservers, twin.port, twin.nameserver_ports) == (["127.0.0.1", "::1"], 5300, {"::1": 5301})
    assert (twin.timeout, twin.lifetime, twin.edns, twin.payload) == (0.3, 0.7, 0, 1232)
    sync.nameservers = ["127.0.0.2"]
    sync.nameserver_ports["::1"] = 1
    assert twin.nameservers == ["127.0.0.1", "::1"] and twin.nameserver_ports == {"::1": 5301}

    given = dns.asyncresolver.Resolver(configure=False)
    assert async_resolver(given) is given
    # The default reads the system's configuration (no query is sent here).
    assert async_resolver(None).nameservers == dns.resolver.Resolver().nameservers


# -- refresh, signals, scheduling -----------------------------------------------------------


def test_refresh_looks_up_at_once(bind: BindServer, srv_name: str) -> None:
    bind.set_srv(srv_name, [(10, 1, 80, host(srv_name, "a"))])
    with publisher(bind, srv_name, interval=3600) as p:
        assert [i.port for i in p.refresh().instances] == [80]
        bind.set_srv(srv_name, [(10, 1, 81, host(srv_name, "a"))])
        assert [i.port for i in p.refresh().instances] == [81]
    assert p.refresh() == ()  # closed: nothing


async def test_arefresh_from_another_event_loop(bind: BindServer, srv_name: str) -> None:
    bind.set_srv(srv_name, [(10, 1, 80, host(srv_name, "a"))])
    async with publisher(bind, srv_name, interval=3600) as p:
        assert [i.port for i in (await p.arefresh()).instances] == [80]
        bind.set_srv(srv_name, [(10, 1, 82, host(srv_name, "a"))])
        endpoints = await asyncio.gather(*(p.arefresh() for _ in range(5)))
        assert all([i.port for i in e.instances] == [82] for e in endpoints)
        balancer = RoundRobin(p)
        assert balancer.endpoint() is p.endpoints()[0]


def test_refresh_on_the_runtime_thread_says_what_to_do(bind: BindServer, srv_name: str) -> None:
    bind.set_srv(srv_name, [(10, 1, 80, host(srv_name, "a"))])
    errors: list[Exception] = []

    def subscriber(endpoints: EndpointSet[Any]) -> None:
        if RUNTIME.in_loop_thread():
            try:
                p.refresh()
            except RuntimeError as error:
                errors.append(error)

    with publisher(bind, srv_name) as p:
        p.subscribe(subscriber)
        bind.set_srv(srv_name, [(10, 1, 81, host(srv_name, "a"))])
        eventually(lambda: errors)
        assert "arefresh()" in str(errors[0])


def test_concurrent_refreshes_call_the_factory_once_per_instance(bind: BindServer, srv_name: str) -> None:
    factory = Factory()
    bind.set_srv(srv_name, [(10, 1, 80, host(srv_name, "a"))])
    with publisher(bind, srv_name, factory, interval=0.01) as p:
        barrier = threading.Barrier(8)

        def refresh() -> None:
            barrier.wait()
            for _ in range(10):
                assert len(p.refresh()) in (1, 2)

        threads = [threading.Thread(target=refresh) for _ in range(8)]
        for thread in threads:
            thread.start()
        bind.add_srv(srv_name, [(10, 1, 81, host(srv_name, "b"))])
        for thread in threads:
            thread.join(30)
        eventually(lambda: len(p.endpoints()) == 2)
        assert set(factory.calls.values()) == {1}


def test_refresh_on_sighup(bind: BindServer, srv_name: str) -> None:
    bind.set_srv(srv_name, [(10, 1, 80, host(srv_name, "a"))])
    earlier: list[int] = []

    def previous(signum: int, frame: object) -> None:
        earlier.append(signum)

    saved = signal.signal(signal.SIGHUP, previous)
    try:
        with publisher(bind, srv_name, interval=3600) as p, static.Publisher(["127.0.0.1:1"], str) as other:
            eventually(lambda: len(p.endpoints()) == 1)
            handler = dnssrv.refresh_on_signal(p, other)
            assert "SIGHUP" in repr(handler)
            bind.set_srv(srv_name, [(10, 1, 81, host(srv_name, "a"))])
            os.kill(os.getpid(), signal.SIGHUP)
            eventually(lambda: [i.port for i in p.endpoints().instances] == [81], what="refreshed on SIGHUP")
            assert earlier == [signal.SIGHUP]  # the handler before is still called
            handler.remove()
            handler.remove()  # idempotent
            assert signal.getsignal(signal.SIGHUP) is previous
    finally:
        signal.signal(signal.SIGHUP, saved)


def test_refresh_on_signal_errors() -> None:
    with pytest.raises(ValueError, match="at least one publisher"):
        dnssrv.refresh_on_signal()
    with pytest.raises(TypeError, match="takes loadbalancer publishers"):
        dnssrv.refresh_on_signal("_api._tcp.example.")  # type: ignore[arg-type]
    errors: list[Exception] = []
    with static.Publisher(["127.0.0.1:1"], str) as p:

        def install() -> None:
            try:
                dnssrv.refresh_on_signal(p)
            except RuntimeError as error:
                errors.append(error)

        thread = threading.Thread(target=install)
        thread.start()
        thread.join()
    assert "must be called from the main thread" in str(errors[0])


def test_waits_backoff_jitter_and_follow_ttl() -> None:
    with BlackHole() as hole:
        p = dnssrv.Publisher(
            "_api._tcp.example.",
            2.0,
            str,
            resolver=resolver(hole.port),
            jitter=0,
            follow_ttl=True,
            min_interval=1,
            max_interval=100,
            max_backoff=10,
        )
        p.close()
    schedule = p._schedule  # the generic publisher's, for every polled backend
    assert [schedule.wait(ttl) for ttl in (None, 0, 50, 1000)] == [2.0, 1.0, 50.0, 100.0]
    waits = []
    for failures in (1, 2, 3, 4, 5000):
        schedule.backoff.failures = failures
        waits.append(schedule.wait(50))
    assert waits == [2.0, 4.0, 8.0, 10.0, 10.0]  # after one interval, then doubling, up to max_backoff
    schedule.backoff.failures, schedule.jitter = 0, 0.5
    delays = [schedule.delay(None) for _ in range(200)]
    assert all(1.0 <= d <= 2.0 for d in delays) and len(set(delays)) > 100  # jitter only shortens


def test_close_stops_polling(bind: BindServer, srv_name: str) -> None:
    bind.set_srv(srv_name, [(10, 1, 80, host(srv_name, "a"))])
    p = publisher(bind, srv_name)
    eventually(lambda: len(p.endpoints()) == 1)
    endpoint = p.endpoints()[0]
    p.close()
    assert p.closed and p.endpoints() == () and endpoint.closed
    task = p._task
    assert task is not None
    eventually(task.done, what="the polling task ends")


# -- the probe's reading of replies ----------------------------------------------------------

QNAME = dns.name.from_text("_api._tcp.example.")
labels = st.text(alphabet="abcxyz-_0123456789", min_size=1, max_size=12).filter(lambda s: s[0] not in "-")
targets = st.lists(labels, min_size=1, max_size=3).map(lambda ls: ".".join(ls) + ".example.")
records = st.lists(st.tuples(st.integers(0, 65535), st.integers(0, 65535), st.integers(0, 65535), targets), max_size=6)


QUERY = dns.message.make_query(QNAME, "SRV")


def build_reply(
    srv: list[tuple[int, int, int, str]],
    glue: dict[str, list[str]],
    *,
    order: random.Random,
    ttl: int = 60,
) -> tuple[bytes, bytes]:
    """(the query, a reply with these records in a random order); always for the same query."""
    query = QUERY
    reply = dns.message.make_response(query)
    shuffled = srv[:]
    order.shuffle(shuffled)
    if shuffled:
        rrset = reply.find_rrset(reply.answer, QNAME, dns.rdataclass.IN, dns.rdatatype.SRV, create=True)
        for priority, weight, port, target in shuffled:
            rrset.add(dns.rdata.from_text("IN", "SRV", f"{priority} {weight} {port} {target}"), ttl)
    for target, found in glue.items():
        for address in found:
            rdtype = dns.rdatatype.AAAA if ":" in address else dns.rdatatype.A
            name = dns.name.from_text(target)
            rrset = reply.find_rrset(reply.additional, name, dns.rdataclass.IN, rdtype, create=True)
            rrset.add(dns.rdata.from_text(dns.rdataclass.IN, rdtype, address), ttl)
    return query.to_wire(), reply.to_wire()


def dnspython_key(wire: bytes, glue: bool) -> Key:
    """What dnspython reads in the reply, in the probe's terms (as ``Publisher._lookup`` does)."""
    message = dns.message.from_wire(wire)
    answer = message.get_rrset(message.answer, QNAME, dns.rdataclass.IN, dns.rdatatype.SRV)
    srv = {(r.priority, r.weight, r.port, r.target.canonicalize().labels) for r in answer or ()}
    found = set()
    if glue:
        wanted = {record[3] for record in srv}
        for rrset in message.additional:
            if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                owner = rrset.name.canonicalize().labels
                if owner in wanted:
                    found |= {(owner, dns.inet.inet_pton(dns.inet.af_for_address(r.address), r.address)) for r in rrset}
    return key_records(srv, found, message.rcode())


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(srv=records, seed=st.integers(), glue=st.booleans())
def test_scan_reads_what_dnspython_reads_in_any_order(
    srv: list[tuple[int, int, int, str]], seed: int, glue: bool
) -> None:
    order = random.Random(seed)
    addresses_of = {target: [f"127.0.0.{i + 1}", f"fd00::{i + 1}"] for i, (_, _, _, target) in enumerate(srv[:2])}
    query, first = build_reply(srv, addresses_of, order=order)
    _, second = build_reply(srv, addresses_of, order=order, ttl=7)
    one, two = scan(first, query, glue=glue), scan(second, query, glue=glue)
    assert one is not None and two is not None
    assert one.key == two.key == dnspython_key(first, glue)  # order and TTL do not matter
    assert one.ttl == (60 if srv else None) and two.ttl == (7 if srv else None)
    if srv:
        changed = [(srv[0][0], srv[0][1] ^ 1, srv[0][2], srv[0][3]), *srv[1:]]
        _, other = build_reply(changed, addresses_of, order=order)
        assert scan(other, query, glue=glue) != one or set(changed) == set(srv)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(srv=records, flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4))
def test_scan_never_reads_what_dnspython_does_not(srv: list[tuple[int, int, int, str]], flips: list[Any]) -> None:
    # Damaged replies: when the probe reads one, dnspython reads the same records (or rejects it).
    query, wire = build_reply(srv, {}, order=random.Random(0))
    damaged = bytearray(wire)
    for position, value in flips:
        damaged[position % len(damaged)] = value
    seen = scan(bytes(damaged), query, glue=True)
    if seen is None:
        return
    try:
        expected = dnspython_key(bytes(damaged), True)
    except (dns.exception.DNSException, ValueError):
        return
    assert seen.key == expected


@given(st.binary(max_size=600))
def test_scan_survives_garbage(data: bytes) -> None:
    query = dns.message.make_query(QNAME, "SRV").to_wire()
    scan(query[:2] + data, query, glue=True)


def test_read_name_pointers() -> None:
    data = b"\x03foo\x00" + b"\x03bar\xc0\x00" + b"\xc0\x05"
    assert read_name(data, 0) == ((b"foo", b""), 5)
    assert read_name(data, 5) == ((b"bar", b"foo", b""), 11)
    assert read_name(data, 11) == ((b"bar", b"foo", b""), 13)
    assert read_name(b"\x03FoO\x00", 0) == ((b"foo", b""), 5)  # lowercased, as compared
    for bad in (b"\xc0\x00", b"\x03foo\xc0\x04", b"\x03fo", b"\x40", b"\x03foo"):
        with pytest.raises(Malformed):
            read_name(bad, 0)
    looping = b"\x01a\xc0\x04\x01b\xc0\x00"  # a -> b -> a ...: pointers must point backwards
    with pytest.raises(Malformed):
        read_name(looping, 0)


def test_scan_refuses_what_only_dnspython_should_judge() -> None:
    query, wire = build_reply([(1, 1, 80, "a.example.")], {}, order=random.Random(0))
    assert scan(wire, query, glue=False) is not None
    for offset, value in ((2, wire[2] | 0x02), (3, (wire[3] & 0xF0) | 2), (2, wire[2] | 0x08)):  # TC, SERVFAIL, opcode
        changed = bytearray(wire)
        changed[offset] = value
        assert scan(bytes(changed), query, glue=False) is None
    assert scan(wire + b"\x00", query, glue=False) is None  # trailing bytes
    assert scan(b"\x00\x00" + wire[2:], query, glue=False) is None  # another ID
    other = dns.message.make_query("_other._tcp.example.", "SRV").to_wire()
    assert scan(wire, wire[:2] + other[2:], glue=False) is None  # another question


async def exchange(port: int, query: bytes, within: float) -> tuple[bytes, bytes | None]:
    """One ``UdpQuery`` to 127.0.0.1, awaited: (the query sent, the reply or ``None``)."""
    result: asyncio.Future[tuple[bytes, bytes | None]] = asyncio.get_running_loop().create_future()
    UdpQuery(asyncio.get_running_loop(), "127.0.0.1", port, query, within, lambda *done: result.set_result(done))
    return await result


async def test_udp_query_gives_up_on_silence_and_ignores_other_ids() -> None:
    query = dns.message.make_query(QNAME, "SRV").to_wire()
    with BlackHole() as hole:
        sent, reply = await exchange(hole.port, query, 0.05)
        assert reply is None and sent[2:] == query[2:]
        await aeventually(lambda: hole.queries == 1)

    def answer_twice(query: dns.message.Message) -> bytes:
        good = srv_reply(query, [(1, 1, 80, "a.example.")])
        return bytes([good[0] ^ 0xFF]) + good[1:]  # another ID first: not a reply to this query

    with FakeDNS(answer_twice) as server:
        sent, reply = await exchange(server.port, query, 0.2)
        assert reply is None  # the only datagram had the wrong ID

    with FakeDNS(lambda query: srv_reply(query, [(1, 1, 80, "a.example.")])) as server:
        sent, reply = await exchange(server.port, query, 1.0)
        assert reply is not None and reply[:2] == sent[:2]
        seen = scan(reply, sent, glue=False)
        assert seen is not None and seen.key.records == ((1, 1, 80, (b"a", b"example", b"")),)


def test_refresh_right_after_construction_joins_the_first_lookup(logs: pytest.LogCaptureFixture) -> None:
    # The first lookup starts in the constructor; a refresh asked for meanwhile waits for it
    # instead of starting a second one (a dead server would make the caller wait twice).
    with BlackHole() as hole:
        resolver = hole.resolver(timeout=0.3, lifetime=0.3)
        with dnssrv.Publisher("_api._tcp.example.", 60.0, str, resolver=resolver) as publisher:
            eventually(lambda: hole.queries >= 1)
            endpoints = publisher.refresh()
            assert endpoints.stale
            assert len(events(logs, "srv_lookup_failed")) == 1  # the lookup under way answered the refresh


def test_the_registry_facade_discovers_and_watches_but_does_not_register(bind: BindServer, srv_name: str) -> None:
    service = srv_name.split(".")[0].lstrip("_")  # "_t7._tcp" -> "t7": the facade builds "_t7._tcp.<zone>"
    bind.set_srv(srv_name, [(10, 5, 8080, host(srv_name, "a")), (10, 50, 8081, host(srv_name, "b"))])
    registry = dnssrv.Registry(bind.zone.to_text(), interval=0.05, resolver=resolver(bind.port))
    assert [(i.port, i.weight) for i in registry.discover(service)] == [(8081, 50), (8080, 5)]  # heaviest first
    with pytest.raises(dnssrv.NameNotFoundError):  # NXDOMAIN: a name that does not exist
        registry.lookup("nothing-here")
    with registry.watch(service, close_delay=0) as publisher:
        # the generic publisher over the registry's backend: polling, re-checked with probes
        assert isinstance(publisher, backend.Publisher) and publisher.interval == 0.05
        assert publisher.wait_ready(5)
        polls = probes(publisher)
        lookups: list[str] = []
        resolve = registry.backend.list

        async def counted(service: str) -> Any:
            lookups.append(service)
            return await resolve(service)

        registry.backend.list = counted  # type: ignore[method-assign]
        wait_polls(polls, 6, "several polls of an unchanged answer")
        assert lookups == []
        bind.set_srv(srv_name, [(10, 5, 8080, host(srv_name, "a"))])
        eventually(lambda: [i.port for i in publisher.endpoints()] == [8080])
        assert lookups
    with pytest.raises(NotImplementedError, match="the dns backend cannot register"):
        registry.register(service, "127.0.0.1:80")
    registry.close()


# -- the vocabulary: interval=, timeout=, and the old ttl= ----------------------------------


def test_the_go_kit_form_and_the_default_interval(bind: BindServer, srv_name: str) -> None:
    bind.set_srv(srv_name, [(10, 1, 80, host(srv_name, "a"))])
    name, given = bind.name(srv_name), resolver(bind.port)
    with dnssrv.Publisher(name, 0.05, str, resolver=given) as positional:  # go-kit's (name, ttl, factory)
        assert positional.interval == 0.05
        eventually(lambda: list(positional.endpoints()) == [f"{host(srv_name, 'a')}.example.test:80"])
    with dnssrv.Publisher(name, factory=str, resolver=given) as default:
        assert default.interval == 5.0
        assert list(default.refresh()) == [f"{host(srv_name, 'a')}.example.test:80"]


def test_the_old_ttl_keyword_still_works_and_warns(bind: BindServer, srv_name: str) -> None:
    bind.set_srv(srv_name, [(10, 1, 80, host(srv_name, "a"))])
    with pytest.warns(DeprecationWarning, match=r"Publisher\(ttl=...\) is deprecated: write interval="):
        p = dnssrv.Publisher(bind.name(srv_name), ttl=0.05, factory=str, resolver=resolver(bind.port))  # type: ignore[call-arg]
    with p:
        assert p.interval == 0.05
        eventually(lambda: len(p.endpoints()) == 1)
        bind.set_srv(srv_name, [(10, 1, 81, host(srv_name, "a"))])
        eventually(lambda: [i.port for i in p.endpoints().instances] == [81], what="polled every 0.05 s")
    with pytest.warns(DeprecationWarning, match=r"Backend\(ttl=...\) is deprecated: write interval="):
        assert dnssrv.Backend("example.test.", ttl=2.0, resolver=resolver(bind.port)).poll_interval == 2.0  # type: ignore[call-arg]
    with pytest.warns(DeprecationWarning, match=r"Registry\(ttl=...\) is deprecated: write interval="):
        registry = dnssrv.Registry("example.test.", ttl=3.0, resolver=resolver(bind.port))  # type: ignore[call-arg]
    assert registry.backend.poll_interval == 3.0
    registry.close()
    with pytest.raises(TypeError, match="got both ttl= and interval="):
        dnssrv.Backend(ttl=1.0, interval=2.0)  # type: ignore[call-arg]


def test_timeout_bounds_a_lookup_whatever_the_resolvers_lifetime(logs: pytest.LogCaptureFixture) -> None:
    with BlackHole() as hole:
        patient = hole.resolver(timeout=0.1, lifetime=30.0)  # on its own, a lookup would try for 30 s
        started = time.monotonic()
        with dnssrv.Publisher("_api._tcp.example.", 60.0, str, resolver=patient, timeout=0.3) as p:
            eventually(lambda: p.endpoints().stale, timeout=10, what="stale")
            assert time.monotonic() - started < 5.0
            error = p.last_error
            assert isinstance(error, dnssrv.DnsError) and isinstance(error, DiscoveryError)
            assert error.name == "_api._tcp.example." and error.servers == f"127.0.0.1@{hole.port}"
            assert hole.queries >= 2  # tried again within the 0.3 s: per try, the resolver's timeout


def test_follow_ttl_polls_at_the_records_ttl_probes_included(bind: BindServer, srv_name: str) -> None:
    bind.set_srv(srv_name, [(10, 1, 80, host(srv_name, "a"))], ttl=1)
    with publisher(bind, srv_name, interval=3600, follow_ttl=True, min_interval=0.2) as p:
        eventually(lambda: len(p.endpoints()) == 1)
        polls = probes(p)
        for port in (81, 82):  # the first change after a lookup, the second after probes
            wait_polls(polls, 1, "a probe at the TTL")
            bind.set_srv(srv_name, [(10, 1, port, host(srv_name, "a"))], ttl=1)
            # polled at the TTL (1 s), not at the interval (an hour)
            eventually(lambda: [i.port for i in p.endpoints().instances] == [port], timeout=20)  # noqa: B023


def test_refresh_soon_on_the_registrys_publisher(bind: BindServer, srv_name: str) -> None:
    bind.set_srv(srv_name, [(10, 1, 80, host(srv_name, "a"))])
    with (
        dnssrv.Registry(bind.zone.to_text(), interval=3600, resolver=resolver(bind.port)) as registry,
        registry.watch(srv_name.split(".")[0].lstrip("_"), close_delay=0) as p,
    ):
        assert isinstance(p, backend.Publisher)
        assert [i.port for i in p.endpoints().instances] == [80]
        bind.set_srv(srv_name, [(10, 1, 81, host(srv_name, "a"))])
        p.refresh_soon()  # returns at once; the lookup follows
        eventually(lambda: [i.port for i in p.endpoints().instances] == [81])
