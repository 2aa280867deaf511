from __future__ import annotations

import gc
import random
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from loadbalancer import NoEndpointsError, static
from loadbalancer.aperture import Aperture, PeerSet, _ring_slice
from loadbalancer.least_loaded import LeastLoaded, PeakEwma
from loadbalancer.tracked import TrackedEndpoint


def addresses(n: int, base: int = 10) -> list[str]:
    return [f"{base}.{i // 250}.{i % 250}.1:80" for i in range(n)]


def echo(address: str) -> Callable[[object], str]:
    return lambda request: address


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Pending:
    """What a call returns that stays in flight until ``finish()`` (the ``finish_later`` protocol)."""

    def __init__(self) -> None:
        self.done: Callable[[BaseException | None], object] | None = None

    def finish_later(self, done: Callable[[BaseException | None], object]) -> None:
        self.done = done

    def finish(self) -> None:
        assert self.done is not None
        self.done(None)


def fleet(servers: int, clients: int, min_aperture: int = 12, **options: Any) -> list[Aperture]:
    publisher = static.Publisher(addresses(servers), echo)
    return [
        Aperture(publisher, peers=PeerSet.fixed(i, clients), min_aperture=min_aperture, **options)
        for i in range(clients)
    ]


# -- the ring ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("servers", "clients", "min_aperture"),
    [(100, 100, 12), (1000, 10, 12), (100, 30, 12), (7, 100, 3), (100, 7, 12), (12, 12, 12), (5, 3, 12), (97, 41, 5)],
)
def test_every_server_is_covered_and_equally(servers: int, clients: int, min_aperture: int) -> None:
    totals = [0.0] * servers
    for index in range(clients):
        for position, overlap in _ring_slice(index, clients, servers, min(min_aperture, servers)).items():
            assert 0.0 < overlap <= 1.0
            totals[position] += overlap
    assert min(totals) > 0, "a server no client covers"
    # each server's share of the fleet's load is its total overlap: the same for all
    assert max(totals) - min(totals) < 1e-9, totals


def test_the_fleet_covers_every_server() -> None:
    apertures = fleet(servers=100, clients=30)
    covered: Counter[str] = Counter()
    for lb in apertures:
        for address, overlap in lb.servers().items():
            covered[address] += overlap  # type: ignore[assignment]
    assert set(covered) == set(addresses(100))
    assert max(covered.values()) - min(covered.values()) < 1e-9


@pytest.mark.parametrize(
    ("servers", "clients", "min_aperture", "size", "width"),
    [
        (100, 100, 12, 12, 12.0),  # as many clients as servers: exactly the minimum
        (1000, 10, 12, 100, 100.0),  # few clients: a tenth of the ring each, so every server is covered
        (100, 30, 12, None, 400 / 30),  # 4 client widths of 1/30: 13.3 servers' worth, partial edges
        (5, 100, 12, 5, 5.0),  # fewer servers than the minimum: all of them
    ],
)
def test_slice_sizes(servers: int, clients: int, min_aperture: int, size: int | None, width: float) -> None:
    for lb in fleet(servers, clients, min_aperture)[:5]:
        weights = lb.servers()
        assert lb.deterministic
        assert sum(weights.values()) == pytest.approx(width)
        if size is not None:
            assert len(weights) == size
        else:
            assert len(weights) in (14, 15)
        assert len(lb.candidates()) == len(weights)


def test_the_slice_is_deterministic_whatever_the_order_or_seed() -> None:
    shuffled = addresses(200)
    random.Random(3).shuffle(shuffled)
    a = Aperture(static.Publisher(addresses(200), echo), peers=PeerSet.fixed(17, 50), seed=1)
    b = Aperture(static.Publisher(shuffled, echo), peers=PeerSet.fixed(17, 50), seed=2)
    assert a.servers() == b.servers()
    c = Aperture(static.Publisher(addresses(200), echo), peers=PeerSet.fixed(18, 50), seed=1)
    assert c.servers() != a.servers()


def test_edge_servers_are_picked_in_proportion_to_their_overlap() -> None:
    publisher = static.Publisher(addresses(100), echo)
    lb = Aperture(publisher, peers=PeerSet.fixed(1, 30), seed=5)
    weights = lb.servers()
    assert sorted(weights.values())[0] < 1.0  # client 1 of 30 starts inside a server
    picks = Counter(lb.endpoint()("x") for _ in range(60_000))
    per_unit = 60_000 / sum(weights.values())
    for address, overlap in weights.items():
        assert picks[address] == pytest.approx(per_unit * overlap, rel=0.12), (address, overlap)


# -- membership changes ---------------------------------------------------------------------------


