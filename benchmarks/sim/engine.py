"""The event loop: virtual clock, event heap, Poisson arrivals, servers with queues, faults.

Each call is two or three heap events (its end; a deadline when it could outlive the
client's timeout). Arrivals are one Poisson stream at the clients' total rate, each
arrival going to a client drawn uniformly (the superposition of the clients' own Poisson
streams), so they need no heap entries. Calls go through the balancer's real pick and,
for feedback balancers, the real ``TrackedEndpoint``: the server returns the ``Call``,
whose ``finish_later`` hands the wrapper its completion callback, run when the call ends
in virtual time.
"""

from __future__ import annotations

import collections
import functools
import heapq
import itertools
import operator
import random
import time
from collections.abc import Callable
from typing import Any

from loadbalancer import static
from loadbalancer.errors import NoEndpointsError
from loadbalancer.instance import Instance

from .model import (
    Client,
    DeadServer,
    RollingDeploy,
    Scenario,
    SlowServer,
    ZoneOutage,
    client_address,
    server_address,
)
from .result import Result, summarise

Factory = Callable[[Any, Client], Any]


class Refused(ConnectionRefusedError):
    """A dead server's answer in "refuse" mode (raised by the endpoint, as a refused connect)."""


class Reset(ConnectionResetError):
    """A call in progress on a server that died."""


class Timeout(TimeoutError):
    """The client's deadline passed before an answer."""


class Call:
    __slots__ = ("client", "deadline_set", "done", "gen", "server", "settled", "start")

    def __init__(self, client: Client, start: float) -> None:
        self.client = client
        self.start = start
        self.server: Server | None = None
        self.done: Callable[[BaseException | None], object] | None = None
        self.settled = False
        self.deadline_set = False
        self.gen = 0

    def finish_later(self, done: Callable[[BaseException | None], object]) -> None:
        """The ``TrackedEndpoint`` protocol: ``done(error)`` is called once when the call ends."""
        self.done = done


class Server:
    """One simulated server; the endpoint object the publisher hands out (callable with a ``Call``)."""

    def __init__(self, sim: Sim, index: int, zone: str, dist: Callable[[random.Random], float]) -> None:
        self.sim = sim
        self.index = index
        self.zone = zone
        addresses = sim.scenario.server_addresses
        self.address = addresses[index] if addresses is not None else server_address(index)
        self.dist = dist
        self.limit = sim.scenario.concurrency or 1 << 60
        self.busy = 0
        self.queue: collections.deque[Call] = collections.deque()
        self.active: set[Call] = set()
        self.slow = 1.0
        self.dead: str | None = None
        self.gen = 0
        self.served = 0  # measured calls served
        self.peers: set[int] = set()  # clients that ever sent a call: its connections

    def __call__(self, call: Call) -> Call:
        sim = self.sim
        call.server = self
        self.peers.add(call.client.index)
        if self.dead is not None:
            if self.dead == "refuse":
                raise Refused(self.address)
            sim.deadline(call)
            return call
        if self.busy < self.limit:
            self.begin(call, sim.cell[0])
        else:
            self.queue.append(call)
            sim.deadline(call)
        return call

    def begin(self, call: Call, now: float) -> None:
        sim = self.sim
        self.busy += 1
        self.active.add(call)
        call.gen = self.gen
        if call.start >= sim.measure_from:
            self.served += 1
        end = now + self.dist(sim.rng) * self.slow + sim.network
        sim.push(end, self.finish, call)
        if end - call.start > sim.timeout:
            sim.deadline(call)

    def finish(self, call: Call) -> None:
        if call.gen != self.gen:
            return  # the server died meanwhile: this call was already dealt with
        self.busy -= 1
        self.active.discard(call)
        if not call.settled:
            self.sim.settle(call, None)
        queue = self.queue
        while queue:
            waiting = queue.popleft()
            if not waiting.settled:
                self.begin(waiting, self.sim.cell[0])
                break

    def kill(self, mode: str) -> None:
        """Go down: calls in progress and waiting are reset (refuse) or left to time out."""
        self.dead = mode
        self.gen += 1
        self.busy = 0
        calls = [*self.active, *self.queue]
        self.active.clear()
        self.queue.clear()
        for call in calls:
            if call.settled:
                continue
            if mode == "refuse":
                self.sim.settle(call, Reset(self.address))
            else:
                self.sim.deadline(call)

    def revive(self) -> None:
        self.dead = None

    def __repr__(self) -> str:
        return f"Server({self.index}, {self.zone})"


