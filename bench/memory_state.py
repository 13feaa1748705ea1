"""The machine's memory state, measured and (optionally) controlled for the benchmarks.

Not a test. On the VMs this project runs on (Firecracker, ``virtio_balloon`` with free page
reporting, ``page_reporting_order=5``), memory a process frees is handed back to the host
within about a second, and the next process that touches it pays the host's page faults
again: 2-8.5 s per GiB, varying with the host. A tool that holds the whole input (MLflow's
pandas read: 3-6 GB at 5-10M rows) pays that on every run; a streaming one barely does. So
every ratio against such a tool depends on this state, and the benchmarks record it:

* :func:`probe` times touching fresh memory in a new process after the machine has had
  time to hand freed memory back (seconds per GiB: ~0.1 on an ordinary machine);
* :func:`kept_memory` turns free page reporting off for the duration (the kernel's own
  ``page_reporting_order`` parameter, root only, restored afterwards) and touches enough
  memory once, so that every tool then runs on memory the guest already owns, as on an
  ordinary machine or VM.

Usage::

    python -m bench.memory_state            # print the state and one probe
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: The kernel's free page reporting knob (virtio_balloon); absent on machines without it.
REPORTING_ORDER = Path("/sys/module/page_reporting/parameters/page_reporting_order")
REPORTED_KIB = Path("/sys/module/page_reporting/parameters/reported_kib")
#: Above the buddy allocator's largest order (10 on x86-64): no free block qualifies, so
#: nothing is reported to the host.
REPORTING_OFF = 11
#: Freed memory is reported within about a second here; wait this long so a probe or a
#: tool never reuses memory another process has just freed.
SETTLE_S = 2.0

TOUCH = """
import sys, time, numpy as np
t = time.perf_counter()
a = np.ones(int(float(sys.argv[1]) * (1 << 30)) // 8)
print(time.perf_counter() - t)
"""


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def touch(gib: float) -> float:
    """Seconds a fresh process takes to touch ``gib`` GiB (filled with ones, then freed)."""
    out = subprocess.run(
        [sys.executable, "-c", TOUCH, str(gib)], check=True, capture_output=True, text=True
    )
    return float(out.stdout.strip())


def settle(poll_s: float = SETTLE_S, limit_s: float = 180.0) -> float:
    """Wait until the kernel has reported the free memory it is going to report (its counter
    still for one poll); the seconds waited. After reporting was off, the guest holds gigabytes
    of free memory that go back to the host over the next tens of seconds: a tool started
    before then would run partly on kept memory."""
    start = time.monotonic()
    last = _read(REPORTED_KIB)
    while True:
        time.sleep(poll_s)
        now = _read(REPORTED_KIB)
        if now == last or time.monotonic() - start > limit_s:
            return time.monotonic() - start
        last = now


def probe(gib: float = 1.0) -> dict[str, Any]:
    """The memory state now: reporting order and seconds per GiB of freshly touched memory."""
    reporting = _read(REPORTING_ORDER) not in (None, str(REPORTING_OFF))
    waited = settle() if reporting else 0.0
    seconds = touch(gib)
    if reporting:  # what the probe freed is handed back before the next tool starts
        settle()
    return {
        "page_reporting_order": _read(REPORTING_ORDER),
        "reported_kib": _read(REPORTED_KIB),
        "touch_s_per_gib": round(seconds / gib, 3),
        "settled_s": round(waited, 1),
    }


@contextmanager
def kept_memory(gib: float) -> Iterator[dict[str, Any]]:
    """Free page reporting off and ``gib`` GiB touched once; restored on exit.

    Raises ``PermissionError`` when the knob exists but is not writable (not root); on a
    machine without free page reporting only the touch is done.
    """
    before = _read(REPORTING_ORDER)
    if before is not None:
        REPORTING_ORDER.write_text(str(REPORTING_OFF))
        log.info("page_reporting_order %s -> %s for the benchmark", before, REPORTING_OFF)
    try:
        first = touch(gib)
        yield {"page_reporting_order_before": before, "pretouch_s": round(first, 2)}
    finally:
        if before is not None:
            REPORTING_ORDER.write_text(before)
            log.info("page_reporting_order restored to %s", before)
            # Reporting is driven by frees: free something so the kernel walks its free
            # lists again and hands the kept gigabytes back, then wait until it is done.
            touch(0.25)
            settle(poll_s=3.0)


def main() -> None:
    """Print the machine's memory state and one probe as JSON."""
    print(json.dumps(probe()))


if __name__ == "__main__":
    main()
