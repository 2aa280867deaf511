"""The proxy's cache rules and its sharing of -n (``loadbalancer.proxy``), without a server."""

from __future__ import annotations

import email.utils

import pytest

from loadbalancer.proxy._cache import Cache, freshness


def test_freshness_follows_cache_control_then_expires() -> None:
    now = 1_000_000.0
    assert freshness([(b"Cache-Control", b"max-age=60")], now) == 60
    assert freshness([(b"Cache-Control", b"max-age=60, s-maxage=5")], now) == 5
    assert freshness([(b"cache-control", b"public, no-store, max-age=60")], now) is None
    assert freshness([(b"Cache-Control", b"private, max-age=60")], now) is None
    assert freshness([(b"Cache-Control", b"max-age=0")], now) is None
    assert freshness([(b"Cache-Control", b"max-age=60"), (b"Set-Cookie", b"a=b")], now) is None
    date = email.utils.formatdate(now, usegmt=True).encode()
    later = email.utils.formatdate(now + 30, usegmt=True).encode()
    assert freshness([(b"Date", date), (b"Expires", later)], now) == pytest.approx(30)
    assert freshness([(b"Date", date), (b"Expires", b"0")], now) is None  # invalid: already expired
    assert freshness([], now) is None
    assert freshness([], now, default_ttl=7) == 7


def test_lookup_keys_on_vary_and_expires() -> None:
    clock = [0.0]
    cache = Cache(10_000, clock=lambda: clock[0])
    base = Cache.base_key(b"GET", b"http://h/a?q=1")
    headers = [(b"Cache-Control", b"max-age=10"), (b"Vary", b"Accept-Encoding"), (b"X-Kept", b"1")]
    assert cache.store(base, {b"accept-encoding": b"gzip"}, 200, headers, b"zipped")
    assert cache.lookup(base, {b"accept-encoding": b"gzip"}).body == b"zipped"  # type: ignore[union-attr]
    assert cache.lookup(base, {}) is None
    assert cache.lookup(Cache.base_key(b"GET", b"http://h/a?q=2"), {}) is None
    entry = cache.lookup(base, {b"accept-encoding": b"gzip"})
    assert entry is not None and (b"X-Kept", b"1") in entry.headers
    clock[0] = 11.0
    assert cache.lookup(base, {b"accept-encoding": b"gzip"}) is None
    assert (cache.hits, cache.misses) == (2, 3)


def test_bounded_in_bytes() -> None:
    cache = Cache(3_000)
    for n in range(10):
        cache.store(Cache.base_key(b"GET", b"/%d" % n), {}, 200, [(b"Cache-Control", b"max-age=60")], b"x" * 1000)
    assert cache.size <= 3_000 and 0 < len(cache) < 10
    assert not cache.store(b"GET /big", {}, 200, [(b"Cache-Control", b"max-age=60")], b"x" * 5000)
    assert not cache.store(b"GET /500", {}, 500, [(b"Cache-Control", b"max-age=60")], b"")
    assert not cache.store(b"GET /star", {}, 200, [(b"Cache-Control", b"max-age=60"), (b"Vary", b"*")], b"")


def test_the_connection_limit_is_shared_out_between_workers_exactly() -> None:
    from loadbalancer.proxy._worker import share

    assert [share(5, 2, index) for index in range(2)] == [3, 2]
    assert sum(share(7, 3, index) or 0 for index in range(3)) == 7
    assert share(None, 4, 0) is None
