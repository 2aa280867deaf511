"""DNS SRV discovery: go-kit's ``dnssrv`` package, on dnspython.

``Publisher(name, interval, factory)`` looks ``name``'s SRV records up every ``interval``
seconds (5 by default) and publishes ``target:port`` for each; ``refresh_on_signal(*publishers)``
refreshes them when the process gets SIGHUP. ``Backend`` is DNS SRV on the generic backend
protocol (polled; most polls are one UDP query that finds the answer unchanged), and
``Publisher`` the generic publisher over it; ``Registry`` is the discover-only registry
facade (``discover``, ``lookup``, ``watch``). A failed lookup is a ``DnsError``; a name
that does not exist (NXDOMAIN) is its subclass ``NameNotFoundError``.

    from loadbalancer import RoundRobin, dnssrv

    publisher = dnssrv.Publisher("_api._tcp.example.com.", 5.0, make_client)
    balancer = RoundRobin(publisher)
"""

from ._backend import Backend
from ._publisher import Publisher
from ._registry import Registry
from ._resolver import DnsError, NameNotFoundError
from ._signal import SignalRefresh, refresh_on_signal

__all__ = ["Backend", "DnsError", "NameNotFoundError", "Publisher", "Registry", "SignalRefresh", "refresh_on_signal"]
