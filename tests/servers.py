"""Real discovery servers on loopback, for tests, benchmarks and examples.

``BindServer`` runs a throwaway BIND 9 (``named``) authoritative for one zone on a free
127.0.0.1 port (and ``::1`` on the same port), and changes its records at runtime with
RFC 2136 dynamic updates. Only loopback addresses are ever contacted.

    with BindServer() as bind:
        bind.set_srv("_api._tcp", [(10, 5, 8080, "a")])
        resolver = bind.resolver()

A missing ``named`` is reported by ``require_named()``: ``pytest.skip`` outside CI,
``pytest.fail`` when the environment variable ``CI`` is ``"true"``.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.update

from .daemon import Server, missing

NAMED = shutil.which("named") or ("/usr/sbin/named" if os.path.exists("/usr/sbin/named") else None)

SrvRecord = tuple[int, int, int, str]
"""``(priority, weight, port, target)``; a relative target is taken within the zone."""


def require_named() -> str:
    """The path of ``named``; skip the test without it (fail instead when ``CI=true``)."""
    if NAMED is None:
        missing("BIND 9 `named` is not installed (apt-get install bind9); the DNS SRV tests need it")
    return NAMED


def free_port() -> int:
    """A port that is free on 127.0.0.1 and ::1, for both UDP and TCP."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port: int = udp.getsockname()[1]
            try:
                for family, kind, host in (
                    (socket.AF_INET, socket.SOCK_STREAM, "127.0.0.1"),
                    (socket.AF_INET6, socket.SOCK_DGRAM, "::1"),
                    (socket.AF_INET6, socket.SOCK_STREAM, "::1"),
                ):
                    with socket.socket(family, kind) as other:
                        other.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no port free for both UDP and TCP on loopback")


class BindServer(Server):
    """A BIND 9 primary for ``zone`` on ``127.0.0.1:port`` and ``[::1]:port``, accepting updates.

    ``stop()`` and ``start()`` may be called again: the server comes back on the same port
    with the records it had (the zone journal stays in the temporary directory).
    """

    def __init__(self, zone: str = "example.test.", *, port: int | None = None) -> None:
        self.named = NAMED or "named"
        self.zone = dns.name.from_text(zone)
        self.port = port or free_port()
        super().__init__(Path(tempfile.mkdtemp(prefix="lb-bind-")), "named.log")
        self._write_config()

    # -- lifecycle -------------------------------------------------------------------------

    def _write_config(self) -> None:
        zone = self.zone.to_text()
        (self.dir / "named.conf").write_text(
            f"""
options {{
    directory "{self.dir}";
    pid-file none;
    session-keyfile none;
    managed-keys-directory "{self.dir}";
    listen-on port {self.port} {{ 127.0.0.1; }};
    listen-on-v6 port {self.port} {{ ::1; }};
    recursion no;
    dnssec-validation no;
    notify no;
}};
controls {{ }};
zone "{zone}" {{
    type primary;
    file "zone.db";
    allow-update {{ 127.0.0.1; ::1; }};
}};
"""
        )
        (self.dir / "zone.db").write_text(
            f"""$TTL 0
$ORIGIN {zone}
@   IN SOA ns.{zone} admin.{zone} 1 3600 600 86400 0
@   IN NS  ns.{zone}
ns  IN A   127.0.0.1
"""
        )

    def start(self, timeout: float = 10.0) -> BindServer:
        """Start ``named`` and wait until it answers a SOA query."""
        if self.running:
            return self
        self.spawn([self.named, "-g", "-n", "1", "-c", str(self.dir / "named.conf")])
        deadline = time.monotonic() + timeout
        query = dns.message.make_query(self.zone, "SOA")
        while True:
            self.exited("named")
            try:
                answer = dns.query.udp(query, "127.0.0.1", port=self.port, timeout=0.2)
                if answer.rcode() == dns.rcode.NOERROR and answer.answer:
                    return self
            except (OSError, dns.exception.DNSException):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"named did not answer on port {self.port} within {timeout}s:\n{self.log_tail()}")
            time.sleep(0.02)

    # -- names and resolvers ---------------------------------------------------------------

    def name(self, relative: str) -> str:
        """``relative`` made absolute within the zone (``"_api._tcp"`` -> ``"_api._tcp.example.test."``)."""
        return dns.name.from_text(relative, self.zone).to_text()

    def resolver(self, *, timeout: float = 1.0, lifetime: float = 2.0, v6: bool = False) -> dns.resolver.Resolver:
        """A resolver that asks this server only (never the system's)."""
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = ["::1" if v6 else "127.0.0.1"]
        resolver.port = self.port
        resolver.timeout = timeout
        resolver.lifetime = lifetime
        return resolver

    # -- dynamic updates -------------------------------------------------------------------

    def _send(self, update: dns.update.UpdateMessage) -> None:
        response = dns.query.tcp(update, "127.0.0.1", port=self.port, timeout=5)
        if response.rcode() != dns.rcode.NOERROR:
            raise RuntimeError(f"update refused: {dns.rcode.to_text(response.rcode())}\n{self.log_tail()}")

    def _update(self) -> dns.update.UpdateMessage:
        return dns.update.UpdateMessage(self.zone)

    @staticmethod
    def _srv(record: SrvRecord) -> str:
        priority, weight, port, target = record
        return f"{priority} {weight} {port} {target}"

    def add_srv(self, name: str, records: Iterable[SrvRecord], ttl: int = 0) -> None:
        """Add SRV records to ``name`` (BIND gives the whole set the last TTL)."""
        update = self._update()
        for record in records:
            update.add(self.name(name), ttl, "SRV", self._srv(record))
        self._send(update)

    def delete_srv(self, name: str, records: Iterable[SrvRecord]) -> None:
        """Delete these SRV records of ``name``."""
        update = self._update()
        for record in records:
            update.delete(self.name(name), "SRV", self._srv(record))
        self._send(update)

    def set_srv(self, name: str, records: Sequence[SrvRecord], ttl: int = 0) -> None:
        """Replace every SRV record of ``name`` with ``records`` in one update."""
        update = self._update()
        update.delete(self.name(name), "SRV")
        for record in records:
            update.add(self.name(name), ttl, "SRV", self._srv(record))
        self._send(update)

    def set_address(self, name: str, addresses: Sequence[str], ttl: int = 0) -> None:
        """Replace the A and AAAA records of ``name`` with ``addresses``."""
        update = self._update()
        update.delete(self.name(name), "A")
        update.delete(self.name(name), "AAAA")
        for address in addresses:
            update.add(self.name(name), ttl, "AAAA" if ":" in address else "A", address)
        self._send(update)

    def set_records(self, name: str, rdtype: str, rdatas: Sequence[str], ttl: int = 0) -> None:
        """Replace the ``rdtype`` records of ``name`` (``"TXT"``, ``["\\"hello\\""]``)."""
        update = self._update()
        update.delete(self.name(name), rdtype)
        for rdata in rdatas:
            update.add(self.name(name), ttl, rdtype, rdata)
        self._send(update)

    def delete_name(self, name: str) -> None:
        """Delete every record of ``name`` (it is then NXDOMAIN)."""
        update = self._update()
        update.delete(self.name(name))
        self._send(update)

    def set_many(self, records: dict[str, Sequence[SrvRecord]], ttl: int = 0, batch: int = 200) -> None:
        """Set the SRV records of many names, ``batch`` names per update message."""
        items = list(records.items())
        for start in range(0, len(items), batch):
            update = self._update()
            for name, srvs in items[start : start + batch]:
                update.delete(self.name(name), "SRV")
                for record in srvs:
                    update.add(self.name(name), ttl, "SRV", self._srv(record))
            self._send(update)


