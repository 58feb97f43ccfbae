"""The world of a run, for the report and the text summary: its preset and every non-default setting.

``summary.json`` carries ``world`` (the preset: ``full`` or ``minimal``) and ``settings`` (every
option whose value differs from the full world's default, by option name; docs/models.md), so two
runs are never compared without seeing how their worlds differ.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def non_default_settings(summary: dict) -> dict[str, str]:
    """The run's non-default settings, formatted (``{"accept-prob": "1", "reposition": "off"}``)."""
    return {name: _fmt(v) for name, v in (summary.get("settings") or {}).items()}


def param_rows(summaries: list[dict]) -> list[tuple[str, Callable[[dict], Any]]]:
    """Rows for the run parameters table: the world, then every setting any run changed.

    A run that keeps a setting at its default shows ``default`` in that row.
    """
    names: list[str] = []
    for s in summaries:
        for name in non_default_settings(s):
            if name not in names:
                names.append(name)

    def world(s: dict) -> Any:
        return s.get("world")

    rows: list[tuple[str, Callable[[dict], Any]]] = [("world", world)]
    for name in names:
        rows.append((name, lambda s, n=name: non_default_settings(s).get(n, "default")))
    return rows
