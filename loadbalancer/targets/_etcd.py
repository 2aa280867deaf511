"""``etcd://h1:2379,h2:2379/services/api``: the path is the key prefix; etcdctl's environment fills the gaps.

Where the target is silent, the variables ``etcdctl`` reads are used: ``ETCDCTL_ENDPOINTS``
(when the authority is empty), ``ETCDCTL_USER`` (``user:password``, or the user with
``ETCDCTL_PASSWORD``), ``ETCDCTL_CACERT``, ``ETCDCTL_CERT``, ``ETCDCTL_KEY`` and
``ETCDCTL_INSECURE_SKIP_TLS_VERIFY`` (any of them, or ``?tls=true``, means https).
"""

from __future__ import annotations

import os
from typing import Any

from .. import etcd
from ._adapter import TAG, TTL, Adapter
from ._target import Options, Target, tls_config

__all__ = ["ADAPTER"]


def _prefix(target: Target, options: dict[str, Any], registering: bool) -> dict[str, Any]:
    if not target.path.strip("/"):
        raise target.error("no key prefix: write etcd://127.0.0.1:2379/services/api")
    return {"prefix": target.path}


def _common(target: Target, query: Options) -> dict[str, Any]:
    env = os.environ
    endpoints = target.hosts or [h for h in env.get("ETCDCTL_ENDPOINTS", "").split(",") if h.strip()] or None
    tls = tls_config(
        query,
        {
            "cacert": env.get("ETCDCTL_CACERT"),
            "cert": env.get("ETCDCTL_CERT"),
            "key": env.get("ETCDCTL_KEY"),
            "insecure": env.get("ETCDCTL_INSECURE_SKIP_TLS_VERIFY"),
        },
    )
    user, password = target.userinfo or _env_user()
    return {
        "endpoints": endpoints,
        "namespace": query.text("namespace"),
        "timeout": query.seconds("timeout"),
        "tls": tls,
        "username": user,
        "password": password,
    }


def _env_user() -> tuple[str | None, str | None]:
    """``ETCDCTL_USER`` as etcdctl reads it: ``user:password``, or the user with ``ETCDCTL_PASSWORD``."""
    user = os.environ.get("ETCDCTL_USER")
    if not user:
        return None, None
    name, colon, password = user.partition(":")
    return name, password if colon else os.environ.get("ETCDCTL_PASSWORD")


ADAPTER = Adapter(etcd.Publisher, _prefix, _common, TAG, etcd.Registrar, TTL)
