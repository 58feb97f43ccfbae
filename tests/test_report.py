"""matcher.analysis.report (report.html) and matcher.sim.compare, without Ray: the replay engine is faked."""

from __future__ import annotations

import base64
import json
import os
import sys
import types
from html.parser import HTMLParser
from pathlib import Path

import polars as pl
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from eventlog import in_time_order, ride, tiny_log, write_run

from matcher.analysis.metrics import write_json_atomic
from matcher.analysis.report import build_report
from matcher.cli import build_parser, config_from_args, main
from matcher.errors import MatcherError
from matcher.sim.compare import parse_policies, run_compare

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(path: str) -> _Collect:
    p = _Collect()
    p.feed(Path(path).read_text(encoding="utf-8"))
    p.close()
    return p


def pngs(doc: _Collect) -> list[bytes]:
    prefix = "data:image/png;base64,"
    return [
        base64.b64decode(a["src"][len(prefix) :], validate=True)
        for t, a in doc.tags
        if t == "img" and a.get("src", "").startswith(prefix)
    ]


def slower_log() -> list[tuple]:
    """tiny_log with r1 picked up later and r5 served: a second policy to compare against."""
    rows = [r for r in tiny_log() if not (r[2] == "r5" or (r[2] == "r1" and r[1] in ("pickup", "dropoff")))]
    rows += [(160, "pickup", "r1", "d1"), (760, "dropoff", "r1", "d1")]
    rows += ride("r5", "d1", 1100, 1210, 1215, 1300, 1500, eta=90.0, dist=640.0)
    return in_time_order(rows)


def make_compare(root: Path) -> Path:
    runs = {}
    for label, policy, window, rows in (
        ("greedy", "greedy", None, tiny_log()),
        ("batch-2s", "batch", 2.0, slower_log()),
    ):
        meta = {"policy": policy, "window_s": window, "label": label, "wall_seconds": 2.0}
        write_run(root / label, rows, meta=meta, ticks=[5.0, 8.0, 6.0, 40.0, 7.0, 9.0] * 20)
        runs[label] = json.loads((root / label / "summary.json").read_text())
    write_json_atomic(root / "compare.json", {"trace": "trace.parquet", "policies": list(runs), "runs": runs})
    return root


def test_report_of_a_compare_folder(tmp_path):
    root = make_compare(tmp_path / "cmp")
    path = build_report(root)
    assert path == str(root / "report.html")
    doc = parse(path)
    tags = [t for t, _ in doc.tags]
    assert tags.count("table") >= 2 and "title" in tags
    text = " ".join(doc.text)
    for needle in ("greedy", "batch-2s", "served rate", "wait p90 (s)", "utilization", "trace.parquet"):
        assert needle in text
    # 5 requests a run: every difference is within noise, so nothing is marked best ...
    assert not any(a.get("class") == "best" for t, a in doc.tags if t == "td")
    # ... and the headline, computed from the summaries, says so
    assert (
        "batch-2s against greedy: mean wait +24% (within noise), served +20.0 points (within noise), "
        "pickup ETA +7% (within noise), cancelled unchanged, expired -50% (within noise)." in text
    )
    assert "America/New_York" in text  # the zone of the events' coordinates, said with the times
    images = pngs(doc)
    assert len(images) >= 12
    assert all(img.startswith(PNG_SIGNATURE) and len(img) > 2000 for img in images)
    # no external resources: every src/href is inline
    assert not [a for t, a in doc.tags if ("src" in a and not a["src"].startswith("data:")) or "href" in a]
    Path("/tmp/matcher_report_test_wait_cdf.png").write_bytes(images[0])  # for a human look


def test_report_of_a_single_run_folder(tmp_path):
    out = write_run(tmp_path / "run", tiny_log(), meta={"label": "batch-2s"})
    doc = parse(build_report(out))
    assert "batch-2s" in " ".join(doc.text)
    assert len(pngs(doc)) >= 4
    assert not any(a.get("class") == "best" for t, a in doc.tags if t == "td")  # nothing to compare with


def test_report_with_nothing_to_plot(tmp_path):
    out = write_run(tmp_path / "run", [(0, "request", "r1"), (300, "expire", "r1")], ticks=[])
    doc = parse(build_report(out))
    assert len(pngs(doc)) >= 4  # "no data" panels keep the layout


def test_report_of_a_plain_folder_is_a_clear_error(tmp_path):
    with pytest.raises(MatcherError, match="not a run folder"):
        build_report(tmp_path)


@pytest.mark.parametrize(
    "spec, expected",
    [
        (
            "greedy,batch:2,batch:10",
            [("greedy", "greedy", None), ("batch-2s", "batch", 2.0), ("batch-10s", "batch", 10.0)],
        ),
        ("batch", [("batch-2s", "batch", 2.0)]),
        (" batch:0.5 , greedy", [("batch-0.5s", "batch", 0.5), ("greedy", "greedy", None)]),
    ],
)
def test_parse_policies(spec, expected):
    assert parse_policies(spec) == expected


@pytest.mark.parametrize(
    "spec", ["", "greedy,", "fifo", "batch:x", "batch:0", "batch:-1", "greedy:2", "batch:2,batch:2.0", "batch:nan"]
)
def test_parse_policies_rejects(spec):
    with pytest.raises(MatcherError) as e:
        parse_policies(spec)
    assert "\n" not in str(e.value) and str(e.value).startswith("--policies")