def test_a_server_joining_or_leaving_moves_each_slice_by_little() -> None:
    publisher = static.Publisher(addresses(100), echo)
    apertures = [Aperture(publisher, peers=PeerSet.fixed(i, 100)) for i in range(100)]
    before = [set(lb.servers()) for lb in apertures]
    publisher.replace(addresses(101))
    after = [set(lb.servers()) for lb in apertures]
    churn = [len(b ^ a) for b, a in zip(before, after, strict=True)]
    assert max(churn) <= 4 and sum(churn) / len(churn) <= 2.5, churn
    publisher.replace(addresses(100))
    assert [set(lb.servers()) for lb in apertures] == before


def test_a_peer_joining_moves_each_slice_by_little() -> None:
    peers = static.Publisher(addresses(100, base=11))
    servers = static.Publisher(addresses(100), echo)
    own = sorted(addresses(100, base=11))
    apertures = [Aperture(servers, peers=PeerSet(peers, own[i])) for i in range(100)]
    assert all(lb.deterministic for lb in apertures)
    before = [set(lb.servers()) for lb in apertures]
    peers.replace([*addresses(100, base=11), "11.9.9.9:80"])  # sorts last: the others keep their index
    after = [set(lb.servers()) for lb in apertures]
    churn = [len(b ^ a) for b, a in zip(before, after, strict=True)]
    assert max(churn) <= 4 and sum(churn) / len(churn) <= 2.5, churn


def test_a_random_slice_keeps_its_servers_when_others_join() -> None:
    publisher = static.Publisher(addresses(100), echo)
    lb = Aperture(publisher, seed=9)
    before = set(lb.servers())
    publisher.replace(addresses(110))
    assert len(set(lb.servers()) - before) <= 10
    assert len(before - set(lb.servers())) == len(set(lb.servers()) - before)
    publisher.replace(addresses(100))
    assert set(lb.servers()) == before


# -- the random fallback ----------------------------------------------------------------------------


def test_without_peers_the_slice_is_random() -> None:
    publisher = static.Publisher(addresses(100), echo)
    a = Aperture(publisher, seed=1)
    b = Aperture(publisher, seed=2)
    assert not a.deterministic
    assert len(a.servers()) == 12 and set(a.servers().values()) == {1.0}
    assert a.servers() != b.servers()
    assert Aperture(publisher, seed=1).servers() == a.servers()


def test_an_unknown_coordinate_falls_back_to_random_until_known() -> None:
    peers = static.Publisher(addresses(10, base=11))
    servers = static.Publisher(addresses(100), echo)
    peer_set = PeerSet(peers, "11.9.9.9:80")
    lb = Aperture(servers, peers=peer_set, min_aperture=4)
    assert peer_set.coordinate is None and not lb.deterministic and len(lb.servers()) == 4
    peers.replace([*addresses(10, base=11), "11.9.9.9:80"])
    assert peer_set.coordinate == (10, 11)
    assert lb.deterministic and sum(lb.servers().values()) == pytest.approx(100 / 11)
    peers.replace(addresses(10, base=11))
    assert not lb.deterministic


# -- the load band ------------------------------------------------------------------------------------


def test_the_slice_widens_under_load_and_narrows_when_it_passes() -> None:
    clock = Clock()
    calls: list[Pending] = []

    def factory(address: str) -> Callable[[object], Pending]:
        def call(request: object) -> Pending:
            calls.append(Pending())
            return calls[-1]

        return call

    publisher = static.Publisher(addresses(100), factory)
    lb = Aperture(publisher, peers=PeerSet.fixed(0, 100), min_aperture=4, smooth_window=1.0, clock=clock)
    assert lb.aperture == 4
    for _ in range(400):  # calls that do not end: the load in flight grows
        clock.now += 0.05
        lb.endpoint()(None)
    grown = lb.aperture
    assert grown > 4 and len(lb.servers()) == grown
    assert sum(c.outstanding for c in lb.candidates()) <= 400  # what moved out still counts where it was
    for call in calls:
        call.finish()
    for _ in range(2000):  # quiet: every call ends at once
        clock.now += 0.05
        lb.endpoint()
    assert lb.aperture == 4


def test_a_random_slice_widens_by_one_server() -> None:
    clock = Clock()
    calls: list[Pending] = []
    publisher = static.Publisher(addresses(50), lambda address: lambda request: calls.append(Pending()) or calls[-1])
    lb = Aperture(publisher, min_aperture=3, smooth_window=1.0, clock=clock, seed=4)
    for _ in range(60):
        clock.now += 0.05
        lb.endpoint()(None)
    assert 3 < lb.aperture < 50 and len(lb.servers()) == lb.aperture


