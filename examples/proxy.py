"""``loadbalancer proxy`` in front of two backends: balancing, a backend replaced over the socket, failure.

Starts two small HTTP backends on loopback (the project's test backend), the proxy in front
of them as a user would (``python -m loadbalancer proxy -b ... -b ...``), and shows: the
requests alternating between the backends, the admin socket replacing the set, a bad
socket line refused, the only backend still served when it fails its health check (with no
healthy backend the proxy sends to all of them: panic routing), and a 502 once it is gone.

    python examples/proxy.py
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def backend(port: int) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.http_server", str(port)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    return process


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def admin(path: str, line: str) -> str:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(path)
        sock.sendall(line.encode())
        return sock.makefile().read().strip()


def main() -> None:
    ports = [free_port(), free_port()]
    backends = [backend(port) for port in ports]
    socket_path = os.path.join(tempfile.mkdtemp(), "proxy.sock")
    metrics_port = free_port()
    command = [sys.executable, "-m", "loadbalancer", "proxy", "-p", "0", "--bind", "127.0.0.1",
               "-prometheus-port", str(metrics_port), "--socket", socket_path, "--workers", "1",
               "--health-interval", "0.2",
               *(arg for port in ports for arg in ("-b", f"http://127.0.0.1:{port}"))]  # fmt: skip
    proxy = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proxy.stdout is not None
        url = "http://" + proxy.stdout.readline().split("://", 1)[1].split()[0]
        names = {ports[0]: "a", ports[1]: "b"}
        seen = sorted(names[json.loads(get(f"{url}/echo")[1])["port"]] for _ in range(4))
        print("balanced:", " ".join(seen))  # round robin: two each
        print("socket:", admin(socket_path, f"http://127.0.0.1:{ports[1]}\n").replace(str(ports[1]), "B"))
        print("now:", " ".join(names[json.loads(get(f"{url}/echo")[1])["port"]] for _ in range(4)))
        print("bad line:", admin(socket_path, "gopher://x\n").split(":", 1)[0])
        get(f"http://127.0.0.1:{ports[1]}/admin/health/500/none")  # b's /health now fails
        status_url = f"http://127.0.0.1:{metrics_port}/status.json"
        b_address = f"127.0.0.1:{ports[1]}"
        while not any(
            row["backend"] == b_address and row.get("healthy") is False
            for row in json.loads(get(status_url)[1])["backends"]
        ):
            time.sleep(0.05)  # /status.json: b's row says healthy: false (and why)
        print("unhealthy, still served:", get(f"{url}/echo")[0])
        backends[1].kill()
        backends[1].wait()
        status, body = get(f"{url}/echo")
        print("gone:", status, body.strip())
    finally:
        proxy.terminate()
        proxy.wait()
        for process in backends:
            process.kill()
            process.wait()


if __name__ == "__main__":
    main()
