"""A Kubernetes API test server for EndpointSlices (``discovery.k8s.io/v1``), run as its own process.

No real API server can run here, so the ``kubernetes`` backend is tested against this one,
written from the API's documented behaviour; its own tests drive it with the official
``kubernetes`` client to show it answers as the real one does. What it serves:

- ``/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices``: list (``labelSelector``,
  ``limit`` and ``continue`` paging, the list's ``metadata.resourceVersion``), create
  (``POST``), and with ``/{name}`` get, replace (``PUT``) and delete; every write moves the one
  resourceVersion counter of the store and is kept in a history;
- ``?watch=1&resourceVersion=N&allowWatchBookmarks=true&timeoutSeconds=S``: a chunked
  stream of JSON lines ``{"type": "ADDED"|"MODIFIED"|"DELETED"|"BOOKMARK"|"ERROR", "object":
  ...}``, replaying the history after ``N`` (or the current objects as ``ADDED`` without
  ``N``), then live; a version older than the kept history gets an ``ERROR`` event with a
  ``Status`` of code 410 (``Expired``) and the stream ends; bookmarks carry only
  ``metadata.resourceVersion``; the stream ends cleanly after ``timeoutSeconds``;
- ``/readyz``, ``/livez``, ``/version``; bearer-token authentication (``401`` with a Status).

Test controls under ``/_test/`` (no authentication): ``compact`` (forget the history: older
versions get 410), ``expire`` (send every open watch an ERROR 410 and end it), ``bookmark``
(send bookmarks now), ``drop`` (end every open watch without a word), ``tokens`` (``PUT``
the accepted tokens), ``stats`` (requests seen).

    python -m tests.k8s_api_server --port 8443 --token secret [--cert C --key K] [--bookmark-interval 1]

``K8sApiServer`` starts it on a free loopback port and drives it (``apply``, ``delete``, ...).
"""

from __future__ import annotations

import argparse
import bisect
import copy
import itertools
import json
import os
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

GROUP = "/apis/discovery.k8s.io/v1"
SERVICE_LABEL = "kubernetes.io/service-name"
ADMIN_TOKEN = "k8s-test-admin"  # what the tests' own driver sends, accepted whatever the tokens are


