"""What a ZooKeeper node holds: the project's one record format (``host:port`` or a JSON document)."""

from __future__ import annotations

from ..errors import DiscoveryError, InvalidInstanceError
from ..instance import Instance, format_record, parse_record

_MAX_DATA_SHOWN = 200  # characters of a malformed node's data quoted in the log


class InvalidNodeError(DiscoveryError, ValueError):
    """A node's data is neither ``host:port`` nor an instance document."""


def parse_node(data: bytes | None) -> Instance:
    """An instance from a node's data: ``host:port`` or a JSON document.

    The document: ``{"host": ..., "port": ..., "weight": 1, "priority": 0, "tags": [...],
    "metadata": {...}}``; only ``host`` (or Curator's ``address``) and ``port`` are required,
    other keys are ignored (the format every registry backend shares: ``parse_record``).

    >>> parse_node(b'{"host": "10.0.0.5", "port": 8080, "weight": 3}').weight
    3
    """
    if not data:
        raise InvalidNodeError("the node has no data")
    try:
        return parse_record(data)
    except InvalidInstanceError as error:
        raise InvalidNodeError(error.reason) from None


def encode_instance(instance: Instance) -> bytes:
    """A node's data for ``instance``: plain ``host:port`` when that says it all, else a JSON document."""
    return format_record(instance, plain=True).encode()


def shown(data: bytes | None) -> str:
    """A node's data for a log line: text as is (cut short), other bytes escaped."""
    if data is None:
        return ""
    text = data.decode("utf-8", errors="backslashreplace")
    return text if len(text) <= _MAX_DATA_SHOWN else text[:_MAX_DATA_SHOWN] + "..."
