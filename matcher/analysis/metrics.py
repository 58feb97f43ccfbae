"""The figures of OUT/summary.json, recomputed from the event log (docs/run-output.md).

Everything here is a pure function of ``OUT/events/`` (plus ``OUT/ticks.parquet``
for ``tick_ms`` and the run meta for the few figures the log cannot know), so an
analyst can recompute every number with polars, DuckDB or Spark. The exact
definitions:

Ordering
    Events are ordered by ``(ts, seq)``. "Before"/"after" below mean in that order.

Requests and outcomes
    ``requests``   distinct ``request_id`` with a ``request`` event.
    A request's *outcome* is the kind of its last terminal event (``dropoff``,
    ``cancel`` or ``expire``); its *end* is that event's ``ts`` and its *end
    driver* that event's ``driver_id``.
    ``completed`` / ``cancelled`` / ``expired``: requests whose outcome is
    ``dropoff`` / ``cancel`` / ``expire``.
    ``served_rate`` = completed / requests (null when there is no request).

Times (seconds, from the millisecond timestamps)
    ``wait_s``         completed requests: ts of the end driver's last ``pickup``
                       before the ``dropoff``, minus ts of the ``request`` event.
    ``match_delay_s``  requests with at least one ``match``: ts of the first
                       ``match`` minus ts of the ``request`` (batching delay included).
    ``pickup_eta_s``, ``pickup_distance_m``  requests picked up (the end driver has
                       a ``pickup`` before the end): the value on that driver's last
                       ``match`` for the request before the pickup.
    Each gives ``mean`` and linear-interpolated percentiles (numpy's default,
    ``numpy.percentile(x, q)``); ``wait_s`` p50/p90/p95, the others p50/p90.
    An empty set gives ``null`` for every statistic (never NaN).

Counts
    ``declines``  number of ``decline`` events (declines and offer timeouts).
    ``matches``   number of ``match`` events (extra key).

Utilization
    busy time = sum over ``accept`` events of (close - accept), where close is
    the first ``decline``/``cancel``/``dropoff`` of the same request and driver
    after the accept (so en route accept -> pickup, or accept -> cancel, plus on
    trip pickup -> dropoff); failing that the request's end if it is after the
    accept; failing that the last event of the log.
    online time = sum over ``driver_online`` events of (next ``driver_online`` or
    ``driver_offline`` of the same driver - online); an interval still open
    closes at the ts of the last event of the log. A driver with no
    ``driver_online`` event has no online time.
    ``utilization`` = busy time / online time (null when online time is 0).

From OUT/ticks.parquet (one row per tick)
    ``tick_ms``   p50, p99 and max of ``wall_ms`` (null when there is no tick).
    ``ticks``     number of ticks; ``fallback_ticks`` ticks with ``fallbacks`` > 0;
    ``border_share`` = sum(deferred) / sum(pending) (null when sum(pending) is 0).

From OUT/shards.parquet (one row per tick and shard) and ticks.parquet
    ``shard_balance`` = max over mean of each shard's total ``solve_ms`` (CPU,
    both rounds) over the run; 1.0 is perfect (null without shards.parquet or
    with no CPU measured). In a run split into areas a shard is (``area``,
    ``shard``): every area has its own shards.
    ``coordinator_solve_share`` = sum(ticks ``coordinator_ms``) / (that +
    sum(shards ``solve_ms``)): the coordinator's share of all solve CPU.
    ``modeled_speedup`` = median over ticks of (``shard_cpu_ms`` +
    ``coordinator_ms``) / ``critical_ms``: what one core per shard would give,
    modelled from the CPU times of this run (ticks with critical_ms > 0).

From the run meta (OUT/run.json, written by the engine)
    ``policy``, ``window_s``, ``shards``, ``seed``, ``label``, ``drivers``,
    ``quarantined``, ``sim_seconds``, ``wall_seconds``. When the meta lacks one:
    ``drivers`` = distinct drivers with a ``driver_online`` event,
    ``quarantined`` = rows of OUT/quarantine.parquet (0 without the file),
    ``sim_seconds`` = last ts - first ts of the log, the others null.
    ``trace``, ``backend``, ``world`` (the preset) and ``settings`` (every option that differs
    from the full world's default, docs/models.md) are copied when the meta has them.

Other extras
    ``requests_per_hour_peak``  the most ``request`` events in one clock hour (UTC).
    ``speedup`` = sim_seconds / wall_seconds.
"""

