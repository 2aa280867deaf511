"""What an etcd value says about an instance: ``"host:port"`` or a JSON document."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidInstanceError
from ..instance import Instance, parse_instance

__all__ = ["encode_value", "parse_value"]


def parse_value(raw: bytes) -> Instance:
    """The instance a value describes; ``InvalidInstanceError`` (a ``ValueError``) if it is malformed.

    - ``host:port`` (``[v6addr]:port`` for IPv6), surrounding white space ignored;
    - a JSON object: ``host`` and ``port`` required; ``weight`` (default 1) and ``priority``
      (default 0) non-negative integers; ``tags`` a list of strings; ``metadata`` an object
      of strings; ``name`` (the service's name) and any other member are ignored.
    """
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise InvalidInstanceError(raw, "the value is not UTF-8") from None
    if not text:
        raise InvalidInstanceError(text, "the value is empty")
    if not text.startswith("{"):
        return parse_instance(text)
    try:
        document = json.loads(text)
    except ValueError as error:
        raise InvalidInstanceError(text, f"not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise InvalidInstanceError(text, "the JSON value is not an object")
    return _from_document(document, text)


def _from_document(document: dict[str, Any], text: str) -> Instance:
    host, port = document.get("host"), document.get("port")
    if not isinstance(host, str) or not host:
        raise InvalidInstanceError(text, "'host' must be a non-empty string")
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if isinstance(port, str) and port.isascii() and port.isdigit():
        port = int(port)
    if isinstance(port, bool) or not isinstance(port, int):
        raise InvalidInstanceError(text, "'port' must be an integer")
    tags = document.get("tags", ())
    if not isinstance(tags, list | tuple) or not all(isinstance(tag, str) for tag in tags):
        raise InvalidInstanceError(text, "'tags' must be a list of strings")
    metadata = document.get("metadata", {})
    if not isinstance(metadata, Mapping) or not all(isinstance(v, str) for v in metadata.values()):
        raise InvalidInstanceError(text, "'metadata' must be an object whose values are strings")
    attributes: dict[str, Any] = {"tags": tuple(tags), "metadata": metadata}
    for name, default in (("weight", 1), ("priority", 0)):
        number = document.get(name, default)
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            raise InvalidInstanceError(text, f"{name!r} must be a non-negative integer, got {number!r}")
        attributes[name] = number
    try:
        return Instance(host, port, **attributes)
    except InvalidInstanceError as error:
        raise InvalidInstanceError(text, error.reason) from None


def encode_value(instance: Instance, name: str | None = None) -> str:
    """The JSON document ``parse_value`` reads back as ``instance`` (defaults left out, keys sorted)."""
    document: dict[str, Any] = {"host": instance.host, "port": instance.port}
    if name is not None:
        document["name"] = name
    if instance.weight != 1:
        document["weight"] = instance.weight
    if instance.priority != 0:
        document["priority"] = instance.priority
    if instance.tags:
        document["tags"] = list(instance.tags)
    if instance.metadata:
        document["metadata"] = dict(instance.metadata)
    return json.dumps(document, sort_keys=True, separators=(",", ":"))
