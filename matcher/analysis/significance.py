"""When is a difference between two runs more than noise? Standard errors of summary figures.

A replay is one draw of a random world (acceptances, cancels, GPS, faults), so two
policies differ by chance as well as by design. Each figure of summary.json that has a
sampling model gets a standard error (SE) from its own run:

counts of requests (``completed``, ``cancelled``, ``expired``) and ``served_rate``
    binomial over the run's requests: SE = sqrt(n p (1 - p)) (a share: divided by n).
``declines``
    Poisson: SE = sqrt(count).
means (``wait_s.mean``, ...)
    standard deviation / sqrt(n) of the values the mean is taken over.
percentiles (``wait_s.p90``, ...)
    distribution-free, from order statistics: the 95 % interval of the p-quantile of n
    values lies between the values of rank n p -/+ 1.96 sqrt(n p (1 - p)); SE = its width / 3.92
    (none when those ranks fall outside the sample).

Two runs differ *beyond noise* when their difference exceeds :data:`Z` combined SEs,
sqrt(se_a^2 + se_b^2) (about a 95 % two-sided test, conservative for runs that share a
seed and a trace). Figures without a sampling model (tick latency, wall-clock speedup,
utilization, border share) never count as a difference beyond noise.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from matcher.analysis.summary_text import get_path

Z = 2.0
MIN_VALUES = 10  # fewer values than this: no SE for their mean or percentiles
_COUNT_KEYS = ("completed", "cancelled", "expired")
# figure -> (request-table column, filter on the table) for means and percentiles
_VALUES = {
    "wait_s": ("wait_s", pl.col("outcome") == "completed"),
    "match_delay_s": ("match_delay_s", None),
    "pickup_eta_s": ("pickup_eta_s", None),
    "pickup_distance_m": ("pickup_distance_m", None),
}
REQUEST_COLUMNS = ["outcome", "wait_s", "match_delay_s", "pickup_eta_s", "pickup_distance_m"]


def _values(requests: pl.DataFrame, column: str, where) -> np.ndarray:
    df = requests if where is None else requests.filter(where)
    a = df[column].drop_nulls().cast(pl.Float64).to_numpy()
    return np.sort(a[np.isfinite(a)])


def quantile_se(sorted_values: np.ndarray, p: float) -> float | None:
    """SE of the p-quantile (0 < p < 1) from the order-statistic 95 % interval; None when the
    interval's ranks fall outside the sample (too few values for this quantile)."""
    n = sorted_values.size
    half = 1.96 * math.sqrt(n * p * (1 - p))
    lo, hi = math.floor(n * p - half), math.ceil(n * p + half)
    if n < MIN_VALUES or lo < 0 or hi > n - 1:
        return None
    return float(sorted_values[hi] - sorted_values[lo]) / 3.92


def standard_errors(summary: dict, requests: pl.DataFrame | None) -> dict[str, float]:
    """SE of every figure of ``summary`` that has a sampling model (module docstring), keyed by
    its dotted path (``"wait_s.p90"``). ``requests`` (columns :data:`REQUEST_COLUMNS` of the
    run's request table) is needed for means and percentiles; without it they get none."""
    se: dict[str, float] = {}
    n = summary.get("requests") or 0
    if n:
        for key in _COUNT_KEYS:
            k = summary.get(key)
            if isinstance(k, (int, float)):
                p = k / n
                se[key] = math.sqrt(n * p * (1 - p))
        rate = summary.get("served_rate")
        if isinstance(rate, (int, float)):
            se["served_rate"] = math.sqrt(rate * (1 - rate) / n)
    if isinstance(summary.get("declines"), (int, float)):
        se["declines"] = math.sqrt(summary["declines"])
    if requests is None:
        return se
    for name, (column, where) in _VALUES.items():
        if column not in requests.columns:
            continue
        v = _values(requests, column, where)
        if v.size >= MIN_VALUES:
            se[f"{name}.mean"] = float(v.std(ddof=1) / math.sqrt(v.size))
            for q in (50, 90, 95):
                s = quantile_se(v, q / 100)
                if s is not None:
                    se[f"{name}.p{q}"] = s
    return se


def beyond_noise(a: float, se_a: float | None, b: float, se_b: float | None) -> bool:
    """True when a and b differ by more than :data:`Z` combined standard errors."""
    if se_a is None or se_b is None:
        return False
    return abs(a - b) > Z * math.hypot(se_a, se_b)


def best_index(values: list, ses: list, direction: int) -> int | None:
    """Index of the value that is best (``direction`` +1: highest, -1: lowest) beyond noise
    against every other value; None when no value is, or any value or SE is missing."""
    if direction == 0 or len(values) < 2 or any(not isinstance(v, (int, float)) for v in values):
        return None
    if any(s is None for s in ses):
        return None
    i = int(np.argmax(values) if direction > 0 else np.argmin(values))
    others = [j for j in range(len(values)) if j != i]
    if all(beyond_noise(values[i], ses[i], values[j], ses[j]) for j in others):
        return i
    return None


# (figure, words, "rel": relative change in % / "pts": difference in percentage points)
HEADLINE = (
    ("wait_s.mean", "mean wait", "rel"),
    ("served_rate", "served", "pts"),
    ("pickup_eta_s.mean", "pickup ETA", "rel"),
    ("cancelled", "cancelled", "rel"),
    ("expired", "expired", "rel"),
)


def headline(label: str, summary: dict, se: dict, base_label: str, base: dict, base_se: dict) -> str:
    """One sentence: ``"batch-2s against greedy: mean wait -18%, served +2.5 points, ..."``,
    each change marked ``(within noise)`` when it is not beyond noise."""
    parts = []
    for key, words, kind in HEADLINE:
        v, b = get_path(summary, key), get_path(base, key)
        if not isinstance(v, (int, float)) or not isinstance(b, (int, float)):
            continue
        if v == b:
            parts.append(f"{words} unchanged")
            continue
        if kind == "pts":
            text = f"{words} {(v - b) * 100:+.1f} points"
        elif b == 0:
            text = f"{words} {v:,g} against 0"
        else:
            text = f"{words} {(v / b - 1) * 100:+.0f}%"
        if not beyond_noise(v, se.get(key), b, base_se.get(key)):
            text += " (within noise)"
        parts.append(text)
    if not parts:
        return f"{label} against {base_label}: no figure to compare."
    return f"{label} against {base_label}: " + ", ".join(parts) + "."
