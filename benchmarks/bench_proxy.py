"""``loadbalancer proxy`` against goaround and nginx: wrk on the same two backends, in one run.

Two nginx backends serve a 1 KiB file (and ``/health``) on 127.0.0.1; in front of them, in
turn: ``loadbalancer proxy`` (its default workers), goaround (``-n 3``, its best setting
measured) and nginx as a proxy (upstream keep-alive, as many workers as the proxy). Each is loaded with
``wrk -t2 -c50 -d4s --latency`` (HTTP/1.1 keep-alive, 50 connections), ``--rounds`` times in
a rotating order; the table shows each one's best round (req/s, p99) and the median
per-round ratio of the proxy to each other. After every run the proxy must still answer
(no lock-up). Then a large download (``--large``, 1 GiB by default) through the proxy and
through nginx, streamed both (nginx with ``proxy_buffering off``), by curl, in MB/s; and a large
upload the other way, to an upload sink (``benchmarks/_sink.py``) behind each, streamed both
(nginx with ``proxy_request_buffering off``), ``--large-rounds`` times each (15 by default: a
transfer takes well under a second, and the rate of one swings by a third and more with the
scheduling of the four busy processes on two cores, nginx's as much as the proxy's, so a run's
median needs more rounds than the 4 s load runs; nine left the median ratio moving by +-0.05
from run to run). Last, HTTP/2 over TLS 1.3: ``h2load -c50 -m10`` for ``--seconds`` on a 1 KiB answer,
through the proxy (``-cacert``/``-privkey``) and through nginx (``ssl http2``, the same
certificate and backends, upstream keep-alive): req/s and p99 (from h2load's per-request log),
and the ratios. ``h2load`` is Debian's ``nghttp2-client``. ``--baseline TREE`` runs the proxy of
another checkout beside this one (before and after a change, in one run). ``--compiled``
measures the compiled build of this checkout (``scripts/build_compiled.py``, as
``LOADBALANCER_COMPILE=1`` installs it) as the proxy in every phase; with ``--baseline .``
beside the pure one. Needs Debian's
``wrk``, ``curl`` and ``nginx-light``; goaround is optional (the path in ``--goaround``; skipped
when absent).

    .venv/bin/python benchmarks/bench_proxy.py [--goaround PATH] [--rounds 3] [--large-rounds 15] [--seconds 4]
        [--baseline TREE] [--compiled]
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


@contextlib.contextmanager
def nginx(conf_body: str, large: int = 0, workers: int = 1) -> Iterator[None]:
    directory = tempfile.mkdtemp(prefix="bench-proxy-nginx-")
    with open(os.path.join(directory, "1k"), "wb") as file:
        file.write(b"x" * 1024)
    with open(os.path.join(directory, "large"), "wb") as file:
        file.truncate(large)  # sparse: read from memory, the disk is not what is measured
    conf = os.path.join(directory, "nginx.conf")
    with open(conf, "w") as file:
        file.write(
            f"daemon off; worker_processes {workers}; pid {directory}/nginx.pid; error_log {directory}/error.log;\n"
            "events { worker_connections 4096; }\n"
            f"http {{ access_log off; client_body_temp_path {directory}; proxy_temp_path {directory};\n"
            f"{conf_body.replace('ROOT', directory)} }}\n"
        )
    process = subprocess.Popen([shutil.which("nginx") or "nginx", "-c", conf, "-p", directory])
    try:
        yield
    finally:
        process.terminate()
        process.wait()
        shutil.rmtree(directory, ignore_errors=True)


def backend_conf(port: int) -> str:
    return (
        f"server {{ listen 127.0.0.1:{port}; keepalive_requests 1000000; root ROOT;"
        ' location = /health { return 200 \'{"state": "healthy", "message": ""}\'; }'
        " location = /large { } location / { try_files /1k =404; } }"
    )


def upload(port: int, path: str) -> float:
    """MB/s of one upload of the file at ``path`` by curl (a POST of its bytes)."""
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-T", path, "-X", "POST", "-w", "%{size_upload} %{time_total}",
         f"http://127.0.0.1:{port}/upload"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return float(out[0]) / float(out[1]) / 1e6


def h2load(port: int, seconds: float, log: str) -> tuple[float, float, int]:
    """req/s, p99 (ms) and failed requests of one h2load run (-c50 -m10) over TLS."""
    out = subprocess.run(
        ["h2load", "-c50", "-m10", f"-D{max(1, round(seconds))}", "--warm-up-time=1", f"--log-file={log}",
         f"https://127.0.0.1:{port}/1k"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rate = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))  # type: ignore[union-attr]
    found = re.search(r"requests: .*?(\d+) succeeded, (\d+) failed, (\d+) errored", out)
    failed = int(found.group(2)) + int(found.group(3)) if found else -1
    with open(log) as file:  # start time, status, microseconds: one line a request
        times = sorted(int(line.split()[2]) for line in file if line.strip())
    p99 = times[int(len(times) * 0.99)] / 1000 if times else float("nan")
    return rate, p99, failed


def certificate(directory: str) -> tuple[str, str]:
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


_NAME = 33  # the width of the first column: the longest name, the compiled proxy's


def rates_line(name: str, rates: list[float]) -> str:
    """One subject's median MB/s over its rounds, and their range."""
    return f"  {name:<{_NAME}} {statistics.median(rates):8,.0f} (range {min(rates):,.0f}-{max(rates):,.0f})"


