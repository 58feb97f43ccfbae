"""Child process of area_speedup_2_tasks: one replay in a fresh interpreter, so that each of the
benchmark's runs (in process, an embedded Ray, a running head) starts from the same state.

``python -m bench._area_child TRACE DRIVERS OUT [replay options...]`` prints one JSON line on
stdout: {"wall_s": ..., "cpu_s": ..., "summary": {...}}. ``wall_s`` and ``cpu_s`` (this
process's CPU) are taken around ``run_replay``: load, split, connect to or start Ray, the
areas, merge and summary; not the interpreter's start-up and imports.
"""

from __future__ import annotations

import json
import sys
import time

from . import _threads  # noqa: F401  (thread limits before numpy)


def main(argv: list[str]) -> int:
    trace, drivers, out, *args = argv
    from .replay import _config, _replay

    cfg = _config(trace, out, "--drivers", drivers, *args)
    c0 = time.process_time()
    summary, wall = _replay(cfg)
    print(json.dumps({"wall_s": wall, "cpu_s": time.process_time() - c0, "summary": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
