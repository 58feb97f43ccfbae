"""report.html in a real browser: headless Chromium (Debian's ``chromium`` package) loads it
with no console error and decodes every image.

CI installs Chromium (``make chromium`` in .ci/run) and sets CI=1, so there the test runs or
fails; on a developer machine without Chromium it skips and says how to install it.
"""

from __future__ import annotations

import base64
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from browser import check_page, find_chromium
from test_report import make_compare

from matcher.analysis.report import build_report

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chromium():
    path = find_chromium()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI: chromium is not installed (make chromium installs it with apt-get)")
        pytest.skip("chromium not installed (make chromium, or apt-get install chromium); CI runs this test")
    return path


def test_report_renders_in_chromium(tmp_path, chromium):
    root = make_compare(tmp_path / "cmp")
    (root / "greedy" / "shards.parquet").write_bytes(b"")  # an unreadable extra file must not break the page
    page = build_report(root)
    assert "greedy: shard load: " in Path(page).read_text()  # said on the page, not a crash
    result = check_page(page, chromium)
    assert result.errors == []
    assert len(result.images) >= 12
    assert result.broken_images == []


def test_the_check_sees_a_broken_image_and_a_console_error(tmp_path, chromium):
    good = base64.b64encode(Path(__file__).parent.joinpath("data", "pixel.png").read_bytes()).decode()
    bad = base64.b64encode(b"\x89PNG\r\n\x1a\n not a png at all").decode()
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><body>"
        f'<img alt="good" src="data:image/png;base64,{good}">'
        f'<img alt="bad" src="data:image/png;base64,{bad}">'
        "<script>console.error('boom')</script></body></html>"
    )
    result = check_page(page, chromium)
    assert [alt for alt, _ in result.broken_images] == ["bad"]
    assert dict(result.images)["good"] == 1
    assert any("boom" in e for e in result.errors)
