"""etcd.Publisher on a real three-member etcd cluster whose members die, freeze and come back.

Each test gets a cluster of its own on loopback (killing members is destructive).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from loadbalancer import EndpointSet, etcd
from tests.etcd_server import EtcdCluster, Member, require_etcd, unique_prefix
from tests.helpers import Factory, events, eventually

QUICK: dict[str, Any] = {"timeout": 1.0, "keepalive": 0.5, "max_backoff": 0.3, "close_delay": 0}


@pytest.fixture
def cluster() -> Iterator[EtcdCluster]:
    require_etcd()
    with EtcdCluster(3) as made:
        yield made


def addresses(p: etcd.Publisher[Any]) -> list[str]:
    return [str(instance) for instance in p.endpoints().instances]


def first(cluster: EtcdCluster, member: Member) -> list[str]:
    """The cluster's URLs with ``member`` first: the one a publisher starts with."""
    return [member.url] + [m.url for m in cluster.members if m is not member]


def expected(cluster: EtcdCluster, prefix: str) -> list[str]:
    found = cluster.keys(f"{prefix}/")
    return [found[key] for key in sorted(found)]


class Recorder:
    """Records the addresses of every set published."""

    def __init__(self) -> None:
        self.sets: list[list[str]] = []
        self._lock = threading.Lock()

    def __call__(self, endpoints: EndpointSet[Any]) -> None:
        with self._lock:
            self.sets.append([str(i) for i in endpoints.instances])


@pytest.mark.parametrize("victim", ["leader", "follower"])
def test_the_member_watched_is_killed_mid_watch_and_no_change_is_lost_or_repeated(
    cluster: EtcdCluster, victim: str, logs: pytest.LogCaptureFixture
) -> None:
    prefix = unique_prefix()
    leader = cluster.leader()
    target = leader if victim == "leader" else next(m for m in cluster.members if m is not leader)
    for i in range(10):
        cluster.put(f"{prefix}/k{i:03}", f"127.0.0.1:{10000 + i}")
    cluster.put(f"{prefix}/moving", "127.0.0.1:20000")
    factory, recorder = Factory(), Recorder()
    with etcd.Publisher(prefix, factory, endpoints=first(cluster, target), **QUICK) as p:
        p.subscribe(recorder)
        eventually(lambda: len(p.endpoints()) == 11, what="initial read")
        assert p.member == target.url

        # Changes stream before, while and after the member dies (writes wait out an election).
        halfway = threading.Event()
        last_revision = [0]

        def write() -> None:
            for n in range(1, 41):
                if n == 10:
                    halfway.set()
                last_revision[0] = cluster.put(f"{prefix}/k{10 + n:03}", f"127.0.0.1:{10010 + n}")
                last_revision[0] = cluster.put(f"{prefix}/moving", f"127.0.0.1:{20000 + n}")
                if n % 4 == 0:
                    last_revision[0] = cluster.delete(f"{prefix}/k{n // 4:03}")

        writer = threading.Thread(target=write)
        writer.start()
        assert halfway.wait(10)
        cluster.kill(target)
        writer.join(30)
        assert not writer.is_alive()

        want = expected(cluster, prefix)
        assert len(want) == 42 and "127.0.0.1:20040" in want  # 10 + 40 - 9 deleted + moving
        eventually(lambda: addresses(p) == want, timeout=15, what="every change, after the member died")
        eventually(lambda: p.revision >= last_revision[0], what="the revision of the last change")
        assert not p.endpoints().stale
        assert p.member != target.url
    # Resumed from the last revision seen (not read afresh), and never went back in time:
    # the moving key's port only grows from one published set to the next.
    assert not events(logs, "etcd_resync")
    assert events(logs, "etcd_watch_broken") or events(logs, "etcd_watch_resumed")
    assert recorder.sets[-1] == []  # closed
    assert min(len(s) for s in recorder.sets[:-1]) == 11  # the set was kept throughout (stale at worst)
    ports = [int(a.rsplit(":", 1)[1]) for s in recorder.sets for a in s if a.startswith("127.0.0.1:2")]
    assert ports == sorted(ports) and ports[-1] == 20040
    # An address that comes back after being deleted would show up twice here.
    assert all(count == 1 for count in factory.calls.values()), factory.calls


