"""gRPC channels that balance, retry and follow discovery: ``Channel`` and ``aio.Channel``.

grpcio balances only over what its own resolvers find; these channels take any publisher
(or target string) and any balancer, keep one sub-channel per instance, and retry unary
calls on another instance::

    import grpc
    from loadbalancer import grpc as lbgrpc

    channel = lbgrpc.Channel("static:///127.0.0.1:50051,127.0.0.1:50052", retries=2)
    stub = MyServiceStub(channel)  # generated stubs work unchanged

Needs grpcio (``pip install 'loadbalancer[grpc]'``; health checks also grpcio-health-checking).
"""

try:
    import grpc  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the installation
    raise ImportError(
        "loadbalancer.grpc needs grpcio, which is not installed: pip install 'loadbalancer[grpc]'"
    ) from error

from .._httppolicy import RetryPolicy
from . import aio
from ._channel import Channel
from ._core import FAILURE_CODES
from ._errors import DeadlineExceededError, NoInstanceError, RpcError
from ._future import RetryingFuture

__all__ = [
    "FAILURE_CODES",
    "Channel",
    "DeadlineExceededError",
    "NoInstanceError",
    "RetryPolicy",
    "RetryingFuture",
    "RpcError",
    "aio",
]
