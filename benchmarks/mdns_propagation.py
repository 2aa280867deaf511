"""mDNS propagation: from an announcement (or a goodbye) to a subscriber being called, against a bare zeroconf browser.

Starts a real Avahi in a network namespace of its own (root; Debian's avahi-daemon,
avahi-utils, dbus), and runs inside it. Each round, ``avahi-publish`` announces a new
instance of ``_bench._tcp``, then withdraws it (goodbye packets); a round also has a
``mdns.Registrar`` announce one. Both an ``mdns.Publisher`` (its subscriber) and, as the
baseline, a bare zeroconf ``AsyncServiceBrowser`` whose handler resolves the instance
(``AsyncServiceInfo.async_request``) watch the same announcements in the same process;
each is timed from the moment the announcement is asked for (``avahi-publish`` started,
``register()`` called: both probe the name for about 0.75 s first, as RFC 6762 asks) or
the goodbye sent (SIGTERM to ``avahi-publish``), and the ratio of medians is printed.

    .venv/bin/python benchmarks/mdns_propagation.py [--rounds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TYPE = "_bench._tcp.local."


def outside(rounds: int) -> None:
    from tests.avahi_netns import AvahiNamespace, unavailable

    reason = unavailable()
    if reason:
        raise SystemExit(f"cannot run: {reason}")
    with AvahiNamespace() as namespace:
        inside = namespace.popen([sys.executable, __file__, "--inside", "--rounds", str(rounds)], stdin=None)
        raise SystemExit(inside.wait())


def inside(rounds: int) -> None:
    from zeroconf import DNSQuestionType, IPVersion, ServiceStateChange, Zeroconf
    from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

    from loadbalancer import EndpointSet, Instance, mdns

    seen: dict[tuple[int, str], float] = {}  # (port, "add"/"remove") -> when the subscriber saw it
    bare: dict[tuple[int, str], float] = {}
    changed = threading.Condition()

    def note(table: dict[tuple[int, str], float], key: tuple[int, str]) -> None:
        with changed:
            table.setdefault(key, time.perf_counter())
            changed.notify_all()

    previous: set[int] = set()

    def on_set(endpoints: EndpointSet[Instance]) -> None:
        nonlocal previous
        ports = {i.port for i in endpoints.instances}
        for port in ports - previous:
            note(seen, (port, "add"))
        for port in previous - ports:
            note(seen, (port, "remove"))
        previous = ports

    # the baseline: zeroconf's own browser, resolving each instance it is told of, on a loop of its own
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    async def start_bare() -> AsyncZeroconf:
        zc = AsyncZeroconf(ip_version=IPVersion.V4Only)

        def handler(zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
            if state_change is ServiceStateChange.Removed:
                port = ports_by_name.get(name)
                if port is not None:
                    note(bare, (port, "remove"))
                return

            async def resolve() -> None:
                info = AsyncServiceInfo(service_type, name)
                if await info.async_request(zc.zeroconf, 3000, DNSQuestionType.QM) and info.port:
                    ports_by_name[name] = info.port
                    note(bare, (info.port, "add"))

            tasks.add(task := loop.create_task(resolve()))
            task.add_done_callback(tasks.discard)

        AsyncServiceBrowser(zc.zeroconf, [TYPE], handlers=[handler], question_type=DNSQuestionType.QM)
        return zc

    ports_by_name: dict[str, int] = {}
    tasks: set[asyncio.Task[None]] = set()
    bare_zc = asyncio.run_coroutine_threadsafe(start_bare(), loop).result()
    publisher: mdns.Publisher[Instance] = mdns.Publisher(TYPE)
    publisher.wait_ready(10)
    publisher.subscribe(on_set)

    def wait(key: tuple[int, str]) -> None:
        with changed:
            if not changed.wait_for(lambda: key in seen and key in bare, 30):
                raise SystemExit(f"{key} not seen within 30 s (publisher: {key in seen}, bare: {key in bare})")

    results: dict[str, tuple[list[float], list[float]]] = {
        "avahi-publish started -> added": ([], []),
        "goodbye -> removed": ([], []),
        "register() called -> added": ([], []),
    }
    for n in range(rounds):
        port = 20000 + n
        start = time.perf_counter()
        process = subprocess.Popen(["avahi-publish", "-s", f"bench-{n}", "_bench._tcp", str(port)],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
        assert process.stdout is not None
        line = process.stdout.readline()
        assert b"Established" in line, line
        wait((port, "add"))
        results["avahi-publish started -> added"][0].append(seen[(port, "add")] - start)
        results["avahi-publish started -> added"][1].append(bare[(port, "add")] - start)
        start = time.perf_counter()
        process.terminate()
        process.wait()
        wait((port, "remove"))
        results["goodbye -> removed"][0].append(seen[(port, "remove")] - start)
        results["goodbye -> removed"][1].append(bare[(port, "remove")] - start)

        port = 30000 + n
        registrar = mdns.Registrar(TYPE, Instance("127.0.0.1", port), name=f"reg-{n}", ttl=10)
        start = time.perf_counter()
        registrar.register()
        wait((port, "add"))
        results["register() called -> added"][0].append(seen[(port, "add")] - start)
        results["register() called -> added"][1].append(bare[(port, "add")] - start)
        registrar.close()

    print(f"mDNS propagation, {rounds} rounds, Avahi {avahi_version()} and zeroconf in a network namespace")
    print(f"{'':32} {'publisher median / p99':>26} {'bare browser median / p99':>28} {'ratio (medians)':>16}")
    for what, (ours, base) in results.items():
        print(
            f"{what:32} {ms(statistics.median(ours))} / {ms(p99(ours))}"
            f"   {ms(statistics.median(base))} / {ms(p99(base))}"
            f"   {statistics.median(ours) / statistics.median(base):8.2f}x"
        )
    publisher.close()
    asyncio.run_coroutine_threadsafe(bare_zc.async_close(), loop).result()


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:9.1f} ms"


def avahi_version() -> str:
    result = subprocess.run(["avahi-daemon", "--version"], capture_output=True, text=True, check=False)
    return result.stdout.split()[-1] if result.stdout else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        inside(args.rounds)
    else:
        outside(args.rounds)


if __name__ == "__main__":
    main()
