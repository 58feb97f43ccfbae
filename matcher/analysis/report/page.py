"""The report page: one self-contained HTML file (inline CSS, figures as base64 PNG, no script)."""

from __future__ import annotations

import html
import os
from pathlib import Path

import polars as pl

from matcher.analysis import cells as cellmod
from matcher.analysis import significance
from matcher.analysis.report import maps, plots, tables
from matcher.analysis.report.load import Frame, Run, baseline_of, frame_of, runs_of
from matcher.analysis.report.shards import shard_figure
from matcher.analysis.report.style import STYLE
from matcher.analysis.riders import run_offer_outcomes
from matcher.analysis.supply import SupplyDemand, supply_demand
from matcher.errors import MatcherError
from matcher.io import atomic

CSS = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: #222;
       max-width: 1180px; margin: 24px auto; padding: 0 20px; background: #fafafa; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 28px 0 10px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.sub { color: #666; margin: 0 0 16px; }
.headline { font-size: 15px; margin: 4px 0; }
table { border-collapse: collapse; background: white; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 14px; border-bottom: 1px solid #eee; }
thead th { border-bottom: 2px solid #ccc; text-align: right; white-space: nowrap; }
tbody th { text-align: left; font-weight: normal; color: #444; white-space: nowrap; }
td { text-align: right; }
td.best { background: #e3f4ea; font-weight: 600; color: #0b5d31; }
table.hourly th, table.hourly td { padding: 2px 8px; font-size: 12.5px; }
.dot { display: inline-block; width: 10px; height: 10px; border-radius: 5px; margin-right: 6px; }
.figs { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 14px; }
figure { margin: 0; background: white; border: 1px solid #e5e5e5; border-radius: 6px; padding: 8px; }
figure img { width: 100%; height: auto; display: block; }
figcaption { color: #555; font-size: 12.5px; margin-top: 4px; }
.note { color: #666; font-size: 12.5px; }
code { background: #f0f0f0; padding: 0 3px; border-radius: 3px; }
"""


def _places(runs: list[Run]) -> dict[str, pl.DataFrame]:
    out = {}
    for r in runs:
        try:
            out[r.label] = cellmod.request_places(r.folder)
        except (MatcherError, OSError, pl.exceptions.PolarsError):
            pass
    return out


def _figures(runs: list[Run], fr: Frame, places: dict[str, pl.DataFrame]) -> list[tuple[str, list]]:
    """(section title, [(png, alt, caption)]) of every plot."""
    sd: dict[str, SupplyDemand] = {}
    offers: dict[str, pl.DataFrame] = {}
    for r in runs:
        if fr.origin is None or r.requests is None:
            continue
        try:
            sd[r.label] = supply_demand(r.folder, fr.origin_ms, fr.grid(), fr.periods())
            offers[r.label] = run_offer_outcomes(r.folder)
        except (MatcherError, OSError, pl.exceptions.PolarsError) as e:
            r.problems.append(f"supply and demand: {e}")
    allp = next(iter(places.values()), None)  # the runs of a comparison share their trace
    box = cellmod.view_box(allp["lat"].to_numpy(), allp["lng"].to_numpy()) if allp is not None else None
    precision = cellmod.choose_precision(allp["lat"].to_numpy(), allp["lng"].to_numpy()) if allp is not None else 6
    stats = {
        r.label: cellmod.cell_stats(r.requests, places[r.label], precision)
        for r in runs
        if r.requests is not None and r.label in places
    }
    tzn = fr.tz.name
    riders = [
        (
            plots.wait_cdf(runs),
            "Rider wait CDF",
            "Share of completed rides picked up within x seconds of the request (higher and further left is better).",
        ),
        (
            plots.eta_hist(runs),
            "Pickup ETA histogram",
            "Estimated driver-to-pickup time on the match that led to each pickup (ETAs beyond the axis are "
            "counted in the last bin).",
        ),
        (
            plots.outcomes(runs),
            "Request outcomes",
            "Each request ends exactly once: dropoff (completed), rider cancel, or expiry unmatched.",
        ),
        (
            plots.cancels_by_eta(runs, offers),
            "Cancellations against pickup ETA",
            "Share of offers (matches) that ended in a cancel, by the pickup ETA offered (60-s bins with at least 20 "
            "ended offers; band: Wilson 95% interval). Dashed: the rider model's cancel probability; a decline can "
            "end an offer before the rider's cancel is due, so the measured share sits at or below it.",
        ),
    ]
    time = [
        (
            plots.supply_demand(runs, sd, fr),
            "Supply and demand over time",
            f"Available drivers (solid) and riders waiting for a match (dashed) at each moment ({tzn}); "
            "a rider waits from the request, and again after a decline, until the next match.",
        ),
        (
            plots.served_over_time(runs, fr),
            "Served share over time",
            "Completed share of the requests made in the trailing window, by request time: where supply ran short.",
        ),
        (
            plots.in_system(runs, fr),
            "Requests in system",
            "Requests between their request and their end (solid). Dashed: Little's law, arrival rate × mean time in "
            "system of the requests arriving in a centred window; the two agree near steady state and part during "
            "warm-up and drain.",
        ),
        (
            plots.tick_latency(runs, fr),
            "Tick latency",
            "Wall time of one matching tick, all shards end to end, binned over simulated time (log scale).",
        ),
    ]
    areas = maps.metric_maps(runs, stats, box, precision) + [maps.supply_demand_maps(runs, sd, box, fr)]
    shards = []
    for r in runs:
        try:
            fig = shard_figure(r, fr)
        except (MatcherError, OSError, pl.exceptions.PolarsError) as e:
            r.problems.append(f"shard load: {e}")
            continue
        if fig is not None:
            shards.append(fig)
    return [("Riders", riders), ("Over time", time), ("By area", areas), ("Shards", shards)]


def _figs_html(items) -> list[str]:
    parts = ['<div class="figs">']
    for png, alt, caption in items:
        parts.append(
            f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{png}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    parts.append("</div>")
    return parts


def render(root: Path, tz: str | None = None) -> str:
    """The report HTML of a run or compare folder; time axes in ``tz`` (an IANA name), else in the
    ``tz`` of compare.json or run.json, else in the zone of the trace's coordinates
    (:mod:`matcher.analysis.localtime`)."""
    import matplotlib

    kind, info, runs = runs_of(root)
    places = _places(runs)
    first_places = next(iter(places.values()), None)
    fr = frame_of(runs, tz or info.get("tz"), first_places)
    base = baseline_of(runs, info.get("baseline"))
    ses = {r.label: significance.standard_errors(r.summary, r.requests) for r in runs}
    with matplotlib.rc_context(STYLE):
        sections = _figures(runs, fr, places)
    trace = info.get("trace")
    labels = ", ".join(r.label for r in runs)
    name = html.escape(root.name or str(root))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>matcher report: {name}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{html.escape(kind)}: {name}</h1>",
        f'<p class="sub">trace <code>{tables.esc(trace)}</code> · runs: {html.escape(labels)} · '
        f"times in {html.escape(fr.tz.name)} ({html.escape(fr.tz.source)})</p>",
    ]
    heads = tables.headlines(runs, base, ses)
    if heads:
        parts.append("<h2>Headline</h2>")
        parts += [f'<p class="headline">{html.escape(h)}</p>' for h in heads]
        parts.append(
            '<p class="note">Changes against the baseline; "within noise" when the difference is not larger than '
            f"{significance.Z:g} combined standard errors (definitions: <code>matcher/analysis/significance.py</code>)."
            "</p>"
        )
    parts += [
        "<h2>Run parameters</h2>",
        tables.params_table(runs),
        "<h2>Summary</h2>",
        tables.summary_table(runs, ses),
        '<p class="note">Highlighted: the best value of a row where it beats every other run beyond noise. Rows where '
        "higher is not simply better (utilization) or that measure the machine (tick latency, speedup) are never "
        "highlighted. Definitions: <code>docs/run-output.md</code> and <code>matcher/analysis/metrics.py</code>; "
        "every figure is recomputable from <code>events/</code>.</p>",
    ]
    for title, items in sections:
        if items:
            parts.append(f"<h2>{html.escape(title)}</h2>")
            parts += _figs_html(items)
    areas = tables.areas_table(runs)
    if areas:
        parts += ["<h2>Independent areas</h2>", areas]
    parts += [f"<h2>Hourly ({html.escape(fr.tz.name)})</h2>", tables.hourly_table(runs, fr)]
    problems = [f"{r.label}: {p}" for r in runs for p in r.problems]
    if problems:
        parts.append("<h2>Not shown</h2>")
        parts += [f'<p class="note">{html.escape(p)}</p>' for p in problems]
    parts += ["</body></html>", ""]
    return "\n".join(parts)


def build_report(dir: str | os.PathLike, tz: str | None = None) -> str:
    """(Re)build DIR/report.html from a compare folder (compare.json) or a run folder (summary.json);
    returns its absolute path. Written atomically (temp file + rename). ``tz``: see :func:`render`."""
    root = Path(dir).resolve()
    if not root.is_dir():
        raise MatcherError(f"{root}: no such folder")
    text = render(root, tz)
    path = root / "report.html"
    atomic.write_text(path, text)
    return os.fspath(path)