def test_a_frozen_member_does_not_leave_a_silent_watch(cluster: EtcdCluster, logs: pytest.LogCaptureFixture) -> None:
    # SIGSTOP: the member's sockets stay open and accept connections, but nothing answers,
    # like a hung server or a dropped network path. Only the idle check can see it.
    prefix = unique_prefix()
    leader = cluster.leader()
    frozen = next(m for m in cluster.members if m is not leader)
    cluster.put(f"{prefix}/a", "127.0.0.1:3001")
    with etcd.Publisher(prefix, str, endpoints=first(cluster, frozen), **QUICK) as p:
        eventually(lambda: addresses(p) == ["127.0.0.1:3001"], what="initial read")
        cluster.put(f"{prefix}/b", "127.0.0.1:3002")
        eventually(lambda: len(p.endpoints()) == 2, what="the watch established")
        frozen.pause()
        try:
            cluster.put(f"{prefix}/c", "127.0.0.1:3003")
            eventually(lambda: len(p.endpoints()) == 3, timeout=10, what="a change seen elsewhere")
            assert p.member != frozen.url
            assert not p.endpoints().stale
        finally:
            frozen.resume()
    silent = events(logs, "etcd_member_silent")
    assert silent and silent[0].member == frozen.url


def test_the_whole_cluster_down_keeps_the_stale_set_until_it_returns(
    cluster: EtcdCluster, logs: pytest.LogCaptureFixture
) -> None:
    prefix = unique_prefix()
    cluster.put(f"{prefix}/a", "127.0.0.1:4001")
    cluster.put(f"{prefix}/b", "127.0.0.1:4002")
    factory = Factory()
    with etcd.Publisher(prefix, factory, endpoints=cluster.endpoints, **QUICK) as p:
        eventually(lambda: len(p.endpoints()) == 2, what="initial read")
        endpoints = list(p.endpoints())
        cluster.kill()
        eventually(lambda: p.endpoints().stale, timeout=10, what="stale once every member is gone")
        assert list(p.endpoints()) == endpoints  # the same endpoints, not closed
        assert not any(e.closed for e in endpoints)
        error = p.last_error
        assert isinstance(error, etcd.EtcdError) and error.key == f"{prefix}/"
        assert error.member in cluster.endpoints
        refreshed = p.refresh()  # a read now fails too, and changes nothing
        assert refreshed.stale and list(refreshed) == endpoints

        cluster.start()  # the same ports and data
        cluster.put(f"{prefix}/c", "127.0.0.1:4003")
        cluster.delete(f"{prefix}/a")
        eventually(
            lambda: addresses(p) == ["127.0.0.1:4002", "127.0.0.1:4003"] and not p.endpoints().stale,
            timeout=15,
            what="fresh again, with the changes made since",
        )
        assert p.last_error is None
        assert p.endpoints()[0] is endpoints[1]  # b kept its endpoint throughout
    assert events(logs, "refresh_failed")


def test_a_member_that_was_down_during_a_compaction_makes_the_publisher_read_again(
    cluster: EtcdCluster, logs: pytest.LogCaptureFixture
) -> None:
    prefix = unique_prefix()
    leader = cluster.leader()
    member = next(m for m in cluster.members if m is not leader)
    cluster.put(f"{prefix}/a", "127.0.0.1:5001")
    cluster.put(f"{prefix}/b", "127.0.0.1:5002")
    # Only this member: while it is down, the publisher is cut off and falls behind.
    with etcd.Publisher(prefix, str, endpoints=member.url, **QUICK) as p:
        eventually(lambda: len(p.endpoints()) == 2, what="initial read")
        seen = p.revision
        cluster.kill(member)
        eventually(lambda: p.endpoints().stale, what="stale")
        cluster.delete(f"{prefix}/a")
        cluster.put(f"{prefix}/c", "127.0.0.1:5003")
        for n in range(5):
            cluster.put(f"{prefix}/b", f"127.0.0.1:{5100 + n}")
        compacted = cluster.compact()
        assert compacted > seen + 1
        cluster.start(member)
        eventually(
            lambda: addresses(p) == ["127.0.0.1:5104", "127.0.0.1:5003"] and not p.endpoints().stale,
            timeout=15,
            what="the prefix read again",
        )
        assert p.revision >= compacted
    resyncs = events(logs, "etcd_resync")
    assert len(resyncs) == 1 and "compacted" in resyncs[0].reason
