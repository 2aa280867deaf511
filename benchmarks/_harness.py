"""Shared timing helpers for the benchmark scripts (not part of the library).

Every figure is a ratio against a baseline measured in the same run: the cases of one
comparison are measured in turn, in a rotating order, many times over, so that machine
noise hits baseline and subject alike. A comparison's ratio is the median of the per-round
ratios (subject / baseline of the same round); the times shown are the best round.
The garbage collector is off while a sample is taken, as in ``timeit``.
"""

from __future__ import annotations

import gc
import statistics
import time
import timeit
from collections.abc import Callable

Sampler = Callable[[int], float]
"""Runs an operation ``n`` times and returns the seconds per operation."""


def fmt(seconds: float) -> str:
    for unit, scale in (("ns", 1e-9), ("µs", 1e-6), ("ms", 1e-3)):
        if seconds < 1000 * scale:
            return f"{seconds / scale:7.1f} {unit}"
    return f"{seconds:7.2f} s "


def no_gc(sampler: Sampler) -> Sampler:
    def run(n: int) -> float:
        enabled = gc.isenabled()
        gc.disable()
        try:
            return sampler(n)
        finally:
            if enabled:
                gc.enable()

    return run


def stmt_sampler(stmt: str, unroll: int = 20, **names: object) -> Sampler:
    """Time ``stmt`` with ``names`` bound as locals, repeated ``unroll`` times per loop pass
    (so the ``for`` loop's own cost is spread over ``unroll`` operations)."""
    setup = "; ".join(f"{name} = __names[{name!r}]" for name in names) or "pass"
    timer = timeit.Timer("; ".join([stmt] * unroll), setup=setup, globals={"__names": names})
    return lambda n: timer.timeit(max(1, n // unroll)) / (max(1, n // unroll) * unroll)


def calibrate(sampler: Sampler, seconds: float) -> int:
    """How many operations make one sample last about ``seconds``."""
    n = 1
    while True:
        spent = sampler(n) * n
        if spent >= seconds / 4 or n >= 1 << 30:
            return max(1, int(n * seconds / max(spent, 1e-9)))
        n *= 4


def interleave(
    cases: dict[str, Sampler], rounds: int, seconds: float = 0.03, keep_gc: tuple[str, ...] = ()
) -> dict[str, list[float]]:
    """Take ``rounds`` samples of every case, rotating the order from round to round
    (the collector is off during each sample except for the cases named in ``keep_gc``)."""
    cases = {name: sampler if name in keep_gc else no_gc(sampler) for name, sampler in cases.items()}
    counts = {name: calibrate(sampler, seconds) for name, sampler in cases.items()}
    names = list(cases)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(cases[name](counts[name]))
    return samples


class Comparison:
    """The outcome of subject vs baseline over paired rounds."""

    def __init__(self, baseline: list[float], subject: list[float]) -> None:
        self.baseline = min(baseline)
        self.subject = min(subject)
        ratios = sorted(s / b for s, b in zip(subject, baseline, strict=True))
        self.ratio = statistics.median(ratios)
        self.low, self.high = ratios[0], ratios[-1]
        self.rounds = len(ratios)


def report(
    title: str,
    base_label: str,
    baseline: list[float],
    subj_label: str,
    subject: list[float],
    goal: float | None = None,
    goal_text: str | None = None,
    width: int = 44,
) -> Comparison:
    """Print baseline, subject, ratio, goal and PASS/MISS (``goal`` is a maximum ratio)."""
    c = Comparison(baseline, subject)
    print(title)
    print(f"    baseline  {base_label:<{width}}{fmt(c.baseline)}")
    print(f"    subject   {subj_label:<{width}}{fmt(c.subject)}")
    line = f"    ratio     {c.ratio:6.3g}x  (median of {c.rounds} rounds, range {c.low:.3g}-{c.high:.3g})"
    if goal is None:
        print(f"{line}   (information)")
    else:
        verdict = "PASS" if c.ratio <= goal else "MISS"
        print(f"{line}   goal {goal_text or f'<= {goal:g}x'}   {verdict}")
    return c


def header(text: str) -> float:
    import platform
    import sys

    print(f"== {text}   (Python {sys.version.split()[0]}, {platform.machine()}; times: best round)")
    return time.perf_counter()


def footer(started: float) -> None:
    print(f"== done in {time.perf_counter() - started:.1f} s")
