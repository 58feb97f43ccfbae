"""Thread-pool limits for every benchmark: imported by bench.run before numpy.

All figures are about our own code on one core (or on the shard actors), so
BLAS/OpenMP pools are held to one thread: with threadpoolctl when it is
installed, else with the environment variables the pools read at import time
(which is why this module must run before the first ``import numpy``; Ray
workers started later inherit them too).
"""

from __future__ import annotations

import os
import sys

THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)

NUMPY_WAS_IMPORTED = "numpy" in sys.modules
for _v in THREAD_VARS:
    os.environ[_v] = "1"

try:  # pragma: no cover - depends on the environment
    from threadpoolctl import threadpool_limits as _limits

    _limits(1)
    METHOD = "threadpoolctl"
except ImportError:
    METHOD = "env vars (threadpoolctl not installed)" + (
        " - numpy was imported first: may not apply" if NUMPY_WAS_IMPORTED else ""
    )