from __future__ import annotations

import glob
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from matcher.errors import MatcherError
from matcher.io import atomic
from matcher.io.schemas import EVENTS, TERMINAL_KINDS

_EVENT_DTYPES: dict[str, pl.DataType] = dict(pl.from_arrow(EVENTS.empty_table()).schema)
_OUTCOME = {"dropoff": "completed", "cancel": "cancelled", "expire": "expired"}
_CLOSE_KINDS = ("decline", "cancel", "dropoff")


# --- reading ---------------------------------------------------------------------
def events_glob(out_dir: str | os.PathLike) -> str:
    return f"{os.fspath(out_dir)}/events/**/*.parquet"


def scan_events(out_dir: str | os.PathLike, columns: list[str] | None = None) -> pl.LazyFrame:
    """The event log of a run folder as a LazyFrame with exactly the EVENTS columns (or ``columns``).

    Any hive partitioning is accepted: a column kept only in the path is restored,
    columns of the files win over the path, and types are cast to the EVENTS schema.
    """
    return _scan(events_glob(out_dir), out_dir, columns)


def scan_event_partitions(
    out_dir: str | os.PathLike, columns: list[str] | None = None
) -> list[tuple[pl.LazyFrame, int]]:
    """(LazyFrame, rows) of each ``OUT/events/area=NAME/`` partition of a split run (docs/run-output.md),
    in name order; [] for a log that is not partitioned by area. A request's events all lie in
    one partition, so per-request figures can be computed partition by partition."""
    folders = sorted(p for p in (Path(out_dir) / "events").glob("area=*") if p.is_dir())
    parts = []
    for folder in folders:
        files = sorted(folder.glob("*.parquet"))
        if files:
            rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
            parts.append((_scan(f"{os.fspath(folder)}/*.parquet", out_dir, columns), rows))
    return parts


def _scan(pattern: str, out_dir, columns: list[str] | None) -> pl.LazyFrame:
    if not glob.glob(pattern, recursive=True):
        raise MatcherError(f"{out_dir}: no event files (expected {pattern})")
    lf = pl.scan_parquet(pattern, hive_partitioning=True)
    have = lf.collect_schema().names()
    want = columns or list(_EVENT_DTYPES)
    exprs = []
    for name in want:
        dtype = _EVENT_DTYPES[name]
        if name in have:
            exprs.append(pl.col(name).cast(dtype))
        elif EVENTS.field(name).nullable:
            exprs.append(pl.lit(None, dtype=dtype).alias(name))
        else:
            raise MatcherError(f"{out_dir}: the event log has no column {name!r}")
    return lf.select(exprs)


def read_events(out_dir: str | os.PathLike, columns: list[str] | None = None) -> pl.DataFrame:
    """The event log of a run folder (see :func:`scan_events`)."""
    return scan_events(out_dir, columns).collect()


def read_ticks(out_dir: str | os.PathLike) -> pl.DataFrame | None:
    path = Path(out_dir) / "ticks.parquet"
    return pl.read_parquet(path) if path.exists() else None


def read_meta(out_dir: str | os.PathLike) -> dict:
    """OUT/run.json, or {} when the run folder has none."""
    path = Path(out_dir) / "run.json"
    if not path.exists():
        return {}
    with open(path) as f:
        return json.load(f)


# --- per-request view ------------------------------------------------------------
def _seconds(a: pl.Expr, b: pl.Expr) -> pl.Expr:
    return (a - b).dt.total_milliseconds().cast(pl.Float64) / 1000.0


