"""What an etcd value says about an instance: ``"host:port"`` or a JSON document.

The format is the one every registry backend shares (``loadbalancer.instance.parse_record``).
"""

from __future__ import annotations

from ..instance import Instance, format_record, parse_record

__all__ = ["encode_value", "parse_value"]


def parse_value(raw: bytes) -> Instance:
    """The instance a value describes; ``InvalidInstanceError`` (a ``ValueError``) if it is malformed.

    - ``host:port`` (``[v6addr]:port`` for IPv6), surrounding white space ignored;
    - a JSON object: ``host`` and ``port`` required; ``weight`` (default 1) and ``priority``
      (default 0) non-negative integers; ``tags`` a list of strings; ``metadata`` an object
      of strings; ``name`` (the service's name) and any other member are ignored.
    """
    return parse_record(raw)


def encode_value(instance: Instance, name: str | None = None) -> str:
    """The JSON document ``parse_value`` reads back as ``instance`` (defaults left out, keys sorted)."""
    return format_record(instance, name=name)
