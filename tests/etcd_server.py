"""Real etcd servers on loopback, for tests, benchmarks and examples.

``EtcdServer`` runs one etcd member, ``EtcdCluster`` three, each on free 127.0.0.1 ports
with a temporary data directory and fast election timings. Members can be stopped, killed
(SIGKILL), frozen (SIGSTOP) and started again on the same ports with the same data. A small
synchronous client (``put``, ``delete``, ``grant``, ``compact``, ...) changes the data from
the test's side over etcd's v3 JSON gateway. Only loopback addresses are ever contacted.

    with EtcdServer() as etcd:
        etcd.put("/services/api/a", "127.0.0.1:8080")
        publisher = loadbalancer.etcd.Publisher("/services/api", factory, endpoints=etcd.endpoints)

A missing ``etcd`` binary is reported by ``require_etcd()``: ``pytest.skip`` outside CI,
``pytest.fail`` when the environment variable ``CI`` is ``"true"``.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from .daemon import Daemon, free_tcp_port, missing

ETCD = shutil.which("etcd") or ("/usr/bin/etcd" if os.path.exists("/usr/bin/etcd") else None)
_MISSING = "etcd is not installed (apt-get install etcd-server); the etcd tests need it"


def require_etcd() -> str:
    """The path of ``etcd``; skip the test without it (fail instead when ``CI=true``)."""
    if ETCD is None:
        missing(_MISSING)
    return ETCD


def require_etcd_or_exit() -> str:
    """For scripts: the path of ``etcd``, or exit with a message saying how to get it."""
    if ETCD is None:
        raise SystemExit(_MISSING.replace("the etcd tests need", "this script needs"))
    return ETCD


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def prefix_end(prefix: str) -> str:
    """The ``range_end`` that makes a range cover every key starting with ``prefix``."""
    raw = bytearray(prefix.encode())
    while raw and raw[-1] == 0xFF:
        raw.pop()
    raw[-1] += 1
    return b64(bytes(raw))


class EtcdError(RuntimeError):
    """A request from the test client failed."""


class Member(Daemon):
    """One etcd process: its ports, data directory and lifecycle."""

    def __init__(self, name: str, root: Path, *, scheme: str = "http") -> None:
        self.name = name
        self.client_port = free_tcp_port()
        self.peer_port = free_tcp_port()
        self.scheme = scheme
        self.dir = root / name
        self.dir.mkdir()
        super().__init__(root / f"{name}.log")
        self.args: list[str] = []

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"


class EtcdCluster:
    """``size`` etcd members on 127.0.0.1 (three by default), with a small synchronous client.

    ``endpoints`` is the tuple of client URLs. ``stop()``/``kill()``/``start()`` act on the
    whole cluster or, given a member, on one; a restarted member keeps its ports and data.

    - ``progress_notify``: the server's watch progress notification interval, in seconds.
    - ``auth_token_ttl``: seconds an auth token lives (etcd's ``--auth-token-ttl``).
    - ``tls``: ``(cert_file, key_file, ca_file)``: serve clients over HTTPS, requiring a
      client certificate signed by ``ca_file`` when ``client_cert_auth`` is true.
    """

    def __init__(
        self,
        size: int = 3,
        *,
        progress_notify: float | None = None,
        auth_token_ttl: int | None = None,
        tls: tuple[str, str, str] | None = None,
        client_cert_auth: bool = False,
    ) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="lb-etcd-"))
        self.tls = tls
        scheme = "https" if tls else "http"
        self.members = [Member(f"m{i}", self.root, scheme=scheme) for i in range(size)]
        cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        for member in self.members:
            member.args = [
                "--name", member.name,
                "--data-dir", str(member.dir),
                "--listen-client-urls", member.url,
                "--advertise-client-urls", member.url,
                "--listen-peer-urls", member.peer_url,
                "--initial-advertise-peer-urls", member.peer_url,
                "--initial-cluster", cluster,
                "--initial-cluster-state", "new",
                "--initial-cluster-token", self.root.name,
                "--heartbeat-interval", "25",
                "--election-timeout", "250",
                "--logger", "zap",
                "--log-level", "warn",
            ]  # fmt: skip
            if progress_notify is not None:
                member.args += ["--experimental-watch-progress-notify-interval", f"{int(progress_notify * 1000)}ms"]
            if auth_token_ttl is not None:
                member.args += ["--auth-token-ttl", str(auth_token_ttl)]
            if tls is not None:
                cert, key, ca = tls
                member.args += ["--cert-file", cert, "--key-file", key, "--trusted-ca-file", ca]
                if client_cert_auth:
                    member.args += ["--client-cert-auth"]
        self._http = httpx.Client(timeout=2.0, verify=self._ssl_context())
        self.auth: tuple[str, str] | None = None
        self._tokens: dict[str, str] = {}

    def _ssl_context(self) -> Any:
        if self.tls is None:
            return True
        import ssl

        cert, key, ca = self.tls
        context = ssl.create_default_context(cafile=ca)
        context.load_cert_chain(cert, key)
        return context

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def endpoints(self) -> tuple[str, ...]:
        return tuple(member.url for member in self.members)

    @property
    def url(self) -> str:
        """The first member's client URL."""
        return self.members[0].url

    def start(self, member: Member | None = None, timeout: float = 15.0) -> EtcdCluster:
        """Start every member (or one) and wait until it reports itself healthy."""
        members = [member] if member is not None else self.members
        for one in members:
            one.spawn([ETCD or "etcd", *one.args])
        deadline = time.monotonic() + timeout
        for one in members:
            while not self.healthy(one):
                if not one.running:
                    raise RuntimeError(f"etcd {one.name} exited:\n{one.log_tail()}")
                if time.monotonic() > deadline:
                    tails = "\n".join(f"--- {m.name}\n{m.log_tail()}" for m in members)
                    self.kill()
                    raise RuntimeError(f"etcd did not become healthy within {timeout}s:\n{tails}")
                time.sleep(0.02)
        return self

    def healthy(self, member: Member) -> bool:
        try:
            response = self._http.get(f"{member.url}/health", timeout=0.5)
            return response.status_code == 200 and response.json().get("health") == "true"
        except (httpx.HTTPError, ValueError):
            return False

    def stop(self, member: Member | None = None) -> None:
        """SIGTERM (then SIGKILL) every member, or one."""
        for one in [member] if member is not None else self.members:
            one.stop()

    def kill(self, member: Member | None = None) -> None:
        """SIGKILL every member, or one (a member that lost quorum takes seconds to stop on SIGTERM)."""
        for one in [member] if member is not None else self.members:
            one.kill()

    def close(self) -> None:
        """Kill every member, then remove the data."""
        self.kill()
        self._http.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> EtcdCluster:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def status(self, member: Member) -> dict[str, Any]:
        return self._call(member, "/v3/maintenance/status", {})

    def leader(self, timeout: float = 10.0) -> Member:
        """The current leader (waiting for an election to finish)."""
        deadline = time.monotonic() + timeout
        while True:
            for member in self.members:
                if not member.running or member.paused:
                    continue
                try:
                    status = self.status(member)
                except (EtcdError, httpx.HTTPError):
                    continue
                if status.get("leader") and status["leader"] == status["header"]["member_id"]:
                    return member
            if time.monotonic() > deadline:
                raise RuntimeError("no etcd leader")
            time.sleep(0.02)

    def member_by_url(self, url: str) -> Member:
        for member in self.members:
            if member.url == url.rstrip("/"):
                return member
        raise KeyError(url)

    # -- a small client --------------------------------------------------------------------

    def _call(self, member: Member, path: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = {}
        if self.auth is not None:
            token = self._tokens.get(member.url)
            if token is None:
                name, password = self.auth
                reply = self._http.post(
                    f"{member.url}/v3/auth/authenticate", json={"name": name, "password": password}
                ).json()
                token = self._tokens[member.url] = reply["token"]
            headers["Authorization"] = token
        reply = self._http.post(f"{member.url}{path}", json=body, headers=headers).json()
        if "error" in reply:
            if "auth token" in str(reply.get("error")):
                self._tokens.pop(member.url, None)
            raise EtcdError(f"{path} on {member.name}: {reply['error']}")
        return dict(reply)

    def call(self, path: str, body: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        """Send ``body`` to ``path`` on the first member that answers, retrying until ``timeout``
        (writes fail while a new leader is elected)."""
        deadline = time.monotonic() + timeout
        while True:
            for member in self.members:
                if not member.running or member.paused:
                    continue
                try:
                    return self._call(member, path, body)
                except (EtcdError, httpx.HTTPError, ValueError) as error:
                    last: Exception = error
            if time.monotonic() > deadline:
                raise EtcdError(f"{path} failed on every member: {last!r}")
            time.sleep(0.02)

    def put(self, key: str, value: str | bytes, *, lease: int | None = None) -> int:
        """Set ``key``; returns the revision of the change."""
        body: dict[str, Any] = {"key": b64(key), "value": b64(value)}
        if lease is not None:
            body["lease"] = str(lease)
        return int(self.call("/v3/kv/put", body)["header"]["revision"])

    def put_many(self, items: Sequence[tuple[str, str]], batch: int = 100) -> int:
        """Set many keys, ``batch`` per transaction; returns the last revision."""
        revision = 0
        for start in range(0, len(items), batch):
            success = [
                {"request_put": {"key": b64(key), "value": b64(value)}} for key, value in items[start : start + batch]
            ]
            revision = int(self.call("/v3/kv/txn", {"success": success})["header"]["revision"])
        return revision

    def delete(self, key: str, *, prefix: bool = False) -> int:
        """Delete ``key`` (every key under it with ``prefix=True``); returns the revision."""
        body = {"key": b64(key)}
        if prefix:
            body["range_end"] = prefix_end(key)
        return int(self.call("/v3/kv/deleterange", body)["header"]["revision"])

    def get(self, key: str) -> str | None:
        kvs = self.call("/v3/kv/range", {"key": b64(key)}).get("kvs", [])
        return unb64(kvs[0].get("value", "")) if kvs else None

    def keys(self, prefix: str) -> dict[str, str]:
        kvs = self.call("/v3/kv/range", {"key": b64(prefix), "range_end": prefix_end(prefix)}).get("kvs", [])
        return {unb64(kv["key"]): unb64(kv.get("value", "")) for kv in kvs}

    def lease_of(self, key: str) -> int | None:
        kvs = self.call("/v3/kv/range", {"key": b64(key)}).get("kvs", [])
        return int(kvs[0]["lease"]) if kvs and "lease" in kvs[0] else None

    def revision(self) -> int:
        return int(self.call("/v3/kv/range", {"key": b64("\0")})["header"]["revision"])

    def compact(self, revision: int | None = None) -> int:
        """Compact the history up to ``revision`` (default: the current one); returns it."""
        revision = self.revision() if revision is None else revision
        self.call("/v3/kv/compaction", {"revision": str(revision), "physical": True})
        return revision

    def grant(self, ttl: int) -> int:
        return int(self.call("/v3/lease/grant", {"TTL": str(ttl)})["ID"])

    def revoke(self, lease: int) -> None:
        self.call("/v3/lease/revoke", {"ID": str(lease)})

    def enable_auth(self, password: str = "secret") -> None:
        """Create ``root`` with ``password`` and turn authentication on."""
        self.call("/v3/auth/user/add", {"name": "root", "password": password})
        self.call("/v3/auth/user/grant", {"user": "root", "role": "root"})
        self.call("/v3/auth/enable", {})
        self.auth = ("root", password)

    def wait_for_leader(self, timeout: float = 10.0) -> None:
        """Wait until a write goes through (after a leader was killed)."""
        self.put("/__probe__", "x")
        self.leader(timeout)


class EtcdServer(EtcdCluster):
    """One etcd member on 127.0.0.1; see ``EtcdCluster``."""

    def __init__(self, **options: Any) -> None:
        super().__init__(1, **options)

    @property
    def member(self) -> Member:
        return self.members[0]


_names = itertools.count()


def unique_prefix(stem: str = "/services/t") -> str:
    """A key prefix no other test in this process uses."""
    return f"{stem}{next(_names)}"


def make_certs(directory: Path) -> dict[str, str]:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate (needs ``openssl``).

    Returns the file names: ``ca``, ``server_cert``, ``server_key``, ``client_cert``, ``client_key``.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl is not installed")
    d = directory
    files = {
        "ca": d / "ca.pem",
        "ca_key": d / "ca-key.pem",
        "server_cert": d / "server.pem",
        "server_key": d / "server-key.pem",
        "client_cert": d / "client.pem",
        "client_key": d / "client-key.pem",
    }

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True)

    run(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", str(files["ca_key"]), "-out", str(files["ca"]), "-subj", "/CN=loadbalancer test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    for who, extensions in (
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        csr = d / f"{who}.csr"
        ext = d / f"{who}.ext"
        ext.write_text(extensions + "\n")
        run(
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(files[f"{who}_key"]),
            "-out", str(csr), "-subj", f"/CN={who}",
        )  # fmt: skip
        run(
            "x509", "-req", "-in", str(csr), "-CA", str(files["ca"]), "-CAkey", str(files["ca_key"]),
            "-CAcreateserial", "-days", "2", "-out", str(files[f"{who}_cert"]), "-extfile", str(ext),
        )  # fmt: skip
    return {name: str(path) for name, path in files.items()}


class TcpProxy:
    """A TCP relay on a free 127.0.0.1 port to ``127.0.0.1:target``, which can be cut and restored.

    ``cut()`` drops every relayed connection and refuses new ones, as a network partition
    would; ``restore()`` accepts again on the same port.
    """

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_tcp_port()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def restore(self) -> None:
        if self._listener is not None:
            return
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        self._thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._thread.start()

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        if self._thread is not None:
            self._thread.join(2)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=2)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def __enter__(self) -> TcpProxy:
        self.restore()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cut()
