"""HTTP polling discovery: seed URLs that say who they know, as a JSON list of instances.

For services that can only tell who they know over HTTP (an inventory endpoint, a static
file on a web server, another service's ``/peers``). ``Publisher(endpoints, factory)``
polls every seed URL every ``interval`` seconds with ``If-None-Match`` (an unchanged answer
is a ``304`` and costs almost nothing), merges what the seeds say, and keeps its set when
seeds fail; ``Registry(endpoints)`` offers ``discover``/``watch`` by service name (a seed
URL may contain ``{service}``). Registering is not possible: the seeds own their lists.

    from loadbalancer import RoundRobin, httppoll

    seeds = ["http://10.0.0.1/peers.json", "http://10.0.0.2/peers.json"]
    balancer = RoundRobin(httppoll.Publisher(seeds, make_client, service="api"))

``tls=loadbalancer.TLSConfig(ca=..., cert=..., key=...)`` (or an ``ssl.SSLContext``) sets
the CAs and a client certificate; a seed URL without a scheme is then asked over https.

Needs the ``httppoll`` extra: ``pip install 'loadbalancer[httppoll]'``.
"""

try:
    import httpx  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the installation
    from ..errors import ExtraNotInstalledError

    raise ExtraNotInstalledError("loadbalancer.httppoll", "httppoll", "httpx") from error

from ._backend import HEALTHY, Backend, Poll, SeedError, parse_answer, read_answer
from ._publisher import Publisher, Registry

__all__ = ["HEALTHY", "Backend", "Poll", "Publisher", "Registry", "SeedError", "parse_answer", "read_answer"]
