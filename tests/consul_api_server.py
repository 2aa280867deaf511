"""A Consul HTTP API test server: one agent and one node, written from Consul's API documentation.

Run as a separate process by the tests (``python -m tests.consul_api_server --port N``). It
implements what service discovery uses, as Consul documents it:

- ``PUT /v1/agent/service/register`` (JSON field names decoded case-insensitively, as Go's
  decoder does; ``Check`` or ``Checks``; ``?replace-existing-checks``), ``PUT
  /v1/agent/service/deregister/<id>``, ``GET /v1/agent/services``, ``GET /v1/agent/checks``,
  ``GET /v1/agent/self``;
- checks: TTL checks start critical unless given a ``Status`` and turn critical when their
  TTL runs out; ``PUT /v1/agent/check/pass|warn|fail/<id>`` (``?note=``) and ``PUT
  /v1/agent/check/update/<id>``; HTTP checks are run every ``Interval`` (2xx passing, 429
  warning, else critical); ``DeregisterCriticalServiceAfter`` removes a service whose check
  stayed critical that long (at least ``--deregister-minimum`` seconds, 60 as in Consul,
  looked at every ``--reap-interval`` seconds, 30 as in Consul);
- ``GET /v1/health/service/<name>`` (``passing``, ``tag`` (repeatable: all must match),
  ``dc``) and ``GET /v1/catalog/service/<name>``, ``GET /v1/catalog/services``: blocking
  queries (``index`` and ``wait``, default 5m, at most 10m, plus up to wait/16 of jitter)
  answered with ``X-Consul-Index``; an index of 0 or none answers at once;
- ACLs (``--acl-token T``): a request carrying another token gets 403 "ACL not found"; one
  without a token is anonymous: writes get 403 "Permission denied", reads are filtered to
  nothing (``X-Consul-Results-Filtered-By-ACLs``). The token travels as ``X-Consul-Token``,
  ``Authorization: Bearer`` or ``?token=``;
- ``GET /v1/status/leader``; a datacenter of its own (``--datacenter``, default dc1): a
  request for another gets 500 "No path to datacenter".

Test hooks (not Consul's): ``PUT /_test/index/<n>`` sets the Raft index (as a snapshot
restore does), ``PUT /_test/node-address/<addr>`` changes the node's address, ``GET
/_test/blocked`` counts the blocking queries waiting now (``{"Blocked": n}``).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)\s*$")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration(text: Any) -> float:
    """A Go duration ("10s", "1m", "500ms") in seconds; a number is taken as nanoseconds, as Go's JSON does."""
    if isinstance(text, int | float):
        return float(text) / 1e9
    total = 0.0
    rest = str(text).strip()
    if not rest:
        raise ValueError("empty duration")
    for part in re.findall(r"\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h)", rest):
        match = _DURATION.match(part)
        assert match is not None
        total += float(match.group(1)) * _UNITS[match.group(2)]
    if re.sub(r"\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h)", "", rest):
        raise ValueError(f"time: invalid duration {text!r}")
    return total


