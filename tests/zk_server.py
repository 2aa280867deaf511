"""A real ZooKeeper 3.8 on loopback, for tests, benchmarks and examples.

``ZooKeeperServer`` runs a throwaway standalone ZooKeeper (the Debian ``zookeeper`` package's
jar, started with ``java`` directly) on a free 127.0.0.1 port, with a short ``tickTime`` so
that short session timeouts are allowed and tests stay fast. Only 127.0.0.1 is contacted.

    with ZooKeeperServer() as zk:
        client = zk.client()          # a started KazooClient; stop it when done
        client.create("/services/api/a", b"127.0.0.1:8080", makepath=True)

``ZooKeeperServer(tls=True)`` also listens with TLS on ``tls_port`` (a throwaway CA made with
``openssl``, client certificates required: ``certs`` names the files; Netty, as ZooKeeper
needs for TLS). ``stop()`` then ``start()`` brings it back on the same port with the same data directory,
so sessions that have not expired and persistent nodes survive. A missing ``java`` or
``zookeeper.jar`` is reported by ``require_zookeeper()``: ``pytest.skip`` outside CI,
``pytest.fail`` when the environment variable ``CI`` is ``"true"``.

The pytest fixtures built on it live in ``tests/zk_fixtures.py``.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from .daemon import Server, free_tcp_port, missing

JAVA = shutil.which("java")
_JARS = ("/usr/share/java/zookeeper.jar", "/usr/share/java/slf4j-simple.jar")
JARS = tuple(jar for jar in _JARS if os.path.exists(jar))
# ZooKeeper's TLS runs on Netty; the jar's manifest names most of it, not these two
TLS_JARS = ("/usr/share/java/netty-codec.jar", "/usr/share/java/netty-resolver.jar")
MISSING = (
    None
    if JAVA is not None and _JARS[0] in JARS
    else "ZooKeeper is not installed (apt-get install zookeeper, which needs java); the ZooKeeper tests need it"
)


def require_zookeeper() -> None:
    """Skip the test when ZooKeeper cannot run here (fail instead when ``CI=true``)."""
    if MISSING is not None:
        missing(MISSING)


def require_zookeeper_tls() -> None:
    """Skip (or fail under ``CI=true``) a TLS test where ZooKeeper, its Netty jars or ``openssl`` are missing."""
    require_zookeeper()
    absent = [jar for jar in TLS_JARS if not os.path.exists(jar)] + ([] if shutil.which("openssl") else ["openssl"])
    if absent:
        missing(f"ZooKeeper over TLS needs {', '.join(absent)} (apt-get install libnetty-java openssl)")


def require_zookeeper_or_exit() -> None:
    """For scripts: exit with a message saying how to get ZooKeeper when it is missing."""
    if MISSING is not None:
        raise SystemExit(MISSING)


def four_letter(port: int, command: bytes, timeout: float = 0.5) -> bytes:
    """Send a four-letter command (``b"ruok"``, ``b"srvr"``) and return the reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(command)
        chunks = []
        while chunk := sock.recv(4096):
            chunks.append(chunk)
        return b"".join(chunks)


class ZooKeeperServer(Server):
    """A standalone ZooKeeper on ``127.0.0.1:port`` with its data in a temporary directory.

    ``tick`` is ZooKeeper's ``tickTime`` in seconds; sessions may last from ``2 * tick`` to
    60 s (the server's bounds, which a client's requested timeout is clamped to).
    """

    def __init__(self, *, port: int | None = None, tick: float = 0.1, tls: bool = False) -> None:
        self.port = port or free_tcp_port()
        self.tick = tick
        super().__init__(Path(tempfile.mkdtemp(prefix="lb-zk-")), "zookeeper.log")
        (self.dir / "data").mkdir()
        tick_ms = max(1, round(tick * 1000))
        config = f"""tickTime={tick_ms}
dataDir={self.dir / "data"}
clientPort={self.port}
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr,mntr,cons
minSessionTimeout={2 * tick_ms}
maxSessionTimeout=60000
"""
        self.tls_port: int | None = None
        self.certs: dict[str, str] = {}
        if tls:
            config += self._tls_config()
        (self.dir / "zoo.cfg").write_text(config)

    def _tls_config(self) -> str:
        from .etcd_server import make_certs

        self.certs = make_certs(self.dir)
        keystore = self.dir / "server-keystore.pem"  # ZooKeeper's PEM key store: the key, then the certificate
        keystore.write_text(Path(self.certs["server_key"]).read_text() + Path(self.certs["server_cert"]).read_text())
        self.tls_port = free_tcp_port()
        return f"""serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory
secureClientPort={self.tls_port}
secureClientPortAddress=127.0.0.1
ssl.keyStore.location={keystore}
ssl.keyStore.type=PEM
ssl.trustStore.location={self.certs["ca"]}
ssl.trustStore.type=PEM
ssl.clientAuth=need
"""

    @property
    def tls_hosts(self) -> str:
        """The connection string of the TLS port (``"127.0.0.1:PORT"``)."""
        if self.tls_port is None:
            raise RuntimeError("this ZooKeeperServer was made without tls=True")
        return f"127.0.0.1:{self.tls_port}"

    @property
    def hosts(self) -> str:
        """The connection string (``"127.0.0.1:PORT"``)."""
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> ZooKeeperServer:
        """Start ZooKeeper and wait until it answers ``ruok`` with ``imok``."""
        if self.running:
            return self
        self.spawn(
            [
                JAVA or "java",
                "-Xmx256m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-cp",
                ":".join((JARS or _JARS) + (TLS_JARS if self.tls_port else ())),
                "org.apache.zookeeper.server.quorum.QuorumPeerMain",
                str(self.dir / "zoo.cfg"),
            ]
        )
        deadline = time.monotonic() + timeout
        while True:
            self.exited("ZooKeeper")
            try:
                # "imok" comes before the server takes sessions; "srvr" tells when it does
                if four_letter(self.port, b"ruok") == b"imok" and b"Mode:" in four_letter(self.port, b"srvr"):
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"ZooKeeper did not answer on port {self.port} within {timeout}s:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    # -- clients ---------------------------------------------------------------------------

    def client(self, *, chroot: str = "", session_timeout: float = 5.0, **options: Any) -> Any:
        """A started ``KazooClient`` connected to this server (``chroot`` like ``"/apps"``)."""
        from kazoo.client import KazooClient

        client = KazooClient(
            hosts=self.hosts + chroot,
            timeout=session_timeout,
            connection_retry={"max_tries": -1, "delay": 0.05, "max_delay": 0.5},
            **options,
        )
        client.start(timeout=10)
        return client

    def expire(self, client: Any) -> None:
        """Expire ``client``'s session now, as the server would after a partition.

        A second connection takes the session over with its id and password, then closes it:
        the server ends the session and ``client`` learns on its next contact that it expired.
        """
        from kazoo.client import KazooClient

        session = client.client_id
        if session is None:
            raise RuntimeError("the client has no session to expire (not connected)")
        twin = KazooClient(hosts=self.hosts, client_id=session, timeout=client._session_timeout / 1000)
        twin.start(timeout=10)
        twin.stop()
        twin.close()