def ordered(events: pl.DataFrame) -> pl.DataFrame:
    """Events sorted by (ts, seq) with ``pos``: the 0-based rank in that order."""
    return events.sort(["ts", "seq"]).with_row_index("pos").with_columns(pl.col("pos").cast(pl.Int64))


def request_table(events: pl.DataFrame) -> pl.DataFrame:
    """One row per request with a ``request`` event (definitions in the module docstring).

    Columns: request_id, request_ts, first_match_ts, outcome (completed | cancelled |
    expired | null), end_ts, end_driver, pickup_ts, pickup_eta_s, pickup_distance_m,
    match_delay_s, wait_s (completed only), time_in_system_s (request -> end).
    """
    ev = events if "pos" in events.columns else ordered(events)
    ev = ev.filter(pl.col("request_id").is_not_null())
    req = ev.filter(pl.col("kind") == "request").group_by("request_id").agg(pl.col("ts").first().alias("request_ts"))
    first_match = (
        ev.filter(pl.col("kind") == "match").group_by("request_id").agg(pl.col("ts").first().alias("first_match_ts"))
    )
    term = (
        ev.filter(pl.col("kind").is_in(TERMINAL_KINDS))
        .group_by("request_id")
        .agg(
            pl.col("kind").last().replace_strict(_OUTCOME).alias("outcome"),
            pl.col("ts").last().alias("end_ts"),
            pl.col("pos").last().alias("end_pos"),
            pl.col("driver_id").last().alias("end_driver"),
        )
        .sort("end_pos")
    )
    pickups = ev.filter((pl.col("kind") == "pickup") & pl.col("driver_id").is_not_null()).select(
        "request_id",
        pl.col("driver_id").alias("end_driver"),
        pl.col("pos").alias("pickup_pos"),
        pl.col("ts").alias("pickup_ts"),
    )
    matches = ev.filter((pl.col("kind") == "match") & pl.col("driver_id").is_not_null()).select(
        "request_id",
        pl.col("driver_id").alias("end_driver"),
        pl.col("pos").alias("match_pos"),
        "pickup_eta_s",
        "pickup_distance_m",
    )
    # the end driver's last pickup before the end, then that driver's last match before the pickup
    picked = (
        term.filter(pl.col("end_driver").is_not_null())
        .pipe(nearest, pickups, "end_pos", "pickup_pos", ["request_id", "end_driver"], "backward")
        .filter(pl.col("pickup_pos").is_not_null())
        .sort("pickup_pos")
        .pipe(nearest, matches, "pickup_pos", "match_pos", ["request_id", "end_driver"], "backward")
        .select("request_id", "pickup_ts", "pickup_eta_s", "pickup_distance_m")
    )
    return (
        req.join(first_match, on="request_id", how="left")
        .join(term.drop("end_pos"), on="request_id", how="left")
        .join(picked, on="request_id", how="left")
        .with_columns(
            _seconds(pl.col("first_match_ts"), pl.col("request_ts")).alias("match_delay_s"),
            pl.when(pl.col("outcome") == "completed")
            .then(_seconds(pl.col("pickup_ts"), pl.col("request_ts")))
            .alias("wait_s"),
            _seconds(pl.col("end_ts"), pl.col("request_ts")).alias("time_in_system_s"),
        )
        .sort("request_ts", "request_id")
    )


def nearest(left: pl.DataFrame, right: pl.DataFrame, left_on: str, right_on: str, by: list[str], strategy: str):
    """Each row of ``left`` joined to the nearest row of ``right`` strictly after it in log order
    (``strategy="forward"``) or strictly before it (``"backward"``), among the rows with the same
    ``by`` keys; positions are ``pos`` values (both frames sorted by them)."""
    return left.join_asof(
        right,
        left_on=left_on,
        right_on=right_on,
        by=by,
        strategy=strategy,
        allow_exact_matches=False,
        check_sortedness=False,
    )


