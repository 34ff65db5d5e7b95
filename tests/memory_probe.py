"""Peak resident memory of a piece of work, measured in the process that runs it: the kernel's high-water mark
(Linux), reset just before the work, so that imports and earlier allocations do not count."""
from __future__ import annotations

from typing import Callable


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith(field + ":"))


def peak_bytes(work: Callable[[], object]) -> int:
    """How far resident memory rose above its level at the start while `work` ran."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # resets VmHWM to the current resident size
    before = _status_kib("VmRSS")
    work()
    return (_status_kib("VmHWM") - before) * 1024