@pytest.fixture
def fake_replay(monkeypatch):
    """matcher.sim.replay.run_replay replaced by a writer of a hand-made run folder; records the configs."""
    seen = []

    def run_replay(cfg):
        seen.append(cfg)
        rows = tiny_log() if cfg.sim.policy == "greedy" else slower_log()
        meta = {
            "policy": cfg.sim.policy,
            "window_s": cfg.sim.window_s if cfg.sim.policy == "batch" else None,
            "shards": cfg.shard.shards,
            "seed": cfg.sim.seed,
            "label": cfg.label,
            "wall_seconds": 1.5,
        }
        out = write_run(cfg.out, rows, meta=meta)
        return json.loads((out / "summary.json").read_text())

    monkeypatch.setitem(sys.modules, "matcher.sim.replay", types.SimpleNamespace(run_replay=run_replay))
    return seen


@pytest.mark.slow
def test_run_compare(tmp_path, fake_replay, capsys):
    out = tmp_path / "cmp"
    args = build_parser().parse_args(
        [
            "compare",
            "trace.parquet",
            "--out",
            str(out),
            "--seed",
            "7",
            "--drivers",
            "40",
            "--policies",
            "greedy,batch:2,batch:10",
        ]
    )
    result = run_compare(args, parse_policies(args.policies), config_from_args)
    assert [c.out for c in fake_replay] == [str(out / lab) for lab in ("greedy", "batch-2s", "batch-10s")]
    assert [c.label for c in fake_replay] == ["greedy", "batch-2s", "batch-10s"]
    assert [(c.sim.policy, c.sim.window_s) for c in fake_replay][1:] == [("batch", 2.0), ("batch", 10.0)]
    assert {(c.trace, c.drivers, c.sim.seed) for c in fake_replay} == {(os.path.abspath("trace.parquet"), 40, 7)}
    cmp = json.loads((out / "compare.json").read_text())
    assert cmp == result
    assert cmp["trace"] == str(Path("trace.parquet").resolve()) and cmp["baseline"] == "greedy"
    assert [r["label"] for r in cmp["runs"]] == ["greedy", "batch-2s", "batch-10s"]
    assert [r["path"] for r in cmp["runs"]] == [str(out.resolve() / lab) for lab in ("greedy", "batch-2s", "batch-10s")]
    assert cmp["runs"][2]["window_s"] == 10.0 and cmp["runs"][0]["completed"] == 2
    # the runs read as rows
    rows = pl.read_json(out / "compare.json").explode("runs").unnest("runs")
    assert rows["label"].to_list() == ["greedy", "batch-2s", "batch-10s"] and rows["completed"].to_list() == [2, 3, 3]
    assert len(pngs(parse(out / "report.html"))) >= 4
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split() == ["greedy", "batch-2s", "batch-10s"]


@pytest.mark.slow
def test_cli_compare_and_report(tmp_path, fake_replay, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "trace.parquet", "--out", str(out), "--policies", "greedy,batch", "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out / "report.html")
    assert main(["compare", "trace.parquet", "--out", str(out), "--policies", "fifo"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("matcher: --policies: unknown policy 'fifo'") and err.count("\n") == 1


def test_report_uses_shards_cells_and_areas_when_present(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from eventlog import BASE

    out = write_run(tmp_path / "run", tiny_log(), ticks=[5.0] * 10)
    ticks = pq.read_table(out / "ticks.parquet")
    n = ticks.num_rows
    pq.write_table(
        pa.table(
            {
                "tick": list(range(n)) * 2,
                "shard": pa.array([0] * n + [1] * n, pa.int32()),
                "drivers": [2] * (2 * n),
                "halo_drivers": [0] * (2 * n),
                "pending": [1] * (2 * n),
                "matched": [1] * (2 * n),
                "border": [0] * (2 * n),
                "solve_ms": [0.5] * (2 * n),
                "handoffs_in": [0] * (2 * n),
                "handoffs_out": [0] * (2 * n),
            }
        ),
        out / "shards.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "tick": [0],
                "ts": pa.array([BASE], pa.timestamp("ms", tz="UTC")),
                "cell": ["dr5ru"],
                "demand": pa.array([1], pa.int32()),
                "supply": pa.array([2], pa.int32()),
            }
        ),
        out / "cells.parquet",
    )
    summary = json.loads((out / "summary.json").read_text())
    summary["areas"] = [{"area": "nyc", "requests": 5, "served_rate": 0.4, "wait_s_mean": 150.0, "drivers": 2}]
    (out / "summary.json").write_text(json.dumps(summary))
    text = Path(build_report(out)).read_text()
    assert "Per shard from shards.parquet" in text and "2 shard(s)" in text
    assert "from cells.parquet" in text
    assert "Independent areas" in text and "<th>nyc</th><td>5</td><td>40.0%</td><td>150.0</td>" in text
    assert "Not shown" not in text


def test_report_of_a_moved_compare_folder_in_the_current_form(tmp_path):
    """compare.json's absolute paths point at the old place: the runs are found beside it."""
    root = make_compare(tmp_path / "cmp")
    old = json.loads((root / "compare.json").read_text())
    runs = [{"label": lab, "path": f"/nowhere/{lab}", **old["runs"][lab]} for lab in old["policies"]]
    write_json_atomic(root / "compare.json", {"trace": "/nowhere/t.parquet", "baseline": "batch-2s", "runs": runs})
    text = " ".join(parse(build_report(root)).text)
    assert "greedy against batch-2s:" in text  # the baseline compare.json names
    assert "Not shown" not in text


def test_compare_json_without_labels_is_a_clear_error(tmp_path):
    root = make_compare(tmp_path / "cmp")
    write_json_atomic(root / "compare.json", {"runs": [{"path": "x"}]})
    with pytest.raises(MatcherError, match="run 0 has no label"):
        build_report(root)
