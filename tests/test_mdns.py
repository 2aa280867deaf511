"""``loadbalancer.mdns`` against a real Avahi, in a network namespace each test module makes (no multicast leaves it).

The library runs inside the namespace in a process of its own (``tests/mdns_agent.py``),
which reports over stdout; Avahi's own tools (``avahi-publish``, ``avahi-browse``) play
the other side in both directions.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from loadbalancer import Instance, mdns
from loadbalancer.instance import parse_instance
from loadbalancer.mdns._records import check_interfaces, check_type, check_types, properties_of
from tests.avahi_netns import AvahiNamespace, namespace_or_skip
from tests.helpers import eventually

ROOT = Path(__file__).resolve().parent.parent
WAIT = 30.0  # a bound for things that take about a second, on a loaded machine


@pytest.fixture(scope="module")
def avahi() -> Iterator[AvahiNamespace]:
    yield from namespace_or_skip()


class Agent:
    """A process inside the namespace whose stdout lines (JSON documents, or Avahi's text) are collected."""

    def __init__(self, namespace: AvahiNamespace, argv: list[str], *, parse: bool = True) -> None:
        self.lines: list[Any] = []
        self.process = namespace.popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT
        )
        self._parse = parse
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            text = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(json.loads(text) if self._parse else text)

    def find(self, predicate: Callable[[Any], object]) -> Any:
        return next((line for line in reversed(self.lines) if predicate(line)), None)

    def wait_for(self, predicate: Callable[[Any], object], what: str, timeout: float = WAIT) -> Any:
        def seen() -> object:
            if self.process.poll() is not None and self.find(predicate) is None:
                stderr = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise AssertionError(f"{what}: the process ended ({self.process.returncode}): {stderr[-3000:]}")
            return self.find(predicate)

        eventually(seen, timeout, what)
        return self.find(predicate)

    def current(self) -> list[dict[str, Any]] | None:
        last = self.find(lambda line: "set" in line)
        return None if last is None else last["set"]

    def addresses(self) -> list[str] | None:
        current = self.current()
        return None if current is None else sorted(i["address"] for i in current)

    def stop(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(5)


def agent(namespace: AvahiNamespace, *args: str) -> Agent:
    return Agent(namespace, [sys.executable, "-m", "tests.mdns_agent", *args])


def publish(namespace: AvahiNamespace, name: str, stype: str, port: int, *txt: str) -> subprocess.Popen[bytes]:
    process = namespace.popen(["avahi-publish", "-s", name, stype, str(port), *txt], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline().decode()
    assert "Established" in line, line
    return process


def withdraw(process: subprocess.Popen[bytes]) -> None:
    process.terminate()  # Avahi sends goodbye packets for it
    process.wait(10)


def browse(namespace: AvahiNamespace, stype: str) -> list[list[str]]:
    """A one-shot ``avahi-browse -rpt``: the resolved lines ('=') split into fields."""
    result = namespace.run(["avahi-browse", "-rpt", stype])
    return [line.split(";") for line in result.stdout.splitlines() if line.startswith("=")]


def named(name: str) -> Callable[[list[str]], bool]:
    return lambda fields: len(fields) > 3 and fields[3] == name


# -- Avahi announces, the publisher follows ------------------------------------------------


def test_what_avahi_publishes_the_publisher_resolves_and_a_goodbye_removes_it(avahi: AvahiNamespace) -> None:
    watcher = agent(avahi, "watch", "_http._tcp.local.")
    try:
        watcher.wait_for(lambda line: "set" in line, "a first set")
        web1 = publish(avahi, "web1", "_http._tcp", 8081, "path=/api", "tags=blue,v2", "flag")
        got = watcher.wait_for(lambda line: any(i["port"] == 8081 for i in line.get("set", [])), "web1 published")
        (instance,) = [i for i in got["set"] if i["port"] == 8081]
        assert instance["address"] == "127.0.0.1:8081"  # Avahi's A record in the namespace
        assert instance["metadata"] == {"path": "/api", "flag": ""}
        assert instance["tags"] == ["blue", "v2"]
        web2 = publish(avahi, "web2", "_http._tcp", 8082)
        watcher.wait_for(lambda line: watcher.addresses() == ["127.0.0.1:8081", "127.0.0.1:8082"], "web2 added")
        withdraw(web1)
        watcher.wait_for(lambda line: watcher.addresses() == ["127.0.0.1:8082"], "web1 gone on its goodbye")
        assert watcher.find(lambda line: line.get("log") == "mdns_instance_removed") is not None
        withdraw(web2)
        watcher.wait_for(lambda line: watcher.addresses() == [], "web2 gone")
    finally:
        watcher.stop()


def test_several_types_at_once_and_one_instance_by_name(avahi: AvahiNamespace) -> None:
    printer = publish(avahi, "printer", "_ipp._tcp", 631)
    site = publish(avahi, "site", "_http._tcp", 8090)
    other = publish(avahi, "other", "_http._tcp", 8091)
    both = agent(avahi, "watch", "_http._tcp", "_ipp._tcp.local.")
    one = agent(avahi, "watch", "_http._tcp.local.", "--name", "site")
    try:
        both.wait_for(
            lambda line: both.addresses() == ["127.0.0.1:631", "127.0.0.1:8090", "127.0.0.1:8091"], "both types"
        )
        one.wait_for(lambda line: one.addresses() == ["127.0.0.1:8090"], "only the instance named site")
        withdraw(printer)
        both.wait_for(lambda line: both.addresses() == ["127.0.0.1:8090", "127.0.0.1:8091"], "the printer gone")
        assert one.addresses() == ["127.0.0.1:8090"]
    finally:
        both.stop()
        one.stop()
        withdraw(site)
        withdraw(other)


def test_a_static_service_file_appears_and_goes_with_the_file(avahi: AvahiNamespace) -> None:
    watcher = agent(avahi, "watch", "_files._tcp.local.")
    path = avahi.services / "files.service"
    try:
        watcher.wait_for(lambda line: watcher.current() == [], "an empty first set")
        xml = (
            '<?xml version="1.0" standalone="no"?><!DOCTYPE service-group SYSTEM "avahi-service.dtd">'
            "<service-group><name>files</name><service><type>_files._tcp</type><port>9000</port>"
            "<txt-record>root=/srv</txt-record></service></service-group>"
        )
        path.with_suffix(".tmp").write_text(xml)
        path.with_suffix(".tmp").rename(path)
        got = watcher.wait_for(lambda line: watcher.addresses() == ["127.0.0.1:9000"], "the file's service")
        assert got["set"][0]["metadata"] == {"root": "/srv"}
        path.unlink()
        watcher.wait_for(lambda line: watcher.addresses() == [], "gone with the file")
    finally:
        path.unlink(missing_ok=True)
        watcher.stop()


# -- the registrar announces, Avahi sees ---------------------------------------------------


def test_what_the_registrar_announces_avahi_resolves_and_sees_withdrawn(avahi: AvahiNamespace) -> None:
    registrar = agent(
        avahi, "register", "_api._tcp.local.", "127.0.0.1:7001", "--name", "api-1", "--meta", "version=2",
        "--tag", "blue", "--ttl", "60",
    )  # fmt: skip
    try:
        assert registrar.wait_for(lambda line: "registered" in line, "registered")["registered"] == (
            "api-1._api._tcp.local."
        )
        found = [fields for fields in browse(avahi, "_api._tcp") if named("api-1")(fields)]
        assert found, "avahi-browse does not see api-1"
        fields = found[0]
        assert fields[7:9] == ["127.0.0.1", "7001"]
        assert '"version=2"' in fields[9] and '"tags=blue"' in fields[9]
        watching = Agent(avahi, ["avahi-browse", "-pk", "_api._tcp"], parse=False)
        try:
            watching.wait_for(lambda line: line.startswith("+") and ";api-1;" in line, "avahi-browse lists api-1")
            registrar.stop()
            assert registrar.find(lambda line: "deregistered" in line) is not None
            watching.wait_for(lambda line: line.startswith("-") and ";api-1;" in line, "avahi-browse sees it go")
        finally:
            watching.process.terminate()
            watching.stop()
    finally:
        registrar.stop()
    assert not [fields for fields in browse(avahi, "_api._tcp") if named("api-1")(fields)]


def test_a_registration_still_standing_at_interpreter_exit_is_withdrawn(avahi: AvahiNamespace) -> None:
    registrar = agent(
        avahi, "register", "_exit._tcp.local.", "127.0.0.1:7050", "--name", "leaver", "--exit-without-close"
    )
    watching = Agent(avahi, ["avahi-browse", "-pk", "_exit._tcp"], parse=False)
    try:
        registrar.wait_for(lambda line: "registered" in line, "registered")
        watching.wait_for(lambda line: line.startswith("+") and ";leaver;" in line, "avahi-browse lists it")
        registrar.stop()  # stdin closed: the process returns from main without closing the registrar
        assert registrar.find(lambda line: "exiting" in line) is not None
        assert registrar.process.returncode == 0
        watching.wait_for(lambda line: line.startswith("-") and ";leaver;" in line, "withdrawn at exit")
    finally:
        watching.process.terminate()
        watching.stop()
        registrar.stop()


def test_a_name_avahi_holds_is_renamed_as_rfc_6762_says_and_reported(avahi: AvahiNamespace) -> None:
    holder = publish(avahi, "taken", "_api._tcp", 7100)
    registrar = agent(avahi, "register", "_api._tcp.local.", "127.0.0.1:7101", "--name", "taken")
    try:
        name = registrar.wait_for(lambda line: "registered" in line, "registered")["registered"]
        assert name == "taken-2._api._tcp.local."
        conflict = registrar.find(lambda line: line.get("log") == "mdns_name_conflict")
        assert conflict is not None and conflict["requested"] == "taken._api._tcp.local."
        names = {fields[3]: fields[8] for fields in browse(avahi, "_api._tcp")}
        assert names.get("taken") == "7100" and names.get("taken-2") == "7101"
    finally:
        registrar.stop()
        withdraw(holder)


def test_a_responder_killed_without_goodbye_goes_when_its_records_expire(avahi: AvahiNamespace) -> None:
    # The registrar's SRV and A records live 3 s, its PTR 75 minutes (as Avahi's); killed with
    # SIGKILL it sends no goodbye, and zeroconf's browser would report nothing until the PTR
    # expires: the publisher notices the expired SRV, and that nobody answers for it.
    watcher = agent(avahi, "watch", "_gone._tcp.local.", "--recheck", "0.5")
    registrar = agent(avahi, "register", "_gone._tcp.local.", "127.0.0.1:7200", "--name", "doomed", "--ttl", "3")
    try:
        registrar.wait_for(lambda line: "registered" in line, "registered")
        watcher.wait_for(lambda line: watcher.addresses() == ["127.0.0.1:7200"], "seen")
        registrar.process.send_signal(signal.SIGKILL)
        registrar.process.wait()
        watcher.wait_for(lambda line: watcher.addresses() == [], "removed after its records expired", timeout=60)
        expired = watcher.find(lambda line: line.get("log") == "mdns_instance_expired")
        assert expired is not None and expired["instance_name"] == "doomed._gone._tcp.local."
        assert watcher.find(lambda line: line.get("log") == "mdns_instance_removed") is None  # no goodbye came
    finally:
        registrar.stop()
        watcher.stop()


def test_a_live_instance_whose_records_expire_is_confirmed_and_kept(avahi: AvahiNamespace) -> None:
    watcher = agent(avahi, "watch", "_kept._tcp.local.", "--recheck", "0.5")
    registrar = agent(avahi, "register", "_kept._tcp.local.", "127.0.0.1:7300", "--name", "alive", "--ttl", "2")
    try:
        registrar.wait_for(lambda line: "registered" in line, "registered")
        watcher.wait_for(lambda line: watcher.addresses() == ["127.0.0.1:7300"], "seen")
        start = len(watcher.lines)
        time.sleep(6)  # three lifetimes of its records: each expiry is followed by a query it answers
        assert watcher.addresses() == ["127.0.0.1:7300"]
        assert not [line for line in watcher.lines[start:] if "set" in line]  # never dropped, not even briefly
    finally:
        registrar.stop()
        watcher.stop()


# -- the registry facade -------------------------------------------------------------------


def test_the_registry_lists_the_types_on_the_network_and_discovers_by_tag(avahi: AvahiNamespace) -> None:
    blue = publish(avahi, "blue", "_reg._tcp", 7401, "tags=blue")
    green = publish(avahi, "green", "_reg._tcp", 7402, "tags=green")
    try:
        services = agent(avahi, "services")
        got = services.wait_for(lambda line: "services" in line, "the services")
        assert "_reg._tcp.local." in got["services"]
        discover = agent(avahi, "discover", "_reg._tcp", "--tag", "green")
        got = discover.wait_for(lambda line: "instances" in line, "discovered")
        assert [i["address"] for i in got["instances"]] == ["127.0.0.1:7402"]
        services.stop()
        discover.stop()
    finally:
        withdraw(blue)
        withdraw(green)


# -- without a network ---------------------------------------------------------------------


def test_service_types_are_completed_and_bad_ones_named() -> None:
    assert check_type("_http._tcp") == "_http._tcp.local."
    assert check_types(["_http._tcp", "_HTTP._tcp.local.", "_ipp._tcp"]) == ("_http._tcp.local.", "_ipp._tcp.local.")
    with pytest.raises(ValueError, match=r"'web\._http\._tcp\.local\.'.*the instance as name="):
        check_type("web._http._tcp.local.")
    with pytest.raises(ValueError, match="'http'.*starts with '_'"):
        mdns.Publisher("http")
    with pytest.raises(ValueError, match="no service type"):
        mdns.Publisher([])


def test_bad_options_are_named() -> None:
    with pytest.raises(ValueError, match="'eth0' is not an IP address"):
        check_interfaces(["eth0"])
    with pytest.raises(ValueError, match="ip_version 'v5'"):
        mdns.Backend(ip_version="v5")
    with pytest.raises(ValueError, match="ttl must be at least 1 second"):
        mdns.Registrar("_http._tcp", "127.0.0.1:80", ttl=0.5)
    with pytest.raises(ValueError, match="instance name ''"):
        mdns.Registrar("_http._tcp", "127.0.0.1:80", name="")
    with pytest.raises(ValueError, match="TXT property 'a=b'"):
        mdns.Registrar("_http._tcp", "127.0.0.1:80", properties={"a=b": "c"})


async def test_a_host_name_cannot_be_announced() -> None:
    backend = mdns.Backend()
    with pytest.raises(ValueError, match="'api.internal:80'.*IP address"):
        await backend.announce("_http._tcp", parse_instance("api.internal:80"))
    await backend.aclose()


def test_txt_properties_carry_metadata_and_tags() -> None:
    instance = Instance("10.0.0.1", 80, tags=("a", "b"), metadata={"path": "/"})
    assert properties_of(instance, {"extra": "1"}) == {"path": "/", "extra": "1", "tags": "a,b"}


def test_the_example_announces_follows_and_sees_one_leave(avahi: AvahiNamespace) -> None:
    result = avahi.run([sys.executable, str(ROOT / "examples" / "mdns.py")], timeout=90)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "announced api-1._lbdemo._tcp.local., api-2._lbdemo._tcp.local., api-old._lbdemo._tcp.local." in out
    assert "-> 2 endpoints:" in out and "version=2" in out and "version=1" not in out  # the v1 one filtered out
    assert "calls: ['api-1 handled /hello', 'api-1 handled /hello', 'api-2 handled /hello', 'api-2 handled" in out
    assert "-> 1 endpoints:" in out and "calls: ['api-2 handled /hello', 'api-2 handled /hello']" in out
    assert result.stderr == ""
