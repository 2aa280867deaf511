"""``zk://h1:2181,h2:2181/services/api``: the children of a ZooKeeper path (``?chroot=/apps`` under a chroot)."""

from __future__ import annotations

from typing import Any

from .. import zookeeper
from ._adapter import TAG, Adapter
from ._target import Options, Target, tls_config

__all__ = ["ADAPTER"]


def _path(target: Target, options: dict[str, Any], registering: bool) -> dict[str, Any]:
    if not target.path.strip("/"):
        raise target.error("no path: write zk://127.0.0.1:2181/services/api")
    return {"path": target.path}


def _common(target: Target, query: Options) -> dict[str, Any]:
    if target.userinfo is not None:
        raise target.error("ZooKeeper targets take no user:password@ (pass a configured client= instead)")
    chroot = query.text("chroot")
    if chroot is not None and not chroot.startswith("/"):
        raise target.error(f"option chroot={chroot!r}: an absolute path, such as /apps")
    servers = ",".join(target.hosts) or ("127.0.0.1:2181" if chroot else None)
    return {
        "endpoints": None if servers is None else servers + (chroot or ""),
        "session_timeout": query.seconds("session_timeout"),
        "timeout": query.seconds("timeout"),
        "tls": tls_config(query),
    }


ADAPTER = Adapter(zookeeper.Publisher, _path, _common, TAG, zookeeper.Registrar, {})  # the session is the lease
