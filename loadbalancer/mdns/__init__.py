"""Multicast DNS service discovery (mDNS, RFC 6762, with DNS-SD, RFC 6763), on zeroconf: no registry needed.

``Publisher("_http._tcp.local.", factory)`` browses a service type (or several) on the
local network and publishes each instance that answers, resolved from its SRV, TXT and
A/AAAA records (TXT properties as metadata, a ``tags`` key as tags); goodbye packets and
expired records remove instances. ``Registrar("_http._tcp.local.", "192.168.1.5:8080",
name="web")`` announces an instance while it lives (probing for its name first, renamed on
a conflict) and withdraws it with goodbye packets on close and at exit.
``Registry()`` offers them by service type (register, discover, watch, list_services,
health) on the generic backend protocol (``Backend``).

    from loadbalancer import RoundRobin, mdns

    publisher = mdns.Publisher("_api._tcp.local.", make_client)
    balancer = RoundRobin(publisher)

    with mdns.Registrar("_api._tcp.local.", "192.168.1.5:8080", name="api-1", properties={"version": "2"}):
        serve()

Needs the ``mdns`` extra: ``pip install 'loadbalancer[mdns]'``.
"""

try:
    import zeroconf  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the installation
    from ..errors import ExtraNotInstalledError

    raise ExtraNotInstalledError("loadbalancer.mdns", "mdns", error.name or str(error)) from error

from ._backend import Backend, MdnsError, Registry
from ._publisher import Publisher, Registrar

__all__ = ["Backend", "MdnsError", "Publisher", "Registrar", "Registry"]