def fold(value: Any) -> Any:
    """JSON object keys lower-cased at every level (Go decodes field names case-insensitively); Meta kept."""
    if isinstance(value, dict):
        return {k.lower(): (v if k.lower() in ("meta", "header") else fold(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [fold(v) for v in value]
    return value


class JSONText(str):
    """A body already in JSON (a JSON string, as ``/v1/status/leader`` answers)."""


class HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class State:
    """The agent's services and checks and the catalog's Raft index; every change notifies waiters."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.node = args.node
        self.node_address = args.node_address
        self.datacenter = args.datacenter
        self.token = args.acl_token
        self.reap_interval = args.reap_interval
        self.deregister_minimum = args.deregister_minimum
        self.index = args.index_start
        self.services: dict[str, dict[str, Any]] = {}
        self.checks: dict[str, dict[str, Any]] = {}
        self.service_index: dict[str, int] = {}  # service name -> the index of its last change
        self.catalog_index = self.index
        self.changed = threading.Condition()
        self.lock = self.changed  # one lock for all
        self.blocked = 0  # blocking queries waiting now (a test hook)

    # -- changes (lock held) ---------------------------------------------------------------

    def bump(self, *names: str) -> None:
        self.index += 1
        self.catalog_index = self.index
        for name in names:
            self.service_index[name] = self.index
        self.changed.notify_all()

    def register(self, body: dict[str, Any], replace_checks: bool) -> None:
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise HTTPError(400, "Missing service name")
        service_id = body.get("id") or name
        port = body.get("port") or 0
        if not isinstance(port, int):
            raise HTTPError(400, f"Request decode failed: invalid port {port!r}")
        weights = body.get("weights") or {}
        if weights and int(weights.get("passing", 0)) < 1:
            raise HTTPError(400, "Invalid Weights: Passing must be greater than 0")
        old = self.services.get(service_id)
        created = self.index + 1 if old is None else old["CreateIndex"]
        if old is not None and old["Service"] != name:
            self.service_index[old["Service"]] = self.index + 1
        definitions = list(body.get("checks") or [])
        if body.get("check"):
            definitions.insert(0, body["check"])
        checks: list[dict[str, Any]] = []
        for n, check in enumerate(definitions, 1):
            checks.append(self._check(service_id, name, check, n if len(definitions) > 1 else 0))
        if old is not None and replace_checks:
            for check_id in [c for c, check in self.checks.items() if check["ServiceID"] == service_id]:
                del self.checks[check_id]
        self.services[service_id] = {
            "ID": service_id,
            "Service": name,
            "Tags": list(body.get("tags") or []),
            "Address": body.get("address") or "",
            "Meta": dict(body.get("meta") or {}),
            "Port": port,
            "Weights": {"Passing": int(weights.get("passing", 1)), "Warning": int(weights.get("warning", 1))},
            "EnableTagOverride": bool(body.get("enabletagoverride", False)),
            "CreateIndex": created,
            "ModifyIndex": self.index + 1,
            "Datacenter": self.datacenter,
        }
        for check in checks:
            old_check = self.checks.get(check["CheckID"])
            if old_check is not None and "status" not in check["_definition"]:
                check["Status"], check["Output"] = old_check["Status"], old_check["Output"]
                check["_critical_since"] = old_check["_critical_since"]
            self.checks[check["CheckID"]] = check
        self.bump(name)

    def _check(self, service_id: str, name: str, check: dict[str, Any], n: int) -> dict[str, Any]:
        check_id = (
            check.get("checkid") or check.get("id") or (f"service:{service_id}:{n}" if n else f"service:{service_id}")
        )
        status = check.get("status") or "critical"
        if status not in ("passing", "warning", "critical"):
            raise HTTPError(400, f"Invalid check status: {status!r}")
        ttl = duration(check["ttl"]) if check.get("ttl") else None
        http = check.get("http")
        if ttl is None and not http:
            raise HTTPError(400, "Invalid check: TTL or HTTP must be set (this test server runs only those)")
        reap = check.get("deregistercriticalserviceafter")
        now = time.monotonic()
        return {
            "Node": self.node,
            "CheckID": check_id,
            "Name": check.get("name") or f"Service '{name}' check",
            "Status": status,
            "Notes": check.get("notes") or "",
            "Output": "",
            "ServiceID": service_id,
            "ServiceName": name,
            "Type": "ttl" if ttl is not None else "http",
            "_definition": check,
            "_ttl": ttl,
            "_expires": None if ttl is None else now + ttl,
            "_http": http,
            "_interval": duration(check.get("interval") or "10s"),
            "_next_run": now,
            "_reap_after": None if reap is None else max(duration(reap), self.deregister_minimum),
            "_critical_since": now if status == "critical" else None,
        }

    def deregister(self, service_id: str) -> None:
        service = self.services.pop(service_id, None)
        if service is None:
            raise HTTPError(404, f'Unknown service ID "{service_id}". Ensure that the service ID is passed.')
        for check_id in [c for c, check in self.checks.items() if check["ServiceID"] == service_id]:
            del self.checks[check_id]
        self.bump(service["Service"])

    def set_status(self, check_id: str, status: str, output: str) -> None:
        check = self.checks.get(check_id)
        if check is None:
            raise HTTPError(404, f'Unknown check ID "{check_id}". Ensure that the check ID is passed.')
        if check["_ttl"] is None:
            raise HTTPError(500, f'CheckID "{check_id}" does not have associated TTL')
        check["_expires"] = time.monotonic() + check["_ttl"]
        self._set(check, status, output)

    def _set(self, check: dict[str, Any], status: str, output: str) -> None:
        if status == "critical":
            if check["_critical_since"] is None:
                check["_critical_since"] = time.monotonic()
        else:
            check["_critical_since"] = None
        if check["Status"] != status or check["Output"] != output:
            check["Status"], check["Output"] = status, output
            self.bump(check["ServiceName"])

    def tick(self) -> list[dict[str, Any]]:
        """Expire TTLs; return the HTTP checks due (run outside the lock)."""
        now = time.monotonic()
        due = []
        for check in list(self.checks.values()):
            if check["_expires"] is not None and now >= check["_expires"] and check["Status"] != "critical":
                self._set(check, "critical", f"TTL expired (last output: {check['Output']!r})")
            if check["_http"] and now >= check["_next_run"]:
                check["_next_run"] = now + check["_interval"]
                due.append(check)
        return due

    def reap(self) -> None:
        now = time.monotonic()
        for check in list(self.checks.values()):
            since, after = check["_critical_since"], check["_reap_after"]
            if since is not None and after is not None and now - since >= after and check["ServiceID"] in self.services:
                self.deregister(check["ServiceID"])

    # -- reads (lock held) -----------------------------------------------------------------

    def entries(self, name: str) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
        found = [s for s in self.services.values() if s["Service"] == name]
        found.sort(key=lambda s: (self.node, s["ID"]))
        return [(s, [c for c in self.checks.values() if c["ServiceID"] == s["ID"]]) for s in found]

    def node_json(self) -> dict[str, Any]:
        return {
            "ID": "40e4a748-2192-161a-0510-9bf59fe950b5",
            "Node": self.node,
            "Address": self.node_address,
            "Datacenter": self.datacenter,
            "TaggedAddresses": {"lan": self.node_address, "wan": self.node_address},
            "Meta": {},
        }

    def node_check(self) -> dict[str, Any]:
        return {"Node": self.node, "CheckID": "serfHealth", "Name": "Serf Health Status", "Status": "passing",
                "Notes": "", "Output": "Agent alive and reachable", "ServiceID": "", "ServiceName": "",
                "Type": "", "CreateIndex": 1, "ModifyIndex": 1}  # fmt: skip


def public(check: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in check.items() if not k.startswith("_")}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go in separate writes: no delayed-ACK stall between them
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_POST(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        state = self.server.state
        headers: dict[str, str] = {}
        try:
            anonymous = self._authorize(query, method)
            if query.get("dc", [state.datacenter])[0] not in ("", state.datacenter):
                raise HTTPError(500, "No path to datacenter")
            status, body, headers = self._route(method, unquote(url.path), query, raw, anonymous)
        except HTTPError as error:
            status, body = error.status, error.message
        except (ValueError, KeyError, TypeError) as error:
            status, body = 400, f"Request decode failed: {error}"
        text = isinstance(body, str) and not isinstance(body, JSONText)
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8" if text else "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _authorize(self, query: dict[str, list[str]], method: str) -> bool:
        """Whether the request is anonymous under ACLs (reads filtered); raises 403 as Consul does."""
        required = self.server.state.token
        if required is None:
            return False
        token = self.headers.get("X-Consul-Token") or query.get("token", [""])[0]
        bearer = self.headers.get("Authorization", "")
        if not token and bearer.lower().startswith("bearer "):
            token = bearer[7:].strip()
        if not token:
            if method != "GET" and not self.path.startswith("/_test/"):
                raise HTTPError(403, "Permission denied")
            return True
        if token != required:
            raise HTTPError(403, "ACL not found")
        return False

    def _route(
        self, method: str, path: str, query: dict[str, list[str]], raw: bytes, anonymous: bool
    ) -> tuple[int, Any, dict[str, str]]:
        state = self.server.state
        parts = path.strip("/").split("/", 3)
        if method == "PUT":
            with state.lock:
                if path == "/v1/agent/service/register":
                    body = fold(json.loads(raw or b"{}"))
                    state.register(body, "replace-existing-checks" in query)
                    return 200, "", {}
                if path.startswith("/v1/agent/service/deregister/"):
                    state.deregister(path.rsplit("/", 1)[1])
                    return 200, "", {}
                if len(parts) == 4 and parts[:3] == ["v1", "agent", "check"] and "/" in parts[3]:
                    verb, check_id = parts[3].split("/", 1)
                    note = query.get("note", [""])[0]
                    if verb in ("pass", "warn", "fail"):
                        status = {"pass": "passing", "warn": "warning", "fail": "critical"}[verb]
                        state.set_status(check_id, status, note)
                        return 200, "", {}
                    if verb == "update":
                        update = fold(json.loads(raw or b"{}"))
                        state.set_status(check_id, update.get("status", "passing"), update.get("output", ""))
                        return 200, "", {}
                if path.startswith("/_test/index/"):
                    state.index = int(path.rsplit("/", 1)[1])
                    state.service_index = dict.fromkeys(state.service_index, state.index)
                    state.catalog_index = state.index
                    state.changed.notify_all()
                    return 200, "", {}
                if path.startswith("/_test/node-address/"):
                    state.node_address = path.rsplit("/", 1)[1]
                    state.bump(*{s["Service"] for s in state.services.values()})
                    return 200, "", {}
            raise HTTPError(405, f"method PUT not allowed on {path}")
        if method != "GET":
            raise HTTPError(405, f"method {method} not allowed")
        if path == "/v1/status/leader":
            return 200, JSONText(json.dumps("127.0.0.1:8300")), {}
        if path == "/_test/blocked":
            with state.lock:
                return 200, {"Blocked": state.blocked}, {}
        if path == "/v1/agent/self":
            return 200, {"Config": {"Datacenter": state.datacenter, "NodeName": state.node}, "Member": {}}, {}
        if path == "/v1/agent/services":
            with state.lock:
                return 200, {} if anonymous else {k: dict(v) for k, v in state.services.items()}, {}
        if path == "/v1/agent/checks":
            with state.lock:
                return 200, {} if anonymous else {k: public(v) for k, v in state.checks.items()}, {}
        if path == "/v1/catalog/services":
            return self._blocking(query, None, lambda: {} if anonymous else self._catalog_services())
        if len(parts) == 4 and parts[:3] == ["v1", "health", "service"]:
            return self._blocking(query, parts[3], lambda: [] if anonymous else self._health(parts[3], query))
        if len(parts) == 4 and parts[:3] == ["v1", "catalog", "service"]:
            return self._blocking(query, parts[3], lambda: [] if anonymous else self._catalog_service(parts[3], query))
        raise HTTPError(404, f"no handler for {path}")

    def _blocking(self, query: dict[str, list[str]], name: str | None, read: Any) -> tuple[int, Any, dict[str, str]]:
        state = self.server.state
        wait = min(duration(query.get("wait", ["5m"])[0] or "5m"), 600.0)
        wait += random.uniform(0, wait / 16)
        index = int(query.get("index", ["0"])[0] or 0)

        def current() -> int:
            if name is None:
                return state.catalog_index
            return state.service_index.get(name, state.catalog_index)

        deadline = time.monotonic() + wait
        with state.lock:
            state.blocked += 1
            try:
                while index > 0 and current() <= index:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    state.changed.wait(left)
            finally:
                state.blocked -= 1
            headers = {"X-Consul-Index": str(current()), "X-Consul-KnownLeader": "true", "X-Consul-LastContact": "0"}
            body = read()
        if self.server.state.token is not None and not body and self.headers.get("X-Consul-Token") is None:
            headers["X-Consul-Results-Filtered-By-ACLs"] = "true"
        return 200, body, headers

    def _catalog_services(self) -> dict[str, list[str]]:
        state = self.server.state
        found: dict[str, list[str]] = {"consul": []}
        for service in state.services.values():
            tags = found.setdefault(service["Service"], [])
            tags.extend(t for t in service["Tags"] if t not in tags)
        return found

    def _matches(self, service: dict[str, Any], query: dict[str, list[str]]) -> bool:
        return all(tag in service["Tags"] for tag in query.get("tag", []))

    def _health(self, name: str, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        state = self.server.state
        passing = "passing" in query and query["passing"][0].lower() not in ("0", "false")
        result = []
        for service, checks in state.entries(name):
            if not self._matches(service, query):
                continue
            all_checks = [state.node_check(), *(public(c) for c in checks)]
            if passing and any(c["Status"] != "passing" for c in all_checks):
                continue
            result.append({"Node": state.node_json(), "Service": dict(service), "Checks": all_checks})
        return result

    def _catalog_service(self, name: str, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        state = self.server.state
        result = []
        for service, _ in state.entries(name):
            if not self._matches(service, query):
                continue
            result.append({
                "Node": state.node, "Address": state.node_address, "Datacenter": state.datacenter,
                "ServiceID": service["ID"], "ServiceName": service["Service"], "ServiceTags": service["Tags"],
                "ServiceAddress": service["Address"], "ServicePort": service["Port"], "ServiceMeta": service["Meta"],
                "ServiceWeights": service["Weights"], "CreateIndex": service["CreateIndex"],
                "ModifyIndex": service["ModifyIndex"],
            })  # fmt: skip
        return result


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, args: argparse.Namespace) -> None:
        self.state = State(args)
        super().__init__((args.host, args.port), Handler)


def run_checks(state: State) -> None:
    """The agent's check runner: TTL expiry, HTTP checks, and the reaper of critical services."""
    last_reap = time.monotonic()
    while True:
        time.sleep(0.02)
        with state.lock:
            due = state.tick()
            if time.monotonic() - last_reap >= state.reap_interval:
                last_reap = time.monotonic()
                state.reap()
        for check in due:
            threading.Thread(target=run_http_check, args=(state, check), daemon=True).start()


def run_http_check(state: State, check: dict[str, Any]) -> None:
    try:
        with urllib.request.urlopen(check["_http"], timeout=min(check["_interval"], 10.0)) as reply:
            code, output = reply.status, f"HTTP GET {check['_http']}: {reply.status}"
    except urllib.error.HTTPError as error:
        error.close()  # it holds the answer's socket
        code, output = error.code, f"HTTP GET {check['_http']}: {error.code}"
    except OSError as error:
        code, output = 0, f"Get {check['_http']}: {error}"
    status = "passing" if 200 <= code < 300 else "warning" if code == 429 else "critical"
    with state.lock:
        if state.checks.get(check["CheckID"]) is check:
            state._set(check, status, output)


def main() -> None:
    parser = argparse.ArgumentParser(description="A Consul HTTP API test server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8500)
    parser.add_argument("--datacenter", default="dc1")
    parser.add_argument("--node", default="node-1")
    parser.add_argument("--node-address", default="127.0.0.1")
    parser.add_argument("--acl-token", default=None, help="the only token accepted (ACLs off without it)")
    parser.add_argument("--index-start", type=int, default=10, help="the Raft index to start from")
    parser.add_argument("--reap-interval", type=float, default=30.0)
    parser.add_argument("--deregister-minimum", type=float, default=60.0)
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate (and --tls-key)")
    parser.add_argument("--tls-key")
    parser.add_argument("--tls-ca", help="require client certificates signed by this CA (verify_incoming)")
    args = parser.parse_args()
    server = Server(args)
    if args.tls_cert:
        import ssl

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        if args.tls_ca:
            context.load_verify_locations(args.tls_ca)
            context.verify_mode = ssl.CERT_REQUIRED
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=run_checks, args=(server.state,), daemon=True).start()
    scheme = "https" if args.tls_cert else "http"
    print(f"consul api test server on {scheme}://{args.host}:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
