"""A Eureka server's v2 REST API, for tests: run as its own process (``python -m tests.eureka_api_server``).

Written from Eureka's REST API documentation and its client's documented reconciliation,
and checked with py-eureka-client in ``tests/test_eureka_api_server.py``:

- ``GET {base}/apps`` (the whole registry), ``/apps/delta`` (the changes of the last
  ``--retention`` seconds, each instance with its ``actionType``: ADDED, MODIFIED,
  DELETED), ``/apps/APP``, ``/apps/APP/ID``, ``/instances/ID``; every applications answer
  carries ``versions__delta`` and ``apps__hashcode`` (``STATUS_count_`` per status, in name
  order, over the whole registry). JSON when the ``Accept`` header asks for it, else XML
  (as Eureka does for ``*/*``). ``{base}`` is ``/eureka`` (``/eureka/v2`` also answers).
- ``POST /apps/APP`` registers (JSON ``{"instance": {...}}``; 204), ``PUT /apps/APP/ID``
  renews (200; 404 when unknown, so the client registers again), ``PUT
  /apps/APP/ID/status?value=S`` overrides the status, ``DELETE /apps/APP/ID/status``
  removes the override, ``DELETE /apps/APP/ID`` cancels (200; 404 when unknown).
- Leases expire ``durationInSecs`` after the last renewal (checked every
  ``--eviction-interval`` seconds); eviction is a DELETED change.

For tests only (not Eureka's): ``POST /_test/forget-deltas`` empties the recent-changes
queue (so a client's delta misses a change and its hash check must catch it), and
``POST /_test/unrecorded/on`` (``/off``) keeps the changes made meanwhile out of it;
``GET /_test/stats`` counts the requests by kind. With ``--cert``/``--key`` it speaks HTTPS
(and with ``--client-ca`` asks for a client certificate).
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from xml.etree import ElementTree


class Registry:
    def __init__(self, retention: float) -> None:
        self.lock = threading.Lock()
        self.apps: dict[str, dict[str, dict[str, Any]]] = {}
        self.renewed: dict[tuple[str, str], float] = {}
        self.overrides: dict[str, str] = {}
        self.recent: collections.deque[tuple[float, str, dict[str, Any]]] = collections.deque()
        self.retention = retention
        self.version = 0
        self.unrecorded = False  # for tests: changes made now stay out of the recent-changes queue
        self.stats: collections.Counter[str] = collections.Counter()

    def now_ms(self) -> str:
        return str(int(time.time() * 1000))

    def changed(self, action: str, record: dict[str, Any]) -> None:
        copy_ = copy.deepcopy(record)
        copy_["actionType"] = action
        if not self.unrecorded:
            self.recent.append((time.monotonic(), copy_["app"], copy_))
        self.version += 1

    def prune(self) -> None:
        limit = time.monotonic() - self.retention
        while self.recent and self.recent[0][0] < limit:
            self.recent.popleft()

    def hash_code(self) -> str:
        counts: collections.Counter[str] = collections.Counter()
        for instances in self.apps.values():
            counts.update(str(i.get("status", "UNKNOWN")).upper() for i in instances.values())
        return "".join(f"{status}_{count}_" for status, count in sorted(counts.items()))

    def register(self, app: str, record: dict[str, Any]) -> None:
        record = copy.deepcopy(record)
        record["app"] = app
        key = record.get("instanceId") or record.get("hostName")
        record["instanceId"] = key
        lease = record.setdefault("leaseInfo", {})
        lease.setdefault("durationInSecs", 90)
        lease.setdefault("renewalIntervalInSecs", 30)
        now = int(time.time() * 1000)
        known = self.apps.get(app, {}).get(key)
        lease["registrationTimestamp"] = now
        lease["lastRenewalTimestamp"] = now
        lease.setdefault("evictionTimestamp", 0)
        lease["serviceUpTimestamp"] = known["leaseInfo"].get("serviceUpTimestamp", now) if known else now
        override = self.overrides.get(key)
        record["overriddenStatus"] = override or "UNKNOWN"
        record.pop("overriddenstatus", None)
        if override:
            record["status"] = override
        record["status"] = str(record.get("status") or "UP").upper()
        record["lastUpdatedTimestamp"] = str(now)
        record.setdefault("lastDirtyTimestamp", str(now))
        record["actionType"] = "ADDED"
        self.apps.setdefault(app, {})[key] = record
        self.renewed[(app, key)] = time.monotonic()
        self.changed("ADDED", record)

    def remove(self, app: str, key: str) -> bool:
        record = self.apps.get(app, {}).pop(key, None)
        if record is None:
            return False
        if not self.apps[app]:
            del self.apps[app]
        self.renewed.pop((app, key), None)
        self.changed("DELETED", record)
        return True

    def evict(self) -> None:
        now = time.monotonic()
        for (app, key), renewed in list(self.renewed.items()):
            record = self.apps.get(app, {}).get(key)
            if record is not None and now - renewed > float(record["leaseInfo"]["durationInSecs"]):
                self.remove(app, key)


def applications_document(registry: Registry, pairs: list[tuple[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    return {
        "applications": {
            "versions__delta": str(registry.version),
            "apps__hashcode": registry.hash_code(),
            "application": [{"name": app, "instance": instances} for app, instances in pairs],
        }
    }


def to_xml(tag: str, value: Any) -> ElementTree.Element:
    """Eureka's JSON mapped back to its XML: ``"$"`` is the text, ``"@x"`` an attribute, lists repeat the tag."""
    element = ElementTree.Element(tag)
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "$":
                element.text = str(item)
            elif key.startswith("@"):
                element.set(key[1:], str(item))
            elif isinstance(item, list):
                for one in item:
                    element.append(to_xml(key, one))
            else:
                element.append(to_xml(key, item))
    elif isinstance(value, bool):
        element.text = str(value).lower()
    elif value is not None:
        element.text = str(value)
    return element