class Sim:
    def __init__(self, scenario: Scenario, factory: Factory, name: str) -> None:
        self.scenario = scenario
        self.name = name
        self.rng = random.Random(scenario.seed)
        self.cell = [0.0]
        self.clock: Callable[[], float] = functools.partial(operator.getitem, self.cell, 0)
        self.heap: list[tuple[float, int, Callable[[Any], object], Any]] = []
        self.seq = itertools.count()
        self.timeout = scenario.timeout
        self.retries = scenario.retries
        self.network = scenario.network
        self.measure_from = scenario.warmup
        self.until = scenario.warmup + scenario.seconds
        self.tick = scenario.tick
        self.buckets: dict[int, list[float]] = collections.defaultdict(list)
        self.failures: dict[int, int] = collections.defaultdict(int)
        self.cross = 0
        self.events = 0
        self.servers = [Server(self, i, scenario.server_zone(i), self._dist(i)) for i in range(scenario.servers)]
        self.by_address = {s.address: s for s in self.servers}
        self.registered = set(range(scenario.servers))
        self.publisher = static.Publisher(self._instances(), self.by_address.__getitem__, close_delay=0)
        peers = static.Publisher(
            [Instance.parse(client_address(j)) for j in range(scenario.clients)], service="clients"
        )
        self.clients = []
        for j in range(scenario.clients):
            client = Client(
                j,
                scenario.clients,
                scenario.client_zone(j),
                client_address(j),
                peers,
                self.clock,
                scenario.seed * 7919 + j,
            )
            client.balancer = factory(self.publisher, client)
            self.clients.append(client)
        for fault in scenario.faults:
            self._schedule(fault)

    def _dist(self, index: int) -> Callable[[random.Random], float]:
        per = self.scenario.server_service_time
        return per(index) if per is not None else self.scenario.service_time

    def _instances(self) -> list[Instance]:
        servers = self.servers
        return [Instance.parse(servers[i].address, metadata={"zone": servers[i].zone}) for i in sorted(self.registered)]

    # -- events -------------------------------------------------------------------------------

    def push(self, when: float, fn: Callable[[Any], object], arg: Any) -> None:
        heapq.heappush(self.heap, (when, next(self.seq), fn, arg))

    def deadline(self, call: Call) -> None:
        if not call.deadline_set:
            call.deadline_set = True
            self.push(call.start + self.timeout, self.expire, call)

    def expire(self, call: Call) -> None:
        if not call.settled:
            self.settle(call, Timeout())

    def settle(self, call: Call, error: BaseException | None) -> None:
        call.settled = True
        start = call.start
        bucket = int(start / self.tick)
        self.buckets[bucket].append(self.cell[0] - start)
        if error is not None:
            self.failures[bucket] += 1
        done = call.done
        if done is not None:
            done(error)

    def issue(self, client: Client, now: float) -> None:
        call = Call(client, now)
        for attempt in range(self.retries + 1):
            try:
                endpoint = client.balancer.endpoint()
            except NoEndpointsError as error:
                self.settle(call, error)
                return
            try:
                endpoint(call)
                break
            except ConnectionRefusedError as error:
                if attempt == self.retries:  # a refused connect never reached the server: safe to try another
                    self.settle(call, error)
                    return
        server = call.server
        if server is not None and server.zone != client.zone:
            self.cross += 1

    def loop(self) -> None:
        heap = self.heap
        pop = heapq.heappop
        cell = self.cell
        rng = self.rng
        clients = self.clients
        n = len(clients)
        gap = 1.0 / (self.scenario.rate * n)
        until = self.until
        issue = self.issue
        arrival = rng.expovariate(1.0) * gap
        events = 0
        while True:
            if heap and heap[0][0] <= arrival:
                when, _, fn, arg = pop(heap)
                cell[0] = when
                fn(arg)
            elif arrival < until:
                cell[0] = arrival
                issue(clients[int(rng.random() * n)], arrival)
                arrival += rng.expovariate(1.0) * gap
            elif heap:
                arrival = float("inf")
                continue
            else:
                break
            events += 1
        self.events = events

    # -- faults -------------------------------------------------------------------------------

    def _window(
        self, start: float, end: float | None, on: Callable[[Any], object], off: Callable[[Any], object]
    ) -> None:
        self.push(self.measure_from + start, on, None)
        if end is not None:
            self.push(self.measure_from + end, off, None)

    def _schedule(self, fault: Any) -> None:
        servers = self.servers
        if isinstance(fault, SlowServer):
            chosen = [servers[i] for i in fault.servers]
            factor = fault.factor

            def slow(_: object, on: bool = True) -> None:
                for server in chosen:
                    server.slow = factor if on else 1.0

            self._window(fault.start, fault.end, slow, functools.partial(slow, on=False))
        elif isinstance(fault, DeadServer | ZoneOutage):
            if isinstance(fault, DeadServer):
                chosen = [servers[i] for i in fault.servers]
            else:
                chosen = [s for s in servers if s.zone == fault.zone]
            mode = fault.mode
            if mode not in ("refuse", "timeout"):
                raise ValueError(f"mode must be 'refuse' or 'timeout', got {mode!r}")
            self._window(
                fault.start,
                fault.end,
                lambda _: [s.kill(mode) for s in chosen],
                lambda _: [s.revive() for s in chosen],
            )
        elif isinstance(fault, RollingDeploy):
            self._deploy(fault)
        else:
            raise TypeError(f"unknown fault {fault!r}")

    def _deploy(self, fault: RollingDeploy) -> None:
        drain = fault.drain if fault.deregister else 0.0
        for wave in range(fault.waves):
            members = [s for s in self.servers if s.index % fault.waves == wave]
            t0 = self.measure_from + fault.start + wave * fault.every
            if fault.deregister:
                self.push(t0, self._deregister, members)
            self.push(t0 + drain, lambda _, m=members: [s.kill("refuse") for s in m], None)
            self.push(t0 + drain + fault.downtime, self._come_back, (members, fault.deregister))

    def _deregister(self, members: list[Server]) -> None:
        self.registered.difference_update(s.index for s in members)
        self.publisher.replace(self._instances())

    def _come_back(self, arg: tuple[list[Server], bool]) -> None:
        members, deregistered = arg
        for server in members:
            server.revive()
        if deregistered:
            self.registered.update(s.index for s in members)
            self.publisher.replace(self._instances())

    def faulted(self) -> set[int]:
        hit: set[int] = set()
        for fault in self.scenario.faults:
            if isinstance(fault, SlowServer | DeadServer):
                hit.update(fault.servers)
            elif isinstance(fault, ZoneOutage):
                hit.update(s.index for s in self.servers if s.zone == fault.zone)
        return hit


def run(scenario: Scenario, factory: Factory, name: str = "") -> Result:
    """Simulate ``scenario`` with a balancer per client from ``factory(publisher, client)``."""
    started = time.perf_counter()
    sim = Sim(scenario, factory, name or scenario.name)
    sim.loop()
    result = summarise(sim)
    result.wall = time.perf_counter() - started
    sim.publisher.close()
    return result
