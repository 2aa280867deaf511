"""The library's default structlog logger, routed through the stdlib logger ``loadbalancer``.

structlog's unconfigured default prints to stdout, which a library must not do unasked.
Events here go to ``logging.getLogger("loadbalancer")`` instead, so they follow the
application's logging setup; fields travel in ``extra`` for structured handlers and are
also appended to the message as ``key=value`` so that plain logging shows them.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

import structlog

# LogRecord attributes that ``extra`` must not overwrite.
_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def _to_log_kwargs(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
    event = event_dict.pop("event")
    exc_info = event_dict.pop("exc_info", None)
    fields = " ".join(
        f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}" for key, value in event_dict.items()
    )
    extra = {(f"{key}_" if key in _RESERVED else key): value for key, value in event_dict.items()}
    extra["event"] = event
    kwargs: dict[str, Any] = {"msg": f"{event} {fields}" if fields else event, "extra": extra}
    if exc_info:
        kwargs["exc_info"] = exc_info
    return kwargs


def get_logger(logger: Any = None, **context: Any) -> Any:
    """Return ``logger`` (any structlog-style bound logger) or the default one, bound to ``context``."""
    if logger is None:
        logger = structlog.wrap_logger(
            logging.getLogger("loadbalancer"),
            processors=[structlog.stdlib.filter_by_level, _to_log_kwargs],
            wrapper_class=structlog.stdlib.BoundLogger,
        )
    return logger.bind(**context) if context else logger
