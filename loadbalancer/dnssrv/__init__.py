"""DNS SRV discovery: go-kit's ``dnssrv`` package, on dnspython.

``Publisher(name, ttl, factory)`` looks ``name``'s SRV records up every ``ttl`` seconds and
publishes ``target:port`` for each; ``refresh_on_signal(*publishers)`` refreshes them when
the process gets SIGHUP. ``Backend`` / ``Registry`` put DNS SRV on the generic backend
protocol as a discover-only registry (``discover``, ``lookup``, ``watch``).

    from loadbalancer import RoundRobin, dnssrv

    publisher = dnssrv.Publisher("_api._tcp.example.com.", 5.0, make_client)
    balancer = RoundRobin(publisher)
"""

from ._backend import Backend, Registry
from ._publisher import Publisher
from ._signal import SignalRefresh, refresh_on_signal

__all__ = ["Backend", "Publisher", "Registry", "SignalRefresh", "refresh_on_signal"]
