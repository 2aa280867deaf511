"""``static:///10.0.0.1:80,10.0.0.2:80``: a fixed list."""

from __future__ import annotations

from typing import Any

from .. import static
from ..errors import InvalidInstanceError
from ..instance import parse_instance
from ._adapter import Adapter
from ._target import Target

__all__ = ["ADAPTER"]


def _instances(target: Target, options: dict[str, Any], registering: bool) -> dict[str, Any]:
    if target.authority:
        raise target.error(f"the instances go in the path: static:///{target.authority}{target.path}")
    listed = [part.strip() for part in target.name.split(",") if part.strip()]
    if not listed:
        raise target.error("no instances: list them as static:///10.0.0.1:80,10.0.0.2:80")
    try:
        return {"instances": [parse_instance(instance) for instance in listed]}
    except InvalidInstanceError as error:
        raise target.error(str(error)) from None


ADAPTER = Adapter(static.Publisher, _instances)
