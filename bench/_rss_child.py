"""Child process of peak_rss_mb_replay_1m: one inprocess replay, then its own peak RSS.

``python -m bench._rss_child TRACE DRIVERS OUT`` prints one JSON line on stdout:
{"maxrss_mb": ..., "wall_s": ..., "summary": {...}}; progress goes to stderr.

The peak is the kernel's high-water mark of this process image (``VmHWM`` in
/proc/self/status). Not ``ru_maxrss``: Linux carries it across fork and exec, so
a child of a big parent (the bench runner after the metro replay) reports the
parent's size, not its own (measured: 3,005 MB against a real 1,041 MB).
"""

from __future__ import annotations

import dataclasses
import json
import resource
import sys
import time

from . import _threads  # noqa: F401  (thread limits before numpy)


def _vm_hwm_kb() -> int:
    """Peak resident set of this process image, KiB (Linux); ru_maxrss where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main(argv: list[str]) -> int:
    trace, drivers, out = argv
    from .replay import _config, _replay

    cfg = _config(trace, out, "--drivers", drivers, "--shards", "1", "--backend", "inprocess")
    cfg = dataclasses.replace(cfg, quiet=False, label="1M replay")  # keep the progress bar (stderr)
    t0 = time.perf_counter()
    summary, _ = _replay(cfg)
    wall = time.perf_counter() - t0
    maxrss_kb = _vm_hwm_kb()
    keep = ("requests", "drivers", "served_rate", "sim_seconds", "wall_seconds", "tick_ms", "ticks")
    print(json.dumps({"maxrss_mb": maxrss_kb / 1024, "wall_s": wall, "summary": {k: summary.get(k) for k in keep}}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
