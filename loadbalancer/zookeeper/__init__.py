"""ZooKeeper discovery: go-kit's ``sd/zk`` package, on kazoo.

``Publisher(path, factory)`` watches the children of ``path`` and publishes the instance
each child node holds (``"host:port"`` or a JSON document); ``Registrar(path, instance)``
keeps an ephemeral sequential node for an instance under ``path`` while it lives;
``Registry(endpoints)`` offers services by name under ``/services`` (register, discover,
watch, list_services, health). All three stand on ``Backend``, ZooKeeper on the generic
backend protocol of ``loadbalancer.backend``.

    from loadbalancer import RoundRobin, zookeeper

    publisher = zookeeper.Publisher("/services/api", make_client, endpoints="zk1:2181,zk2:2181")
    balancer = RoundRobin(publisher)

    with zookeeper.Registrar("/services/api", "10.0.0.5:8080", endpoints="zk1:2181,zk2:2181"):
        serve()

The client is kazoo's ``KazooClient`` (pass your own as ``client=``): the package has no
client class of its own. Needs the ``zookeeper`` extra: ``pip install 'loadbalancer[zookeeper]'``.
"""

try:
    import kazoo.client  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the installation
    from ..errors import ExtraNotInstalledError

    raise ExtraNotInstalledError("loadbalancer.zookeeper", "zookeeper", "kazoo") from error

from ._backend import Backend
from ._nodes import InvalidNodeError
from ._publisher import Publisher
from ._registrar import Registrar
from ._registry import Registry

__all__ = ["Backend", "InvalidNodeError", "Publisher", "Registrar", "Registry"]