def test_peak_ewma_inside_the_slice() -> None:
    clock = Clock()
    publisher = static.Publisher(addresses(100), echo)
    lb = Aperture(publisher, peers=PeerSet.fixed(3, 10), balancer=lambda p: PeakEwma(p, clock=clock), clock=clock)
    assert isinstance(lb.balancer, PeakEwma)
    picked = lb.endpoint()
    assert isinstance(picked, TrackedEndpoint) and picked("x") in lb.servers()


# -- the balancer interface, concurrency ----------------------------------------------------------------


def test_no_servers_raises_no_endpoints() -> None:
    publisher = static.Publisher([], echo)
    lb = Aperture(publisher, peers=PeerSet.fixed(0, 3))
    with pytest.raises(NoEndpointsError):
        lb.endpoint()
    publisher.replace(addresses(3))
    assert lb.endpoint()("x") in addresses(3)


def test_picks_from_threads_while_servers_and_peers_change() -> None:
    peers = static.Publisher(addresses(20, base=11))
    own = sorted(addresses(20, base=11))[5]
    publisher = static.Publisher(addresses(60), echo)
    lb = Aperture(publisher, peers=PeerSet(peers, own), min_aperture=4, smooth_window=0.001)
    every = set(addresses(80))
    errors: list[BaseException] = []
    stop = threading.Event()

    def pick() -> None:
        try:
            while not stop.is_set():
                tracked = lb.endpoint()
                assert tracked("x") in every
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=pick) for _ in range(4)]
    for thread in threads:
        thread.start()
    rng = random.Random(1)
    for round_ in range(100):
        publisher.replace(rng.sample(addresses(80), rng.randint(10, 80)))
        if round_ % 3 == 0:
            peers.replace([*rng.sample(addresses(20, base=11), rng.randint(1, 20)), own])
    stop.set()
    for thread in threads:
        thread.join()
    assert errors == []
    assert set(lb.servers()) <= {str(i) for i in publisher.endpoints().instances}
    assert all(c.outstanding == 0 for c in lb.candidates())


def test_a_dropped_aperture_lets_go_of_the_publisher() -> None:
    publisher = static.Publisher(addresses(10), echo)
    before = len(publisher._subscribers)
    lb = Aperture(publisher, peers=PeerSet.fixed(0, 2))
    assert len(publisher._subscribers) > before
    del lb
    gc.collect()
    assert len(publisher._subscribers) == before


# -- bad arguments ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"min_aperture": 0}, ValueError, ["min_aperture", "0"]),
        ({"min_aperture": 2.5}, ValueError, ["min_aperture", "2.5"]),
        ({"low_load": 3.0, "high_load": 2.0}, ValueError, ["low_load", "3.0", "high_load", "2.0"]),
        ({"low_load": -1}, ValueError, ["low_load", "-1"]),
        ({"high_load": float("nan")}, ValueError, ["high_load", "nan"]),
        ({"smooth_window": 0}, ValueError, ["smooth_window", "0"]),
        ({"peers": (1, 2)}, TypeError, ["peers", "(1, 2)"]),
        ({"balancer": 42}, TypeError, ["balancer", "42"]),
        ({"balancer": lambda p: 42}, TypeError, ["balancer", "42"]),
        ({"clock": 1.0}, TypeError, ["clock", "1.0"]),
    ],
)
def test_bad_arguments_are_named(options: dict[str, Any], error: type[Exception], words: list[str]) -> None:
    publisher = static.Publisher(addresses(3), echo)
    with pytest.raises(error) as caught:
        Aperture(publisher, **options)
    for word in words:
        assert word in str(caught.value)


def test_bad_publishers_and_peer_sets_are_named() -> None:
    with pytest.raises(TypeError, match="Publisher"):
        Aperture(["10.0.0.1:80"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"index must be from 0 to count - 1 \(4\), got 5"):
        PeerSet.fixed(5, 5)
    with pytest.raises(ValueError, match="count must be at least 1, got 0"):
        PeerSet.fixed(0, 0)
    with pytest.raises(TypeError, match="index must be a whole number, got '1'"):
        PeerSet.fixed("1", 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="own must be .*'not an address'"):
        PeerSet(static.Publisher([]), "not an address")
    with pytest.raises(TypeError, match="publisher must be"):
        PeerSet(["10.0.0.1:80"], "10.0.0.1:80")  # type: ignore[arg-type]


def test_least_loaded_is_the_default_and_repr_says_what_it_is() -> None:
    lb = Aperture(static.Publisher(addresses(20), echo), seed=1)
    assert isinstance(lb.balancer, LeastLoaded)
    assert "random" in repr(lb) and "aperture=12" in repr(lb)
    assert repr(PeerSet.fixed(1, 4)) == "PeerSet.fixed(1, 4)"