class FakeDNS:
    """A scriptable DNS server on ``127.0.0.1`` (UDP only): ``handler(query)`` returns the reply.

    The handler gets the parsed query and returns the reply's wire bytes, or ``None`` to
    drop the query (no reply). ``queries`` counts the queries received.
    """

    def __init__(self, handler: Callable[[dns.message.Message], bytes | None], *, port: int = 0) -> None:
        self.handler = handler
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.port: int = self.sock.getsockname()[1]
        self.queries = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"fake-dns-{self.port}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.05)
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.queries += 1
            try:
                query = dns.message.from_wire(data)
            except dns.exception.DNSException:
                continue
            reply = self.handler(query)
            if reply is not None:
                self.sock.sendto(reply, peer)

    def resolver(self, *, timeout: float = 0.5, lifetime: float = 1.0) -> dns.resolver.Resolver:
        """A resolver that asks this server only."""
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = self.port
        resolver.timeout = timeout
        resolver.lifetime = lifetime
        return resolver

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1)
        self.sock.close()

    def __enter__(self) -> FakeDNS:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BlackHole(FakeDNS):
    """A UDP socket bound on ``127.0.0.1`` (on ``port`` if given) that reads queries and never answers."""

    def __init__(self, *, port: int = 0) -> None:
        super().__init__(lambda query: None, port=port)


def srv_reply(query: dns.message.Message, records: Sequence[SrvRecord], *, ttl: int = 0) -> bytes:
    """An authoritative reply to ``query`` holding these SRV records (absolute targets)."""
    reply = dns.message.make_response(query)
    reply.flags |= dns.flags.AA
    if records:
        rrset = reply.find_rrset(
            reply.answer, query.question[0].name, dns.rdataclass.IN, dns.rdatatype.SRV, create=True
        )
        for priority, weight, port, target in records:
            rrset.add(dns.rdata.from_text("IN", "SRV", f"{priority} {weight} {port} {target}"), ttl)
    return reply.to_wire()


def rcode_reply(query: dns.message.Message, rcode: int) -> bytes:
    """A reply to ``query`` with this rcode and nothing else (SERVFAIL, REFUSED, NXDOMAIN)."""
    reply = dns.message.make_response(query)
    reply.set_rcode(dns.rcode.Rcode(rcode))
    return reply.to_wire()


def require_named_or_exit() -> str:
    """For scripts: the path of ``named``, or exit with a message saying how to get it."""
    if NAMED is None:
        raise SystemExit("BIND 9 `named` is not installed (apt-get install bind9); this script needs it")
    return NAMED
