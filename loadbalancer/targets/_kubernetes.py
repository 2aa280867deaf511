"""``k8s:///api.default:http``: a Kubernetes Service's EndpointSlices (``SERVICE[.NAMESPACE][:PORT]``).

The cluster is the one ``KUBECONFIG`` names when set (client-go's order), else the pod's own
(in-cluster service account), else ``~/.kube/config``; ``?context=`` picks a kubeconfig
context. A numeric port is a port number, a name a named port.
"""

from __future__ import annotations

from typing import Any

from .. import kubernetes
from ._adapter import TAG, Adapter
from ._target import Target, drop_empty

__all__ = ["ADAPTER"]


def _service(target: Target, options: dict[str, Any], registering: bool) -> dict[str, Any]:
    if target.authority:
        raise target.error(
            "k8s targets take no authority: the cluster comes from KUBECONFIG or the pod's service account"
            f" (write k8s:///{target.name})"
        )
    service, namespace, port = _split(target)
    return {"service": service, **drop_empty({"namespace": namespace, "port": port})}


def _split(target: Target) -> tuple[str, str | None, int | str | None]:
    name, colon, port_text = target.name.partition(":")
    service, dot, namespace = name.partition(".")
    if not service or (dot and not namespace) or "/" in name:
        raise target.error(f"{target.name!r}: write SERVICE[.NAMESPACE][:PORT], as in k8s:///api.default:http")
    if colon and not port_text:
        raise target.error(f"{target.name!r}: no port after ':'")
    port: int | str | None = port_text or None
    if port_text.isascii() and port_text.isdigit():
        if not 0 < int(port_text) < 65536:
            raise target.error(f"port {port_text}: not a number from 1 to 65535")
        port = int(port_text)
    return service, namespace or None, port


ADAPTER = Adapter(
    kubernetes.Publisher,
    _service,
    publishing={
        **TAG,
        "context": ("context", "text"),
        "kubeconfig": ("kubeconfig", "text"),
        "selector": ("label_selector", "text"),
        "accept": ("accept", "text"),
        "timeout": ("timeout", "seconds"),
    },
)