# --- utilization -----------------------------------------------------------------
def busy_time(events: pl.DataFrame, last_ts, requests: pl.DataFrame | None = None) -> float:
    """Busy seconds of the accepts in ``events``; ``last_ts`` is the ts of the log's last event.

    Additive over any split of the log by request: each accept only looks at events
    of its own request.
    """
    ev = events if "pos" in events.columns else ordered(events)
    if requests is None:
        requests = request_table(ev)
    accepts = ev.filter(
        (pl.col("kind") == "accept") & pl.col("driver_id").is_not_null() & pl.col("request_id").is_not_null()
    ).select("request_id", "driver_id", "pos", "ts")
    closes = ev.filter(
        pl.col("kind").is_in(_CLOSE_KINDS) & pl.col("driver_id").is_not_null() & pl.col("request_id").is_not_null()
    ).select("request_id", "driver_id", pl.col("pos").alias("close_pos"), pl.col("ts").alias("close_ts"))
    busy = (
        nearest(accepts, closes, "pos", "close_pos", ["request_id", "driver_id"], "forward")
        .join(requests.select("request_id", "end_ts"), on="request_id", how="left")
        .select(
            _seconds(
                pl.coalesce(
                    pl.col("close_ts"),
                    pl.when(pl.col("end_ts") >= pl.col("ts")).then(pl.col("end_ts")),
                    pl.lit(last_ts),
                ),
                pl.col("ts"),
            ).sum()
        )
        .item()
    )
    return float(busy or 0.0)


def online_time(events: pl.DataFrame, last_ts) -> float:
    """Online seconds of the drivers in ``events`` (needs every shift event of those drivers)."""
    ev = events if "pos" in events.columns else ordered(events)
    online = (
        ev.filter(pl.col("kind").is_in(("driver_online", "driver_offline")) & pl.col("driver_id").is_not_null())
        .select("driver_id", "kind", "pos", "ts")
        .sort("driver_id", "pos")
        .with_columns(
            pl.when(pl.col("driver_id").shift(-1) == pl.col("driver_id")).then(pl.col("ts").shift(-1)).alias("next_ts")
        )
        .filter(pl.col("kind") == "driver_online")
        .select(_seconds(pl.coalesce(pl.col("next_ts"), pl.lit(last_ts)), pl.col("ts")).sum())
        .item()
    )
    return float(online or 0.0)


# --- statistics --------------------------------------------------------------------
def stats(values, percentiles: tuple[int, ...] = (50, 90)) -> dict[str, float | None]:
    """{"mean", "p50", ...} of the non-null, non-NaN values; every entry None for an empty set."""
    if isinstance(values, pl.Series):
        values = values.drop_nulls().cast(pl.Float64).to_numpy()
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    keys = ["mean"] + [f"p{p}" for p in percentiles]
    if arr.size == 0:
        return dict.fromkeys(keys)
    out = {"mean": float(arr.mean())}
    for p, v in zip(percentiles, np.percentile(arr, percentiles)):
        out[f"p{p}"] = float(v)
    return out


def _ratio(num, den) -> float | None:
    return float(num) / float(den) if den else None


def clean_json(obj: Any) -> Any:
    """numpy scalars to Python, NaN/inf to None, recursively (so JSON never holds NaN)."""
    if isinstance(obj, dict):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# --- summary -------------------------------------------------------------------------
def _tick_figures(ticks: pl.DataFrame | None) -> dict:
    if ticks is None or ticks.height == 0 or "wall_ms" not in ticks.columns:
        return {
            "tick_ms": {"p50": None, "p99": None, "max": None},
            "ticks": 0 if ticks is not None else None,
            "fallback_ticks": None,
            "border_share": None,
        }
    wall = ticks["wall_ms"].drop_nulls().cast(pl.Float64).to_numpy()
    wall = wall[~np.isnan(wall)]
    if wall.size:
        p50, p99 = np.percentile(wall, [50, 99])
        tick_ms = {"p50": float(p50), "p99": float(p99), "max": float(wall.max())}
    else:
        tick_ms = {"p50": None, "p99": None, "max": None}
    out = {"tick_ms": tick_ms, "ticks": ticks.height, "fallback_ticks": None, "border_share": None}
    if "fallbacks" in ticks.columns:
        out["fallback_ticks"] = int((ticks["fallbacks"].fill_null(0) > 0).sum())
    if "deferred" in ticks.columns and "pending" in ticks.columns:
        out["border_share"] = _ratio(ticks["deferred"].fill_null(0).sum(), ticks["pending"].fill_null(0).sum())
    return out


