"""`matcher report DIR`: a self-contained HTML report of a run folder or a compare folder.

One file that works offline: inline CSS, matplotlib figures (Agg) embedded as base64 PNG,
no script and no external resource. What it shows is listed in docs/run-output.md
(section ``report.html``). The package's modules:

- ``load``: the runs of a folder (both forms of compare.json) and their common time frame;
- ``style``: colours, figure helpers, legends below the axes, local-time axes;
- ``plots``: riders and time (wait CDF, ETA histogram, outcomes, cancels against ETA,
  supply and demand, served share, requests in system, tick latency);
- ``maps``: geohash cells on a lat/lng projection (wait, expiry, ETA, supply against demand);
- ``shards``: load per shard; ``tables``: parameters, summary, headline, hourly table;
- ``page``: the HTML page and :func:`build_report`.

The numbers come from :mod:`matcher.analysis` (metrics, supply, cells, riders,
significance, shardload, localtime); this package only draws them.
"""

from matcher.analysis.report.page import build_report, render

__all__ = ["build_report", "render"]