def proxy_name(args: argparse.Namespace) -> str:
    return f"loadbalancer proxy{', compiled' if args.compiled else ''} ({args.workers}w)"


def start_proxy(
    stack: contextlib.ExitStack, port: int, args: argparse.Namespace, *more: str, tree: str | None = None
) -> None:
    """The proxy of ``tree`` (default: this checkout) on ``port``, stopped with ``stack``."""
    socket_path = os.path.join(tempfile.mkdtemp(prefix="bench-proxy-"), "admin.sock")
    proxy = subprocess.Popen(
        [sys.executable, "-m", "loadbalancer", "proxy", "-p", str(port), "--bind", "127.0.0.1",
         "-prometheus-port", "0", "--socket", socket_path, "--workers", str(args.workers), *more],
        stdout=subprocess.DEVNULL, cwd=tree, env={**os.environ, "PYTHONPATH": tree} if tree else None,
    )  # fmt: skip
    stack.callback(proxy.wait)
    stack.callback(proxy.terminate)


def uploads_and_http2(args: argparse.Namespace, urls: list[str]) -> dict[str, dict[str, list[tuple[float, ...]]]]:
    """The large upload and HTTP/2 phases: proxy against nginx in turn (``--large-rounds``, then ``--rounds``).

    HTTP/2 runs the ``--baseline`` proxy too, when there is one.
    """
    results: dict[str, dict[str, list[tuple[float, ...]]]] = {"upload": {}, "h2": {}}
    directory = tempfile.mkdtemp(prefix="bench-proxy-more-")
    h2_subjects = ("proxy", "nginx", "baseline") if args.baseline else ("proxy", "nginx")
    names = ("up-proxy", "up-nginx", *(f"h2-{subject}" for subject in h2_subjects))
    sink_port, ports = free_port(), {name: free_port() for name in names}
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, directory, ignore_errors=True)
        sink = subprocess.Popen(
            [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sink.py"), str(sink_port)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        stack.callback(sink.wait)
        stack.callback(sink.kill)
        assert sink.stdout is not None
        assert sink.stdout.readline().strip() == "ready"
        cert, key = certificate(directory)
        backends = " ".join(f"server {url.removeprefix('http://')};" for url in urls)
        stack.enter_context(nginx(
            f"upstream sink {{ server 127.0.0.1:{sink_port}; keepalive 64; }} upstream b {{ {backends} keepalive 64; }}"
            f" server {{ listen 127.0.0.1:{ports['up-nginx']}; client_max_body_size 0; client_body_buffer_size 256k;"
            " location / {"
            " proxy_pass http://sink; proxy_http_version 1.1; proxy_set_header Connection '';"
            " proxy_request_buffering off; proxy_buffering off; } }"
            f" server {{ listen 127.0.0.1:{ports['h2-nginx']} ssl http2; ssl_certificate {cert};"
            f" ssl_certificate_key {key}; ssl_protocols TLSv1.3; keepalive_requests 1000000;"
            " location / { proxy_pass http://b; proxy_http_version 1.1;"
            " proxy_set_header Connection ''; proxy_buffering off; } }",
            workers=args.workers,  # the proxy's worker count: the issue compares like with like
        ))  # fmt: skip
        sink_url = f"http://127.0.0.1:{sink_port}"
        start_proxy(stack, ports["up-proxy"], args, "--health-path", "none", "-b", sink_url, tree=args.tree)
        start_proxy(
            stack, ports["h2-proxy"], args, "-cacert", cert, "-privkey", key, *(a for u in urls for a in ("-b", u)),
            tree=args.tree,
        )  # fmt: skip
        if args.baseline:
            start_proxy(
                stack, ports["h2-baseline"], args, "-cacert", cert, "-privkey", key,
                *(a for u in urls for a in ("-b", u)), tree=os.path.abspath(args.baseline),
            )  # fmt: skip
        for port in ports.values():
            wait_port(port)
        big = os.path.join(directory, "upload")
        with open(big, "wb") as file:
            file.truncate(args.large)  # sparse: read from memory
        log = os.path.join(directory, "h2load.log")
        for subject in ("proxy", "nginx"):
            upload(ports[f"up-{subject}"], big)  # warm-up
        for subject in h2_subjects:
            h2load(ports[f"h2-{subject}"], 1, log)
        for round_ in range(args.large_rounds):
            for subject in ("proxy", "nginx")[round_ % 2 :] + ("proxy", "nginx")[: round_ % 2]:
                results["upload"].setdefault(subject, []).append((upload(ports[f"up-{subject}"], big),))
        for round_ in range(args.rounds):
            turn = round_ % len(h2_subjects)
            for subject in h2_subjects[turn:] + h2_subjects[:turn]:
                results["h2"].setdefault(subject, []).append(h2load(ports[f"h2-{subject}"], args.seconds, log))
    return results


def print_more(results: dict[str, dict[str, list[tuple[float, ...]]]], args: argparse.Namespace) -> None:
    names = {"proxy": proxy_name(args), "nginx": "nginx", "baseline": f"baseline proxy ({args.workers}w)"}
    uploads = results["upload"]
    print(f"\n{args.large / 2**30:g} GiB upload by curl to a sink, {args.large_rounds} rounds (MB/s):")
    for subject, rows in uploads.items():
        rates = [row[0] for row in rows]
        print(rates_line(names[subject], rates))
    ratios = [a[0] / b[0] for a, b in zip(uploads["proxy"], uploads["nginx"], strict=True)]
    print(f"  proxy / nginx: {statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})")
    h2 = results["h2"]
    print(
        f"\nHTTP/2 over TLS 1.3, h2load -c50 -m10 -D{max(1, round(args.seconds))}, 1 KiB answers, {args.rounds} rounds:"
    )
    for subject, rows in h2.items():
        print(
            f"  {names[subject]:<{_NAME}} {max(r[0] for r in rows):>9,.0f} req/s (best)"
            f"  p99 {min(r[1] for r in rows):7.2f} ms"
            f"  failed {sum(int(r[2]) for r in rows)}"
        )
    for other in (subject for subject in h2 if subject != "proxy"):
        rate = [a[0] / b[0] for a, b in zip(h2["proxy"], h2[other], strict=True)]
        p99 = [a[1] / b[1] for a, b in zip(h2["proxy"], h2[other], strict=True)]
        print(f"  proxy / {other}: throughput {statistics.median(rate):.2f}x ({min(rate):.2f}-{max(rate):.2f}),"
              f" p99 {statistics.median(p99):.2f}x")  # fmt: skip


def download(port: int) -> float:
    """MB/s of one download of /large by curl."""
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{size_download} %{time_total}", f"http://127.0.0.1:{port}/large"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return float(out[0]) / float(out[1]) / 1e6


def wrk(port: int, seconds: float) -> tuple[float, float, int]:
    """req/s, p99 (ms), and errors (non-2xx or socket errors) of one wrk run."""
    out = subprocess.run(
        ["wrk", "-t2", "-c50", f"-d{seconds:g}s", "--latency", f"http://127.0.0.1:{port}/1k"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    match = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99 = float(match.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[match.group(2)] if match else float("nan")
    errors = 0
    for pattern in (
        r"Non-2xx or 3xx responses: (\d+)",
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
    ):
        found = re.search(pattern, out)
        if found:
            errors += sum(int(group) for group in found.groups())
    return rate, p99, errors


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/1k", timeout=5) as response:
            return response.status == 200 and len(response.read()) == 1024
    except OSError:
        return False


def run_goaround(command: list[str], port: int, seconds: float) -> tuple[float, float, int]:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        answers(port)
        return wrk(port, seconds)
    finally:
        process.kill()
        process.wait()
        with contextlib.suppress(OSError):
            os.unlink("/tmp/goaround.sock")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--goaround", metavar="PATH", default=os.environ.get("GOAROUND") or shutil.which("goaround") or "goaround",
        help="the goaround executable (default: $GOAROUND, else goaround on PATH; not run when there is none)",
    )  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3, help="wrk and h2load rounds for each proxy (default: 3)")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds of a wrk or h2load round (default: 4)")
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="workers of the proxy and of nginx (default: the CPU count)",
    )
    parser.add_argument(
        "--large-rounds", type=int, default=15, help="rounds of the large download and upload (default: 15)"
    )
    parser.add_argument(
        "--large", type=int, default=1 << 30, help="bytes of the large download and upload (default: 1 GiB; 0: none)"
    )
    parser.add_argument("--skip-more", action="store_true", help="no upload and HTTP/2 phases")
    parser.add_argument(
        "--baseline", metavar="TREE",
        help="also run the proxy from another checkout of the project (such as an older commit), to compare",
    )  # fmt: skip
    parser.add_argument("--compiled", action="store_true", help="measure the compiled build of this checkout")
    args = parser.parse_args()
    if not (shutil.which("wrk") and shutil.which("nginx")):
        print("needs wrk and nginx (Debian: apt-get install wrk nginx-light)")
        return 1
    args.tree = None
    if args.compiled:
        args.tree = tempfile.mkdtemp(prefix="bench-proxy-compiled-")
        atexit.register(shutil.rmtree, args.tree, ignore_errors=True)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        subprocess.run([sys.executable, os.path.join(root, "scripts", "build_compiled.py"), args.tree], check=True)
    b1, b2 = free_port(), free_port()
    urls = [f"http://127.0.0.1:{b1}", f"http://127.0.0.1:{b2}"]
    ports = {"proxy": free_port(), "baseline": free_port(), "goaround": free_port(), "nginx": free_port()}
    nginx_proxy = (
        f"upstream b {{ server 127.0.0.1:{b1}; server 127.0.0.1:{b2}; keepalive 64; }}"
        f" server {{ listen 127.0.0.1:{ports['nginx']}; keepalive_requests 1000000;"
        " location / { proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection '';"
        " proxy_buffering off; proxy_request_buffering off; proxy_buffer_size 256k;"
        " proxy_buffers 4 256k; proxy_busy_buffers_size 256k; } }"  # streaming, with the proxy's buffer size
    )
    downloads: dict[str, list[float]] = {}
    with contextlib.ExitStack() as stack:
        stack.enter_context(nginx(backend_conf(b1) + backend_conf(b2), args.large))
        stack.enter_context(nginx(nginx_proxy, workers=args.workers))
        subjects = ["proxy", "nginx"]
        trees = {"proxy": args.tree}
        if args.baseline:
            trees["baseline"] = os.path.abspath(args.baseline)
            subjects.insert(1, "baseline")
        for subject, tree in trees.items():
            start_proxy(stack, ports[subject], args, *(arg for url in urls for arg in ("-b", url)), tree=tree)
        goaround_command: list[str] = []
        if os.access(args.goaround, os.X_OK) and not os.path.exists("/tmp/goaround.sock"):
            goaround_command = [
                args.goaround, "-p", str(ports["goaround"]), "-prometheus-port", str(free_port()), "-n", "3",
                *(arg for url in urls for arg in ("-b", url)),
            ]  # fmt: skip
            subjects.insert(1, "goaround")
        else:
            print(f"goaround: not run (no executable at {args.goaround}, or /tmp/goaround.sock is taken)")
        for port in (b1, b2, *(ports[subject] for subject in subjects if subject != "goaround")):
            wait_port(port)
        for subject in subjects:
            if subject == "goaround":
                continue
            wrk(ports[subject], 1.0)  # warm-up
        results: dict[str, list[tuple[float, float, int]]] = {subject: [] for subject in subjects}
        lockups = 0
        for round_ in range(args.rounds):
            order = subjects[round_ % len(subjects) :] + subjects[: round_ % len(subjects)]
            for subject in order:
                if subject == "goaround":  # it locks up after a run (its README): a fresh process each time
                    results[subject].append(run_goaround(goaround_command, ports["goaround"], args.seconds))
                    continue
                results[subject].append(wrk(ports[subject], args.seconds))
                if subject in trees and not answers(ports[subject]):
                    lockups += 1
        if args.large and shutil.which("curl"):
            streamed = [subject for subject in subjects if subject != "goaround"]
            downloads = {subject: [] for subject in streamed}
            for subject in streamed:  # warm-up: the first read of the file fills the page cache
                download(ports[subject])
            for round_ in range(args.large_rounds):
                for subject in streamed[round_ % len(streamed) :] + streamed[: round_ % len(streamed)]:
                    downloads[subject].append(download(ports[subject]))
        more = None  # measured while the backends run
        if not args.skip_more and args.large and shutil.which("curl") and shutil.which("h2load"):
            more = uploads_and_http2(args, urls)
    print(f"wrk -t2 -c50 -d{args.seconds:g}s --latency, 1 KiB answers, two nginx backends, {args.rounds} rounds")
    print(f"| {'proxy':<{_NAME}} | {'req/s (best)':>12} | {'p99 (best)':>10} | {'req/s range':>15} | errors |")
    print(f"|{'-' * (_NAME + 2)}|{'-' * 14}:|{'-' * 11}:|{'-' * 16}:|-------:|")
    names = {
        "proxy": proxy_name(args),
        "baseline": f"baseline proxy ({args.workers}w)",
        "goaround": "goaround -n 3",
        "nginx": "nginx (keepalive)",
    }
    for subject in subjects:
        rows = results[subject]
        rates = [rate for rate, _, _ in rows]
        print(
            f"| {names[subject]:<{_NAME}} | {max(rates):>12,.0f} | {min(p99 for _, p99, _ in rows):>8.2f} ms |"
            f" {min(rates):>6,.0f}-{max(rates):<7,.0f} | {sum(e for _, _, e in rows):>6} |"
        )
    for other in subjects[1:]:
        pairs = [(a, b) for a, b in zip(results["proxy"], results[other], strict=True) if b[0] > 0 and b[1] > 0]
        if not pairs:
            print(f"proxy / {other}: no successful run of {other} to compare with")
            continue
        ratios = [a[0] / b[0] for a, b in pairs]
        p99s = [a[1] / b[1] for a, b in pairs]
        print(
            f"proxy / {other}: throughput {statistics.median(ratios):.2f}x"
            f" ({min(ratios):.2f}-{max(ratios):.2f}), p99 {statistics.median(p99s):.2f}x"
        )
    print(f"proxy lock-ups after a run: {lockups}")
    if downloads:
        print(f"\n{args.large / 2**30:g} GiB download by curl, {args.large_rounds} rounds (MB/s):")
        for subject, rates in downloads.items():
            print(rates_line(names[subject], rates))
        for other in (subject for subject in downloads if subject != "proxy"):
            ratios = [a / b for a, b in zip(downloads["proxy"], downloads[other], strict=True)]
            print(f"  proxy / {other}: {statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})")
    if more:
        print_more(more, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