def _shard_figures(out_dir: str | os.PathLike, ticks: pl.DataFrame | None) -> dict:
    out = {"shard_balance": None, "coordinator_solve_share": None, "modeled_speedup": None}
    path = Path(out_dir) / "shards.parquet"
    if not path.exists():
        return out
    sh = pl.read_parquet(path)
    keys = ["area", "shard"] if "area" in sh.columns else ["shard"]  # a split run: each area has its own shards
    per = sh.group_by(keys).agg(pl.col("solve_ms").sum())["solve_ms"].to_numpy()
    if per.size and per.mean() > 0:
        out["shard_balance"] = float(per.max() / per.mean())
    if ticks is None or "coordinator_ms" not in ticks.columns:
        return out
    coord = float(ticks["coordinator_ms"].fill_null(0).sum())
    out["coordinator_solve_share"] = _ratio(coord, coord + float(per.sum()))
    crit = ticks.filter(pl.col("critical_ms") > 0)
    if crit.height:
        work = (crit["shard_cpu_ms"] + crit["coordinator_ms"]) / crit["critical_ms"]
        out["modeled_speedup"] = float(work.median())
    return out


def _quarantined(out_dir) -> int:
    path = Path(out_dir) / "quarantine.parquet"
    return pl.scan_parquet(path).select(pl.len()).collect().item() if path.exists() else 0


SUMMARY_COLUMNS = ["seq", "ts", "kind", "request_id", "driver_id", "pickup_eta_s", "pickup_distance_m"]
# A long log is summarized in passes over slices of its requests of about this many
# events, so the summary of a 1M-request run needs memory for one slice, not the log.
SUMMARY_PASS_EVENTS = 1_000_000
_REQUEST_FIGURES = ["outcome", "wait_s", "match_delay_s", "pickup_ts", "pickup_eta_s", "pickup_distance_m"]


def request_slices(events: pl.LazyFrame, n_events: int):
    """The events that name a request, ordered, in slices by a hash of ``request_id``.

    Every per-request figure (and every busy interval) only looks at the events of its
    own request, so the slices give exactly the figures of the whole log.
    """
    passes = max(1, math.ceil(n_events / SUMMARY_PASS_EVENTS))
    named = events.filter(pl.col("request_id").is_not_null())
    for i in range(passes):
        part = named if passes == 1 else named.filter(pl.col("request_id").hash(seed=0) % passes == i)
        yield ordered(part.collect())


def _per_request(
    events: pl.LazyFrame, n_events: int, columns: list[str], last_ts=None, parts=None
) -> tuple[pl.DataFrame, float]:
    """(``columns`` of :func:`request_table` in its row order, busy seconds or 0 without ``last_ts``), slice by slice.

    ``parts`` ((LazyFrame, rows) that each hold all the events of their requests, e.g. the areas
    of a split run) are sliced one by one, so no pass reads the whole log."""
    keep = list(dict.fromkeys(["request_id", "request_ts", *columns]))
    slices, busy_s = [], 0.0
    sources = parts if parts else [(events, n_events)]
    for ev in (s for lf, n in sources for s in request_slices(lf, n)):
        reqs = request_table(ev)
        if last_ts is not None and ev.height:
            busy_s += busy_time(ev, last_ts, reqs)
        slices.append(reqs.select(keep))
        del ev, reqs
    return pl.concat(slices).sort("request_ts", "request_id").select(columns), busy_s