class Handler(BaseHTTPRequestHandler):
    registry: Registry
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, document: Any = None) -> None:
        body = b""
        if document is not None:
            if "json" in self.headers.get("Accept", ""):
                body = json.dumps(document).encode()
                kind = "application/json"
            else:
                ((tag, value),) = document.items()
                body = ElementTree.tostring(to_xml(tag, value), encoding="utf-8", xml_declaration=False)
                kind = "application/xml"
        self.send_response(status)
        if body:
            self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _route(self) -> tuple[list[str], dict[str, list[str]]] | None:
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.split("/") if p]
        if parts[:2] == ["eureka", "v2"]:
            parts = parts[2:]
        elif parts[:1] == ["eureka"]:
            parts = parts[1:]
        elif parts[:1] != ["_test"]:
            self._send(404)
            return None
        return parts, parse_qs(url.query)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"null")

    def do_GET(self) -> None:
        routed = self._route()
        if routed is None:
            return
        parts, _ = routed
        r = self.registry
        with r.lock:
            r.prune()
            if parts == ["_test", "stats"]:
                self._send(200, {"stats": dict(r.stats)})
                return
            if parts == ["apps"]:
                r.stats["full"] += 1
                pairs = [(app, list(instances.values())) for app, instances in sorted(r.apps.items())]
                self._send(200, applications_document(r, pairs))
            elif parts == ["apps", "delta"]:
                r.stats["delta"] += 1
                grouped: dict[str, list[dict[str, Any]]] = {}
                for _, app, record in r.recent:
                    grouped.setdefault(app, []).append(record)
                self._send(200, applications_document(r, sorted(grouped.items())))
            elif len(parts) == 2 and parts[0] == "apps":
                instances = r.apps.get(parts[1].upper())
                if instances is None:
                    self._send(404)
                else:
                    self._send(200, {"application": {"name": parts[1].upper(), "instance": list(instances.values())}})
            elif len(parts) == 3 and parts[0] == "apps":
                record = r.apps.get(parts[1].upper(), {}).get(parts[2])
                self._send(404) if record is None else self._send(200, {"instance": record})
            elif len(parts) == 2 and parts[0] == "instances":
                found = [i[parts[1]] for i in r.apps.values() if parts[1] in i]
                self._send(200, {"instance": found[0]}) if found else self._send(404)
            else:
                self._send(404)

    def do_POST(self) -> None:
        routed = self._route()
        if routed is None:
            return
        parts, _ = routed
        r = self.registry
        with r.lock:
            if parts == ["_test", "forget-deltas"]:
                r.recent.clear()
                self._send(204)
                return
            if parts[:2] == ["_test", "unrecorded"] and len(parts) == 3:
                r.unrecorded = parts[2] == "on"
                self._send(204)
                return
            if len(parts) != 2 or parts[0] != "apps":
                self._send(404)
                return
            try:
                document = self._body()
                record = document["instance"]
                if not isinstance(record, dict) or not (record.get("instanceId") or record.get("hostName")):
                    raise ValueError("no instanceId or hostName")
            except (ValueError, KeyError, TypeError) as error:
                body = str(error).encode()
                self.send_response(400)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            r.stats["register"] += 1
            r.register(parts[1].upper(), record)
            self._send(204)

    def do_PUT(self) -> None:
        routed = self._route()
        if routed is None:
            return
        parts, query = routed
        r = self.registry
        with r.lock:
            if len(parts) < 3 or parts[0] != "apps":
                self._send(404)
                return
            app, key = parts[1].upper(), parts[2]
            record = r.apps.get(app, {}).get(key)
            if record is None:
                r.stats["renew_unknown" if len(parts) == 3 else "status_unknown"] += 1
                self._send(404)
                return
            if len(parts) == 3:
                r.stats["renew"] += 1
                r.renewed[(app, key)] = time.monotonic()
                record["leaseInfo"]["lastRenewalTimestamp"] = int(time.time() * 1000)
                self._send(200)
            elif parts[3:] == ["status"] and query.get("value"):
                r.stats["status"] += 1
                value = query["value"][0].upper()
                r.overrides[key] = value
                record["overriddenStatus"] = value
                record["status"] = value
                record["lastUpdatedTimestamp"] = r.now_ms()
                r.changed("MODIFIED", record)
                self._send(200)
            else:
                self._send(404)

    def do_DELETE(self) -> None:
        routed = self._route()
        if routed is None:
            return
        parts, query = routed
        r = self.registry
        with r.lock:
            if len(parts) < 3 or parts[0] != "apps":
                self._send(404)
                return
            app, key = parts[1].upper(), parts[2]
            if len(parts) == 3:
                r.stats["cancel"] += 1
                r.overrides.pop(key, None)
                self._send(200 if r.remove(app, key) else 404)
            elif parts[3:] == ["status"]:
                record = r.apps.get(app, {}).get(key)
                if record is None:
                    self._send(404)
                    return
                r.overrides.pop(key, None)
                record["overriddenStatus"] = "UNKNOWN"
                record["status"] = query.get("value", ["UNKNOWN"])[0].upper()
                r.changed("MODIFIED", record)
                self._send(200)
            else:
                self._send(404)


