"""Per-shard load over time: pending, matched, solve time and border share per shard.

From ``OUT/shards.parquet`` (one row per tick and shard) when the run has it, joined
to ``OUT/ticks.parquet`` for the tick's time; else from ``ticks.parquet`` alone, whose
rows are totals over all shards (shard ``"all"``). In a run split into areas
both files carry ``area``: rows join on (area, tick) and a shard is named
``AREA/SHARD`` (every area has its own shards). Border share is ``border / pending``
per row of shards.parquet (requests whose candidates reach another shard's drivers),
``deferred / pending`` from ticks.parquet (border requests the coordinator solved).
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from matcher.errors import MatcherError

LOAD_COLUMNS = ("pending", "matched", "solve_ms", "border_share")


def _share(num: str, den: str) -> pl.Expr:
    d = pl.col(den).cast(pl.Float64)
    return pl.when(d > 0).then(pl.col(num).cast(pl.Float64) / d).alias("border_share")


def shard_load(out_dir: str | os.PathLike) -> tuple[pl.DataFrame | None, str]:
    """(ts, shard (string), pending, matched, solve_ms, border_share rows sorted by ts and shard,
    the source file's name); (None, reason) when the run has neither file. MatcherError (one
    line naming the file) when shards.parquet exists but cannot be read."""
    out = Path(out_dir)
    ticks_path, shards_path = out / "ticks.parquet", out / "shards.parquet"
    if not ticks_path.exists():
        return None, "no ticks.parquet"
    ticks = pl.read_parquet(ticks_path)
    if "ts" not in ticks.columns:
        return None, "ticks.parquet has no ts column"
    if shards_path.exists():
        try:
            sh = pl.read_parquet(shards_path)
        except (OSError, pl.exceptions.PolarsError) as e:
            raise MatcherError(f"{shards_path}: unreadable ({type(e).__name__})") from None
        need = {"tick", "shard", "pending", "matched", "solve_ms", "border"}
        if need <= set(sh.columns):
            split = "area" in sh.columns and "area" in ticks.columns
            on = ["area", "tick"] if split else ["tick"]
            name = pl.col("shard").cast(pl.String)
            df = sh.join(ticks.select(*on, "ts"), on=on, how="inner").select(
                "ts",
                pl.concat_str([pl.col("area"), name], separator="/").alias("shard") if split else name,
                pl.col("pending").cast(pl.Float64),
                pl.col("matched").cast(pl.Float64),
                pl.col("solve_ms").cast(pl.Float64),
                _share("border", "pending"),
            )
            return df.sort("ts", "shard"), "shards.parquet"
    need = {"pending", "matched"}
    if not need <= set(ticks.columns):
        return None, f"ticks.parquet lacks {sorted(need - set(ticks.columns))}"
    have = set(ticks.columns)
    df = ticks.select(
        "ts",
        pl.lit("all").alias("shard"),
        pl.col("pending").cast(pl.Float64),
        pl.col("matched").cast(pl.Float64),
        pl.col("solve_ms").cast(pl.Float64) if "solve_ms" in have else pl.lit(None, pl.Float64).alias("solve_ms"),
        _share("deferred", "pending") if "deferred" in have else pl.lit(None, pl.Float64).alias("border_share"),
    )
    return df.sort("ts"), "ticks.parquet"