def run_request_table(out_dir: str | os.PathLike, columns: list[str] | None = None) -> pl.DataFrame:
    """:func:`request_table` of a run folder (``columns`` of it, default all), computed in
    slices of :data:`SUMMARY_PASS_EVENTS` events: the same rows, in memory bounded by a slice."""
    lf = scan_events(out_dir, SUMMARY_COLUMNS)
    n_events = lf.select(pl.len()).collect().item()
    if columns is None:
        columns = request_table(ordered(lf.head(0).collect())).columns
    return _per_request(lf, n_events, columns, parts=scan_event_partitions(out_dir, SUMMARY_COLUMNS))[0]


def summarize(out_dir: str | os.PathLike, meta: dict | None = None, events: pl.DataFrame | None = None) -> dict:
    """The summary.json dict of a run folder, recomputed from its events (module docstring).

    ``meta`` is the engine's run meta (the content of OUT/run.json); ``events`` may be
    passed when already loaded (else read from OUT/events/). Memory is bounded by one
    slice of :data:`SUMMARY_PASS_EVENTS` events, whatever the length of the log.
    """
    meta = dict(meta or {})
    # only the columns the figures need: positions, ticks and shards would double the memory
    lf = scan_events(out_dir, SUMMARY_COLUMNS) if events is None else events.lazy().select(SUMMARY_COLUMNS)
    # separate reads on purpose: collect_all would share one scan of every column (measured
    # on the 1M-request log: 767 MB peak against about 650 MB)
    n_events, first_ts, last_ts = (
        lf.select(pl.len(), pl.col("ts").min().alias("first"), pl.col("ts").max().alias("last")).collect().row(0)
    )
    counts = lf.group_by("kind").len().collect()
    count = dict(zip(counts["kind"].to_list(), counts["len"].to_list()))

    parts = scan_event_partitions(out_dir, SUMMARY_COLUMNS) if events is None else None
    reqs, busy_s = _per_request(lf, n_events, _REQUEST_FIGURES, last_ts, parts)
    shifts = ordered(lf.filter(pl.col("kind").is_in(("driver_online", "driver_offline"))).collect())
    online_s = online_time(shifts, last_ts)

    outcomes = reqs["outcome"].value_counts()
    n_out = dict(zip(outcomes["outcome"].to_list(), outcomes["count"].to_list()))
    n_req = reqs.height
    completed = reqs.filter(pl.col("outcome") == "completed")
    picked = reqs.filter(pl.col("pickup_ts").is_not_null())
    tick_table = read_ticks(out_dir)
    ticks = _tick_figures(tick_table)
    shard_figs = _shard_figures(out_dir, tick_table)

    span = (last_ts - first_ts).total_seconds() if n_events else 0.0
    hourly = lf.filter(pl.col("kind") == "request").group_by(pl.col("ts").dt.truncate("1h")).len().collect()
    peak = int(hourly["len"].max()) if hourly.height else 0
    drivers = meta.get("drivers")
    if not isinstance(drivers, (int, float)) or isinstance(drivers, bool):  # absent, or a file name
        drivers = shifts.filter(pl.col("kind") == "driver_online")["driver_id"].n_unique()
    quarantined = meta.get("quarantined")
    if quarantined is None:
        quarantined = _quarantined(out_dir)
    sim_seconds = meta.get("sim_seconds")
    if sim_seconds is None:
        sim_seconds = span
    wall_seconds = meta.get("wall_seconds")

    summary = {
        "policy": meta.get("policy"),
        "window_s": meta.get("window_s"),
        "shards": meta.get("shards"),
        "seed": meta.get("seed"),
        "label": meta.get("label"),
        "requests": n_req,
        "completed": int(n_out.get("completed", 0)),
        "cancelled": int(n_out.get("cancelled", 0)),
        "expired": int(n_out.get("expired", 0)),
        "quarantined": int(quarantined),
        "served_rate": _ratio(n_out.get("completed", 0), n_req),
        "wait_s": stats(completed["wait_s"], (50, 90, 95)),
        "match_delay_s": stats(reqs["match_delay_s"]),
        "pickup_eta_s": stats(picked["pickup_eta_s"]),
        "pickup_distance_m": stats(picked["pickup_distance_m"]),
        "declines": int(count.get("decline", 0)),
        "drivers": int(drivers),
        "utilization": _ratio(busy_s, online_s),
        "tick_ms": ticks["tick_ms"],
        "sim_seconds": float(sim_seconds),
        "wall_seconds": float(wall_seconds) if wall_seconds is not None else None,
        # extras
        "matches": int(count.get("match", 0)),
        "ticks": ticks["ticks"],
        "fallback_ticks": ticks["fallback_ticks"],
        "border_share": ticks["border_share"],
        **shard_figs,
        "requests_per_hour_peak": peak,
        "speedup": _ratio(sim_seconds, wall_seconds),
        "busy_driver_hours": busy_s / 3600.0,
        "online_driver_hours": online_s / 3600.0,
    }
    for key in ("trace", "backend", "world", "settings"):  # passed through from the meta when present
        if meta.get(key) is not None:
            summary[key] = meta[key]
    return clean_json(summary)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON (NaN/inf as null) atomically and durably: :func:`matcher.io.atomic.write_json`."""
    atomic.write_json(path, clean_json(obj))


def write_summary(out_dir: str | os.PathLike, meta: dict | None = None) -> dict:
    """Compute the summary (:func:`summarize`) and write OUT/summary.json atomically; returns it."""
    summary = summarize(out_dir, meta)
    write_json_atomic(Path(out_dir) / "summary.json", summary)
    return summary


# --- time series (the report's plots; seconds from any common origin) ----------------
def rolling_share(t: np.ndarray, flag: np.ndarray, grid: np.ndarray, window_s: float) -> np.ndarray:
    """Share of the events at times ``t`` that have ``flag``, over the trailing window
    ``(g - window_s, g]`` at each grid time ``g``; NaN where the window holds no event."""
    t = np.asarray(t, dtype=np.float64)
    order = np.argsort(t, kind="stable")
    t, flag = t[order], np.asarray(flag, dtype=bool)[order]
    cs = np.concatenate([[0], np.cumsum(flag)])
    hi = np.searchsorted(t, grid, side="right")
    lo = np.searchsorted(t, np.asarray(grid) - window_s, side="right")
    n = hi - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (cs[hi] - cs[lo]) / np.maximum(n, 1), np.nan)


def in_system(t_in: np.ndarray, t_out: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """How many items have arrived (``t_in`` <= g) and not yet left (``t_out`` <= g) at each grid time."""
    a, b = np.sort(np.asarray(t_in, dtype=np.float64)), np.sort(np.asarray(t_out, dtype=np.float64))
    return np.searchsorted(a, grid, side="right") - np.searchsorted(b, grid, side="right")


def littles_law(
    arrival: np.ndarray, sojourn: np.ndarray, grid: np.ndarray, window_s: float, end_s: float
) -> np.ndarray:
    """Little's law L = lambda * W at each grid time, over the centred window ``[g - w/2, g + w/2)``:
    lambda = arrivals in the window / w, W = their mean time in system, so L = sum of their sojourns / w.

    NaN where the window reaches outside ``[0, end_s]`` (warm-up and drain have no steady state).
    """
    arrival = np.asarray(arrival, dtype=np.float64)
    order = np.argsort(arrival, kind="stable")
    arrival, sojourn = arrival[order], np.asarray(sojourn, dtype=np.float64)[order]
    cs = np.concatenate([[0.0], np.cumsum(sojourn)])
    half = window_s / 2
    lo = np.searchsorted(arrival, grid - half, side="left")
    hi = np.searchsorted(arrival, grid + half, side="left")
    little = (cs[hi] - cs[lo]) / window_s
    inside = (grid - half >= 0) & (grid + half <= end_s)
    return np.where(inside, little, np.nan)
