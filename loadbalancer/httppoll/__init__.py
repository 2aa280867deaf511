"""HTTP polling discovery: seed URLs that say who they know, as a JSON list of instances.

For services that can only tell who they know over HTTP (an inventory endpoint, a static
file on a web server, another service's ``/peers``). ``Publisher(seeds, factory)`` polls
every seed every ``interval`` seconds with ``If-None-Match`` (an unchanged answer is a
``304`` and costs almost nothing), merges what the seeds say, and keeps its set when
seeds fail; ``Registry(seeds)`` offers ``discover``/``watch`` by service name (a seed URL
may contain ``{service}``). Registering is not possible: the seeds own their lists.

    from loadbalancer import RoundRobin, httppoll

    publisher = httppoll.Publisher(["http://10.0.0.1/peers.json", "http://10.0.0.2/peers.json"], make_client)
    balancer = RoundRobin(publisher)

Needs the ``httppoll`` extra: ``pip install 'loadbalancer[httppoll]'``.
"""

try:
    import httpx  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the installation
    raise ImportError(
        "loadbalancer.httppoll needs httpx, which is not installed: pip install 'loadbalancer[httppoll]'"
    ) from error

from ._backend import HEALTHY, Backend, Poll, SeedError, parse_answer
from ._publisher import Publisher, Registry

__all__ = ["HEALTHY", "Backend", "Poll", "Publisher", "Registry", "SeedError", "parse_answer"]
