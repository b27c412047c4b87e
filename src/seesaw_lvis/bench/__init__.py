"""Benchmarks (``python -m seesaw_lvis bench <what>``), written to ``reports/bench/<what>.json``."""
from __future__ import annotations

import resource


def peak_rss_mb() -> float:
    """This process's own peak resident memory, MB: ``VmHWM`` of ``/proc/self/status``.

    Not ``getrusage().ru_maxrss``: on Linux it survives ``exec``, so a child started by a large
    parent (a test session, a bench that generated GBs of inputs) reports at least the parent's
    peak (measured: a 9 MB child of a 411 MB parent read 411 MB). ``ru_maxrss`` only where
    there is no ``/proc``."""
    try:
        with open("/proc/self/status") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):  # pragma: no cover - not Linux
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux, bytes on macOS
    return kb / 1024.0
