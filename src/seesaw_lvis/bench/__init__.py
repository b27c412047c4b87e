"""Benchmarks (``python -m seesaw_lvis bench <what>``), written to ``reports/bench/<what>.json``."""
from __future__ import annotations

import platform
import resource
import time
from typing import Callable, Dict, Mapping, Optional


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


def device_name(device: str = "cpu") -> str:
    """The GPU's name for a CUDA device, else the CPU's model name."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def time_interleaved(calls: Mapping[str, Callable[[], object]], repeats: int, warmup: int,
                     sync: Optional[Callable[[], None]] = None) -> Dict[str, list]:
    """Seconds of each call, ``repeats`` times, the calls interleaved round-robin (a drift of
    the machine hits all alike) after ``warmup`` rounds; ``sync`` (e.g. CUDA's) around each."""
    def one(fn) -> float:
        if sync:
            sync()
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        return time.perf_counter() - t0

    for _ in range(warmup):
        for fn in calls.values():
            fn()
    times: Dict[str, list] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            times[name].append(one(fn))
    return times
