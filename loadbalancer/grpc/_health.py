"""``grpc.health.v1`` watched on every instance (a ``Screen``'s watcher): one not serving is left out.

Each instance's sub-channel carries a ``Health/Watch`` stream for the configured service
name. SERVING lets the instance in, NOT_SERVING and SERVICE_UNKNOWN take it out, and a
server without the health service (UNIMPLEMENTED) counts as healthy, with a warning, as
gRPC's health-checking protocol says. A stream that fails otherwise (the server is down)
takes the instance out until a new stream says SERVING; it is opened again after a backoff.
An instance is in from the moment it appears until its stream says otherwise.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import grpc

from .._log import get_logger
from ..instance import Instance
from ._core import code_of
from ._screen import LoopTasks, Report, Watcher

try:
    from grpc_health.v1 import health_pb2
except ImportError as error:  # pragma: no cover - depends on the installation
    raise ImportError(
        "health_check=True needs grpcio-health-checking, which is not installed: pip install 'loadbalancer[grpc]'"
    ) from error

__all__ = ["WATCH", "verdict", "watch_task", "watch_thread"]

WATCH = "/grpc.health.v1.Health/Watch"
_FIRST_BACKOFF, _MAX_BACKOFF = 0.1, 5.0


def verdict(response: Any) -> str | None:
    """What a ``HealthCheckResponse`` says: ``None`` if serving, else the status's name."""
    status = response.status
    if status == health_pb2.HealthCheckResponse.SERVING:
        return None
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(status))


def unimplemented(log: Any, instance: Instance) -> None:
    log.warning(
        "health_service_unimplemented",
        instance=instance.address,
        note="the server has no grpc.health.v1 service: counted as healthy",
    )


def watch_thread(service: str, log: Any) -> Watcher:
    """Watches on a thread of their own per instance (sync channels)."""
    log = get_logger(log, name="loadbalancer.grpc")
    request = health_pb2.HealthCheckRequest(service=service)

    def watcher(sub: Any, report: Report) -> Callable[[], None]:
        stopped = threading.Event()
        current: list[Any] = []
        watch = sub.channel.unary_stream(
            WATCH, health_pb2.HealthCheckRequest.SerializeToString, health_pb2.HealthCheckResponse.FromString
        )

        def run() -> None:
            backoff = _FIRST_BACKOFF
            while not (stopped.is_set() or sub.closed):
                try:
                    stream = watch(request)
                except ValueError:  # its sub-channel was closed
                    return
                current[:] = [stream]
                if stopped.is_set():
                    stream.cancel()
                try:
                    for response in stream:
                        report(verdict(response))
                        backoff = _FIRST_BACKOFF
                except grpc.RpcError as error:
                    if stopped.is_set() or sub.closed:
                        return
                    if code_of(error) is grpc.StatusCode.UNIMPLEMENTED:
                        unimplemented(log, sub.instance)
                        report(None)
                        return
                    report(f"health watch failed: {code_of(error)}")
                stopped.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)

        def stop() -> None:
            stopped.set()
            for stream in current:
                stream.cancel()

        threading.Thread(target=run, name=f"loadbalancer-grpc-health-{sub.instance.address}", daemon=True).start()
        return stop

    return watcher


def watch_task(service: str, log: Any, tasks: LoopTasks) -> Watcher:
    """Watches as tasks on the channel's event loop (aio channels), started from any thread."""
    log = get_logger(log, name="loadbalancer.grpc")
    request = health_pb2.HealthCheckRequest(service=service)

    async def run(sub: Any, report: Report) -> None:
        backoff = _FIRST_BACKOFF
        while not sub.closed:
            watch = sub.channel().unary_stream(
                WATCH, health_pb2.HealthCheckRequest.SerializeToString, health_pb2.HealthCheckResponse.FromString
            )
            try:
                async for response in watch(request):
                    report(verdict(response))
                    backoff = _FIRST_BACKOFF
            except grpc.RpcError as error:
                if code_of(error) is grpc.StatusCode.UNIMPLEMENTED:
                    unimplemented(log, sub.instance)
                    report(None)
                    return
                if code_of(error) is grpc.StatusCode.CANCELLED and sub.closed:
                    return
                report(f"health watch failed: {code_of(error)}")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF)

    return tasks.watcher(run)
