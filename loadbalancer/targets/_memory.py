"""``memory:///api``: the process's in-memory registry (``backend=`` to use another ``memory.Backend``)."""

from __future__ import annotations

from typing import Any

from .. import memory
from ._adapter import Adapter
from ._target import Target

__all__ = ["ADAPTER"]


def _service(target: Target, options: dict[str, Any], registering: bool) -> dict[str, Any]:
    if target.authority:
        raise target.error(f"memory targets take no authority: write memory:///{target.name or 'api'}")
    if not target.name or "/" in target.name:
        raise target.error(f"service {target.name!r}: write one name, as in memory:///api")
    return {"backend": options.pop("backend", None) or memory.default_backend(), "service": target.name}


ADAPTER = Adapter(memory.Publisher, _service, registrar_class=memory.Registrar)