def status(code: int, reason: str, message: str, **details: Any) -> dict[str, Any]:
    """A ``v1.Status`` object, as the API server sends with errors."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success" if code < 400 else "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body


def _rv(entry: tuple[int, str, str, dict[str, Any]]) -> int:
    return entry[0]


def _matches(selector: list[tuple[str, str, str | None]], labels: dict[str, str]) -> bool:
    for key, op, value in selector:
        if op == "exists" and key not in labels:
            return False
        if op == "!exists" and key in labels:
            return False
        if op == "=" and labels.get(key) != value:
            return False
        if op == "!=" and labels.get(key) == value:
            return False
    return True


def parse_selector(text: str) -> list[tuple[str, str, str | None]]:
    """Equality-based label selectors: ``a=b``, ``a==b``, ``a!=b``, ``a``, ``!a``, comma-joined."""
    found: list[tuple[str, str, str | None]] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "!=" in part:
            key, value = part.split("!=", 1)
            found.append((key.strip(), "!=", value.strip()))
        elif "=" in part:
            key, value = part.replace("==", "=").split("=", 1)
            found.append((key.strip(), "=", value.strip()))
        elif part.startswith("!"):
            found.append((part[1:].strip(), "!exists", None))
        else:
            found.append((part, "exists", None))
    return found


class Store:
    """EndpointSlices by (namespace, name), one resourceVersion counter, the history of writes, open watches."""

    def __init__(self, tokens: set[str] | None, bookmark_interval: float, start_version: int = 1000) -> None:
        self.lock = threading.Condition()
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.version = start_version
        self.history: list[tuple[int, str, str, dict[str, Any]]] = []  # (rv, namespace, type, object)
        self.floor = start_version  # watches from a version below this get 410: no history before the start
        self.tokens = tokens
        self.bookmark_interval = bookmark_interval
        self.generation = itertools.count(1)
        self.signal: dict[str, int] = {"expire": 0, "bookmark": 0, "drop": 0}
        self.stats: dict[str, int] = {"list": 0, "watch": 0, "write": 0, "unauthorized": 0, "expired": 0}
        self.open_watches = 0
        self.tokens_seen: list[str] = []
        self.continues: dict[str, int] = {}

    def write(self, namespace: str, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        self.history.append((self.version, namespace, kind, copy.deepcopy(obj)))
        self.stats["write"] += 1
        self.lock.notify_all()
        return obj


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        if os.environ.get("K8S_TEST_SERVER_VERBOSE"):
            super().log_message(format, *args)

    # -- plumbing --------------------------------------------------------------------------

    @property
    def store(self) -> Store:
        return self.server.store

    def send_json(self, code: int, body: Any) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw else None

    def authorized(self) -> bool:
        store = self.store
        if store.tokens is None:
            return True
        header = self.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else ""
        with store.lock:
            if token != ADMIN_TOKEN:
                store.tokens_seen.append(token)
            if token in store.tokens or token == ADMIN_TOKEN:
                return True
            store.stats["unauthorized"] += 1
        self.send_json(401, status(401, "Unauthorized", "Unauthorized"))
        return False

    def route(self) -> tuple[str, dict[str, str], list[str]]:
        parsed = urllib.parse.urlsplit(self.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(parsed.query, keep_blank_values=True).items()}
        return parsed.path, query, [p for p in parsed.path.split("/") if p]

    # -- methods ---------------------------------------------------------------------------

    def do_GET(self) -> None:
        path, query, parts = self.route()
        if path.startswith("/_test/"):
            self.control("GET", parts[1])
            return
        if not self.authorized():
            return
        if path in ("/readyz", "/livez", "/healthz"):
            data = b"ok"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(data)
            return
        if path == "/version":
            self.send_json(200, {"major": "1", "minor": "30", "gitVersion": "v1.30.0-test"})
            return
        target = self.slices_path(parts)
        if target is None:
            self.send_json(404, status(404, "NotFound", "the server could not find the requested resource"))
            return
        namespace, name = target
        if name is not None:
            with self.store.lock:
                obj = self.store.objects.get((namespace, name))
            if obj is None:
                self.not_found(name)
            else:
                self.send_json(200, obj)
            return
        if query.get("watch") in ("1", "true"):
            self.watch(namespace, query)
        else:
            self.list(namespace, query)

    def do_POST(self) -> None:
        path, _, parts = self.route()
        if path.startswith("/_test/"):
            self.control("POST", parts[1])
            return
        if not self.authorized():
            return
        target = self.slices_path(parts)
        if target is None or target[1] is not None:
            self.send_json(405, status(405, "MethodNotAllowed", "the server does not allow this method"))
            return
        namespace = target[0]
        obj = self.body()
        name = (obj or {}).get("metadata", {}).get("name")
        if not name:
            self.send_json(422, status(422, "Invalid", "EndpointSlice is invalid: metadata.name: Required value"))
            return
        store = self.store
        with store.lock:
            if (namespace, name) in store.objects:
                self.send_json(
                    409,
                    status(409, "AlreadyExists", f'endpointslices.discovery.k8s.io "{name}" already exists',
                           name=name, group="discovery.k8s.io", kind="endpointslices"),
                )  # fmt: skip
                return
            self.stamp(obj, namespace, None)
            store.objects[(namespace, name)] = obj
            store.write(namespace, "ADDED", obj)
            reply = copy.deepcopy(obj)
        self.send_json(201, reply)

    def do_PUT(self) -> None:
        path, _, parts = self.route()
        if path.startswith("/_test/"):
            self.control("PUT", parts[1])
            return
        if not self.authorized():
            return
        target = self.slices_path(parts)
        if target is None or target[1] is None:
            self.send_json(405, status(405, "MethodNotAllowed", "the server does not allow this method"))
            return
        namespace, name = target
        obj = self.body() or {}
        store = self.store
        with store.lock:
            old = store.objects.get((namespace, name))
            if old is None:
                self.not_found(name)
                return
            wanted = obj.get("metadata", {}).get("resourceVersion")
            if wanted and wanted != old["metadata"]["resourceVersion"]:
                self.send_json(
                    409,
                    status(409, "Conflict", f'Operation cannot be fulfilled on endpointslices.discovery.k8s.io "{name}":'  # noqa: E501
                           " the object has been modified; please apply your changes to the latest version"
                           " and try again"),
                )  # fmt: skip
                return
            self.stamp(obj, namespace, old)
            store.objects[(namespace, name)] = obj
            store.write(namespace, "MODIFIED", obj)
            reply = copy.deepcopy(obj)
        self.send_json(200, reply)

    def do_DELETE(self) -> None:
        _, _, parts = self.route()
        if not self.authorized():
            return
        target = self.slices_path(parts)
        if target is None or target[1] is None:
            self.send_json(405, status(405, "MethodNotAllowed", "the server does not allow this method"))
            return
        namespace, name = target
        self.body()
        store = self.store
        with store.lock:
            old = store.objects.pop((namespace, name), None)
            if old is None:
                self.not_found(name)
                return
            store.write(namespace, "DELETED", old)
            uid = old["metadata"]["uid"]
        self.send_json(200, status(200, "", "", name=name, group="discovery.k8s.io", kind="endpointslices", uid=uid))

    # -- endpointslices --------------------------------------------------------------------

    @staticmethod
    def slices_path(parts: list[str]) -> tuple[str, str | None] | None:
        # /apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices[/{name}]
        if parts[:3] != ["apis", "discovery.k8s.io", "v1"] or len(parts) < 6:
            return None
        if parts[3] != "namespaces" or parts[5] != "endpointslices" or len(parts) > 7:
            return None
        return parts[4], (parts[6] if len(parts) == 7 else None)

    def not_found(self, name: str) -> None:
        self.send_json(
            404,
            status(404, "NotFound", f'endpointslices.discovery.k8s.io "{name}" not found',
                   name=name, group="discovery.k8s.io", kind="endpointslices"),
        )  # fmt: skip

    def stamp(self, obj: dict[str, Any], namespace: str, old: dict[str, Any] | None) -> None:
        obj["kind"] = "EndpointSlice"
        obj["apiVersion"] = "discovery.k8s.io/v1"
        meta = obj.setdefault("metadata", {})
        meta["namespace"] = namespace
        if old is None:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            meta["generation"] = 1
        else:
            meta["uid"] = old["metadata"]["uid"]
            meta["creationTimestamp"] = old["metadata"]["creationTimestamp"]
            meta["generation"] = old["metadata"].get("generation", 1) + 1
        obj.setdefault("addressType", "IPv4")
        obj.setdefault("endpoints", [])

    def list(self, namespace: str, query: dict[str, str]) -> None:
        store = self.store
        selector = parse_selector(query.get("labelSelector", ""))
        limit = int(query.get("limit") or 0)
        token = query.get("continue")
        with store.lock:
            store.stats["list"] += 1
            if token:
                at = store.continues.get(token)
                if at is None or at < store.floor:
                    store.stats["expired"] += 1
                    self.send_json(
                        410,
                        status(410, "Expired", "The provided continue parameter is too old to display a consistent"
                               " list result. You can start a new list without the continue parameter."),
                    )  # fmt: skip
                    return
                version, start = at, int(token.split(":")[1])
                items = self.at_version(namespace, version)
            else:
                version, start = store.version, 0
                items = [o for (ns, _), o in sorted(store.objects.items()) if ns == namespace]
            items = [o for o in items if _matches(selector, o["metadata"].get("labels") or {})]
            page = items[start : start + limit] if limit else items[start:]
            meta: dict[str, Any] = {"resourceVersion": str(version)}
            if limit and start + limit < len(items):
                following = f"{uuid.uuid4().hex}:{start + limit}"
                store.continues[following] = version
                meta["continue"] = following
                meta["remainingItemCount"] = len(items) - start - limit
            body = {
                "kind": "EndpointSliceList",
                "apiVersion": "discovery.k8s.io/v1",
                "metadata": meta,
                "items": [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")} for o in page],
            }
            data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def at_version(self, namespace: str, version: int) -> list[dict[str, Any]]:
        """The objects of ``namespace`` as they were at ``version`` (for list continuations)."""
        store = self.store
        current = {name: o for (ns, name), o in store.objects.items() if ns == namespace}
        for rv, ns, kind, obj in reversed(store.history):
            if rv <= version:
                break
            if ns != namespace:
                continue
            name = obj["metadata"]["name"]
            if kind == "ADDED":
                current.pop(name, None)
            else:  # MODIFIED or DELETED: the version before this write
                before = next((o for r, n, _, o in reversed(store.history) if r < rv and n == ns
                               and o["metadata"]["name"] == name), None)  # fmt: skip
                if before is None:
                    current.pop(name, None)
                else:
                    current[name] = before
        return [current[name] for name in sorted(current)]

    def chunk(self, event: dict[str, Any]) -> None:
        data = json.dumps(event, separators=(",", ":")).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def watch(self, namespace: str, query: dict[str, str]) -> None:
        store = self.store
        selector = parse_selector(query.get("labelSelector", ""))
        bookmarks = query.get("allowWatchBookmarks") in ("1", "true")
        timeout = float(query.get("timeoutSeconds") or 1800)
        asked = query.get("resourceVersion") or ""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        deadline = time.monotonic() + timeout
        with store.lock:
            store.stats["watch"] += 1
            store.open_watches += 1
            signals = dict(store.signal)
            pending: list[dict[str, Any]] = []
            if asked in ("", "0"):
                position = store.version
                for (ns, _), obj in sorted(store.objects.items()):
                    if ns == namespace and _matches(selector, obj["metadata"].get("labels") or {}):
                        pending.append({"type": "ADDED", "object": copy.deepcopy(obj)})
            else:
                position = int(asked)
                if position < store.floor:
                    store.stats["expired"] += 1
                    store.open_watches -= 1
                    error = status(410, "Expired", f"too old resource version: {position} ({store.floor})")
                    self.finish_stream([{"type": "ERROR", "object": error}])
                    return
        last_bookmark = time.monotonic()
        try:
            while True:
                if pending:
                    for event in pending:
                        self.chunk(event)
                    pending = []
                with store.lock:
                    now = time.monotonic()
                    if now >= deadline:
                        break
                    if store.signal["drop"] != signals["drop"]:
                        self.close_connection = True
                        return
                    if store.signal["expire"] != signals["expire"]:
                        store.stats["expired"] += 1
                        error = status(410, "Expired", f"too old resource version: {position} ({store.floor})")
                        pending = [{"type": "ERROR", "object": error}]
                        break
                    new = (
                        store.history[bisect.bisect_right(store.history, position, key=_rv) :]
                        if store.version > position
                        else []
                    )
                    for rv, ns, kind, obj in new:
                        position = rv
                        if ns != namespace:
                            continue
                        if _matches(selector, obj["metadata"].get("labels") or {}):
                            pending.append({"type": kind, "object": copy.deepcopy(obj)})
                        elif kind == "MODIFIED":  # moved out of the selection: gone for this watch
                            pending.append({"type": "DELETED", "object": copy.deepcopy(obj)})
                    if new:
                        continue
                    bookmark_due = store.signal["bookmark"] != signals["bookmark"] or (
                        store.bookmark_interval > 0 and now - last_bookmark >= store.bookmark_interval
                    )
                    if bookmark_due:
                        signals["bookmark"] = store.signal["bookmark"]
                        last_bookmark = now
                        if bookmarks:
                            pending = [{"type": "BOOKMARK", "object": {
                                "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
                                "metadata": {"resourceVersion": str(store.version)}}}]  # fmt: skip
                            position = store.version
                            continue
                    wait = deadline - now
                    if store.bookmark_interval > 0:
                        wait = min(wait, store.bookmark_interval - (now - last_bookmark))
                    store.lock.wait(max(0.001, min(wait, 1.0)))
            self.finish_stream(pending)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            with store.lock:
                store.open_watches -= 1

    def finish_stream(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            self.chunk(event)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    # -- test controls ---------------------------------------------------------------------

    def control(self, method: str, what: str) -> None:
        store = self.store
        body = self.body() if method in ("POST", "PUT") else None
        with store.lock:
            if what == "compact":
                store.floor = store.version
                store.history.clear()
                store.continues.clear()
            elif what in ("expire", "bookmark", "drop"):
                store.signal[what] += 1
                store.lock.notify_all()
            elif what == "tokens":
                store.tokens = None if body is None or body.get("tokens") is None else set(body["tokens"])
            elif what != "stats":
                self.send_json(404, status(404, "NotFound", f"no test control {what!r}"))
                return
            reply = {**store.stats, "open_watches": store.open_watches, "version": store.version,
                     "tokens_seen": store.tokens_seen[-20:]}  # fmt: skip
        self.send_json(200, reply)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], store: Store) -> None:
        self.store = store
        super().__init__(address, Handler)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A Kubernetes API test server for EndpointSlices")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", action="append", help="an accepted bearer token (none given: no authentication)")
    parser.add_argument("--cert", help="serve HTTPS with this certificate (PEM) ...")
    parser.add_argument("--key", help="... and this key")
    parser.add_argument("--bookmark-interval", type=float, default=0.0, help="seconds between bookmarks (0: none)")
    parser.add_argument("--start-version", type=int, default=1000, help="the first resourceVersion")
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        raise SystemExit("this test server listens on loopback only")
    store = Store(set(args.token) if args.token else None, args.bookmark_interval, args.start_version)
    server = Server((args.host, args.port), store)
    if args.cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.cert, args.key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"serving on {args.host}:{args.port}", flush=True)
    server.serve_forever()


# -- the tests' side --------------------------------------------------------------------------


def endpoint(address: str, *, ready: bool | None = True, serving: bool | None = None,
             terminating: bool | None = None, zone: str | None = None, node: str | None = None,
             pod: str | None = None, hostname: str | None = None) -> dict[str, Any]:  # fmt: skip
    """One endpoint of a slice, as the EndpointSlice controller writes it."""
    flags = (("ready", ready), ("serving", serving), ("terminating", terminating))
    conditions = {name: value for name, value in flags if value is not None}
    found: dict[str, Any] = {"addresses": [address], "conditions": conditions}
    if zone is not None:
        found["zone"] = zone
    if node is not None:
        found["nodeName"] = node
    if hostname is not None:
        found["hostname"] = hostname
    if pod is not None:
        found["targetRef"] = {"kind": "Pod", "name": pod, "namespace": "default"}
    return found


def endpoint_slice(name: str, service: str, endpoints: list[dict[str, Any]], *,
                   ports: list[dict[str, Any]] | None = None, address_type: str = "IPv4",
                   labels: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """An EndpointSlice of ``service`` (``ports`` default: one port ``http`` 8080/TCP)."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "labels": {SERVICE_LABEL: service, **(labels or {})}},
        "addressType": address_type,
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}] if ports is None else ports,
    }


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made with ``openssl`` (the certificate is its own CA)."""
    cert, key = directory / "server.crt", directory / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=kubernetes",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


class K8sApiServer:
    """The test server in a child process on a free loopback port, and a small client to drive it.

    ``token``: the bearer token it accepts (``None``: no authentication); ``tls``: serve
    HTTPS with a self-signed certificate (``ca`` is its file).
    """

    def __init__(self, *, token: str | None = "test-token", tls: bool = False, bookmark_interval: float = 0.0) -> None:
        from tests.daemon import Daemon, free_tcp_port

        self.dir = Path(tempfile.mkdtemp(prefix="k8s-api-"))
        self.port = free_tcp_port()
        self.token = token
        self.tls = tls
        self.bookmark_interval = bookmark_interval
        self.ca: Path | None = None
        self._key: Path | None = None
        if tls:
            self.ca, self._key = self_signed(self.dir)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.daemon = Daemon(self.dir / "server.log")
        self._http: Any = None
        self._next_start = 1000

    def start(self) -> K8sApiServer:
        import httpx

        command = [sys.executable, "-m", "tests.k8s_api_server", "--port", str(self.port),
                   "--bookmark-interval", str(self.bookmark_interval),
                   "--start-version", str(self._next_start)]  # fmt: skip
        if self.token is not None:
            command += ["--token", self.token]
        if self.ca is not None and self._key is not None:
            command += ["--cert", str(self.ca), "--key", str(self._key)]
        root = Path(__file__).resolve().parent.parent
        env_path = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = str(root) + (os.pathsep + env_path if env_path else "")
        try:
            self.daemon.spawn(command)
        finally:
            if env_path is None:
                del os.environ["PYTHONPATH"]
            else:
                os.environ["PYTHONPATH"] = env_path
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        self._http = self._http or httpx.Client(
            base_url=self.url,
            headers=headers,
            verify=ssl.create_default_context(cafile=str(self.ca)) if self.ca else True,
            timeout=10.0,
            trust_env=False,
        )
        end = time.monotonic() + 15
        while True:
            self.daemon.exited("the Kubernetes API test server")
            try:
                if self._http.get("/readyz").status_code == 200:
                    return self
            except Exception as error:
                if time.monotonic() > end:
                    raise RuntimeError(
                        f"the Kubernetes API test server did not start:\n{self.daemon.log_tail()}"
                    ) from error
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the server; started again, it is empty, its versions past the old ones, its history new (410)."""
        if self.daemon.running:
            self._next_start = self.version() + 1000
        self.daemon.stop()

    def close(self) -> None:
        import shutil

        self.stop()
        if self._http is not None:
            self._http.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> K8sApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- driving it --------------------------------------------------------------------------

    def _slices(self, namespace: str) -> str:
        return f"{GROUP}/namespaces/{namespace}/endpointslices"

    def apply(self, obj: dict[str, Any], namespace: str = "default") -> dict[str, Any]:
        """Create the slice, or replace it if it exists; the stored object."""
        name = obj["metadata"]["name"]
        body = copy.deepcopy(obj)
        body["metadata"].pop("resourceVersion", None)
        reply = self._http.put(f"{self._slices(namespace)}/{name}", json=body)
        if reply.status_code == 404:
            reply = self._http.post(self._slices(namespace), json=body)
        reply.raise_for_status()
        result: dict[str, Any] = reply.json()
        return result

    def delete(self, name: str, namespace: str = "default") -> None:
        self._http.delete(f"{self._slices(namespace)}/{name}").raise_for_status()

    def control(self, what: str, body: Any = None) -> dict[str, Any]:
        method = "PUT" if what == "tokens" else ("GET" if what == "stats" else "POST")
        reply = self._http.request(method, f"/_test/{what}", json=body)
        reply.raise_for_status()
        result: dict[str, Any] = reply.json()
        return result

    def stats(self) -> dict[str, Any]:
        return self.control("stats")

    def set_tokens(self, *tokens: str) -> None:
        self.control("tokens", {"tokens": list(tokens)})

    def version(self) -> int:
        return int(self.stats()["version"])


if __name__ == "__main__":
    main()
