"""The library's default structlog logger, routed through the stdlib logger ``loadbalancer``.

structlog's unconfigured default prints to stdout, which a library must not do unasked.
Events here go to stdlib loggers under ``loadbalancer`` instead (one per backend or piece:
``loadbalancer.etcd``, ``loadbalancer.dnssrv``, ``loadbalancer.retry``, ...), so they follow
the application's logging setup and levels can be set per backend; each record names the
library's module and line that logged it, not structlog's; fields travel in ``extra`` for structured handlers and are
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
    # stacklevel: skip structlog's two frames, so the record names the library's own line
    kwargs: dict[str, Any] = {"msg": f"{event} {fields}" if fields else event, "extra": extra, "stacklevel": 4}
    if exc_info:
        kwargs["exc_info"] = exc_info
    return kwargs


def logger_name(module: str) -> str:
    """The stdlib logger a module logs to: its package path without private parts.

    ``loadbalancer.etcd._publisher`` -> ``loadbalancer.etcd``; ``loadbalancer.retry`` stays.
    """
    parts = [part for part in module.split(".") if not part.startswith("_")]
    return ".".join(parts) if parts and parts[0] == "loadbalancer" else "loadbalancer"


def get_logger(logger: Any = None, *, name: str = "loadbalancer", **context: Any) -> Any:
    """Return ``logger`` (any structlog-style bound logger) or the default one, bound to ``context``.

    ``name``: the module logging (``__name__``); the default logger writes to its stdlib
    logger (see ``logger_name``).
    """
    if logger is None:
        logger = structlog.wrap_logger(
            logging.getLogger(logger_name(name)),
            processors=[structlog.stdlib.filter_by_level, _to_log_kwargs],
            wrapper_class=structlog.stdlib.BoundLogger,
        )
    return logger.bind(**context) if context else logger
