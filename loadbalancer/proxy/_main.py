"""``loadbalancer proxy``: parse and check the flags, then hand over to the supervisor."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from ._flags import UsageError, build_parser, check

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``loadbalancer proxy`` with ``argv``; return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        check(args)
    except (UsageError, ValueError) as error:
        print(f"loadbalancer proxy: error: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(process)d %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    from ._supervisor import supervise

    try:
        return supervise(args)
    except KeyboardInterrupt:
        return 130