def main() -> None:
    parser = argparse.ArgumentParser(description="a Eureka v2 REST API server for tests")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--retention", type=float, default=180.0, help="seconds a change stays in the delta")
    parser.add_argument("--eviction-interval", type=float, default=1.0)
    parser.add_argument("--cert", help="serve HTTPS with this certificate (PEM) and --key")
    parser.add_argument("--key", help="the key of --cert (PEM)")
    parser.add_argument("--client-ca", help="with --cert: require a client certificate signed by this CA (PEM)")
    args = parser.parse_args()
    registry = Registry(args.retention)
    handler = type("BoundHandler", (Handler,), {"registry": registry})
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    server.daemon_threads = True
    scheme = "http"
    if args.cert:
        server.socket = _tls_context(args.cert, args.key, args.client_ca).wrap_socket(server.socket, server_side=True)
        scheme = "https"

    def evict() -> None:
        while True:
            time.sleep(args.eviction_interval)
            with registry.lock:
                registry.evict()
                registry.prune()

    threading.Thread(target=evict, daemon=True).start()
    print(f"eureka API server on {scheme}://127.0.0.1:{args.port}/eureka/", flush=True)
    server.serve_forever()


def _tls_context(cert: str, key: str | None, client_ca: str | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    if client_ca:
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


if __name__ == "__main__":
    main()
