"""ZooKeeper discovery: go-kit's ``sd/zk`` package, on kazoo.

``Publisher(path, factory)`` watches the children of ``path`` and publishes the instance
each child node holds (``"host:port"`` or a JSON document); ``Registrar(path, instance)``
keeps an ephemeral sequential node for an instance under ``path`` while it lives;
``Registry(hosts)`` offers services by name under ``/services`` (register, discover,
watch, list_services, health) on the generic backend protocol (``Backend``).

    from loadbalancer import RoundRobin, zookeeper

    publisher = zookeeper.Publisher("/services/api", make_client, hosts="zk1:2181,zk2:2181")
    balancer = RoundRobin(publisher)

    with zookeeper.Registrar("/services/api", "10.0.0.5:8080", hosts="zk1:2181,zk2:2181"):
        serve()

Needs the ``zookeeper`` extra: ``pip install 'loadbalancer[zookeeper]'``.
"""

try:
    import kazoo.client  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the installation
    raise ImportError(
        "loadbalancer.zookeeper needs kazoo, which is not installed: pip install 'loadbalancer[zookeeper]'"
    ) from error

from ._backend import Backend, Registry
from ._publisher import Publisher
from ._registrar import Registrar

__all__ = ["Backend", "Publisher", "Registrar", "Registry"]
