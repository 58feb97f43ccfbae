"""``GET /metrics``: the dispatcher's figures in the Prometheus text format (version 0.0.4)."""

from __future__ import annotations

import numpy as np

from matcher.core.states import RideState


def _line(out: list[str], name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
    out.append(f"# HELP {name} {help_}")
    out.append(f"# TYPE {name} {kind}")
    for labels, v in samples:
        out.append(f"{name}{labels} {float(v):.6g}")


def render(d) -> str:
    out: list[str] = []
    with d.lock:
        ticks = np.asarray(d.tick_ms[-1000:], np.float64)
        q = (
            [(f'{{quantile="{p}"}}', float(np.percentile(ticks, p * 100))) for p in (0.5, 0.9, 0.99)]
            if ticks.size
            else []
        )
        _line(out, "matcher_tick_latency_ms", "summary", "wall time of one tick (last 1,000 ticks)", q)
        _line(out, "matcher_ticks_total", "counter", "ticks run", [("", d.k + 1)])
        _line(out, "matcher_failed_ticks_total", "counter", "ticks whose solve failed", [("", d.failed_ticks)])
        _line(out, "matcher_late_ticks_total", "counter", "ticks that overran their window", [("", d.late_ticks)])
        _line(out, "matcher_pending_rides", "gauge", "rides searching for a driver", [("", len(d.searching))])
        _line(out, "matcher_offers_outstanding", "gauge", "offers waiting for an answer", [("", len(d.offered))])
        _line(
            out, "matcher_events_total", "counter", "ride events by kind",
            [(f'{{kind="{k}"}}', v) for k, v in sorted(d.counters.items())],
        )  # fmt: skip
        _line(out, "matcher_matched_total", "counter", "offers made by the matcher", [("", d.counters["matches"])])
        _line(out, "matcher_pings_total", "counter", "driver location updates accepted", [("", d.pings)])
        _line(out, "matcher_pings_per_second", "gauge", "pings accepted per second, last 10 s", [("", d.pings_per_s())])
        _line(
            out, "matcher_pings_refused_total", "counter", "driver location updates refused, by reason",
            [(f'{{reason="{k}"}}', v) for k, v in sorted(d.refused.items())],
        )  # fmt: skip
        states = np.bincount(np.array([r.state for r in d.rides], np.int64), minlength=len(RideState))
        _line(
            out, "matcher_rides", "gauge", "rides by state",
            [(f'{{state="{s.name.lower()}"}}', states[int(s)]) for s in RideState],
        )  # fmt: skip
        _line(out, "matcher_drivers_known", "gauge", "drivers seen", [("", len(d.driver_ids))])
        commits = np.asarray(d.store.journal.commit_ms[-1000:], np.float64)
        _line(
            out, "matcher_journal_commit_ms", "summary", "duration of one group commit (write + fsync)",
            [(f'{{quantile="{p}"}}', float(np.percentile(commits, p * 100))) for p in (0.5, 0.99)] if commits.size else [],
        )  # fmt: skip
        _line(out, "matcher_journal_records_total", "counter", "journal lines", [("", d.store.journal.records)])
        _line(out, "matcher_journal_commits_total", "counter", "journal fsyncs", [("", d.store.journal.commits)])
    return "\n".join(out) + "\n"
