"""Run the three core benchmarks in turn (pick, Retry, set update); about 25 s in all.

Each one can also be run on its own: bench_pick.py, bench_retry.py, bench_update.py.
"""

from __future__ import annotations

import bench_pick
import bench_retry
import bench_update


def main() -> None:
    for module in (bench_pick, bench_retry, bench_update):
        module.main()


if __name__ == "__main__":
    main()
