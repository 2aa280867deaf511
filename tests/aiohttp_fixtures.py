"""Real aiohttp.web servers on free 127.0.0.1 ports, in the test's own event loop (the aiohttp middleware's tests)."""

from __future__ import annotations

import asyncio
import collections
import shutil
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web

from .daemon import missing


class Backend:
    """One server: ``/echo`` answers what it got; ``mode`` makes it answer 503 (``down``), wait (``slow``,
    ``delay`` seconds) or never answer (``hang``); ``/stream/N/S`` sends N lines S seconds apart;
    ``/slowbody`` sends its headers at once and its body ``delay`` seconds later."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.mode = "ok"
        self.delay = 0.0
        self.counts: collections.Counter[str] = collections.Counter()
        self.arrivals: list[float] = []
        self.port = 0
        self._tls = tls
        self._release = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/echo", self._echo)
        app.router.add_get("/stream/{n}/{pause}", self._stream)
        app.router.add_get("/slowbody", self._slow_body)
        self._runner = web.AppRunner(app, access_log=None)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> Backend:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._tls)  # port 0: the kernel picks a free one
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        self._release.set()  # hanging handlers return
        await self._runner.cleanup()

    async def _echo(self, request: web.Request) -> web.StreamResponse:
        self.arrivals.append(time.monotonic())
        self.counts[f"{request.method} {request.path}"] += 1
        if self.mode == "hang":
            await self._release.wait()
        elif self.mode == "slow":
            await asyncio.sleep(self.delay)
        if self.mode == "down":
            return web.json_response({"port": self.port}, status=503)
        body = await request.read()
        return web.json_response(
            {
                "port": self.port,
                "host": request.headers.get("Host"),
                "method": request.method,
                "path": request.path_qs,
                "body": body.decode(),
            }
        )

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        self.counts[f"GET {request.path}"] += 1
        response = web.StreamResponse()
        await response.prepare(request)
        for n in range(int(request.match_info["n"])):
            await asyncio.sleep(float(request.match_info["pause"]))
            await response.write(f"chunk {n}\n".encode())
        await response.write_eof()
        return response

    async def _slow_body(self, request: web.Request) -> web.StreamResponse:
        self.counts["GET /slowbody"] += 1
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.content_length = 4
        await response.prepare(request)  # the headers leave now
        await asyncio.sleep(self.delay)
        await response.write(b"done")
        await response.write_eof()
        return response


@asynccontextmanager
async def running(count: int, tls: ssl.SSLContext | None = None) -> AsyncIterator[list[Backend]]:
    """``count`` servers, stopped on exit."""
    started = [await Backend(tls).start() for _ in range(count)]
    try:
        yield started
    finally:
        for backend in started:
            await backend.stop()


def service_certificate(directory: Path, name: str = "api") -> tuple[Path, Path]:
    """A self-signed certificate whose only subject alternative name is ``DNS:<name>`` (no IP), and its key."""
    if shutil.which("openssl") is None:
        missing("openssl is not installed (Debian: openssl)")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={name}",
         "-addext", f"subjectAltName=DNS:{name}", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key
