"""Open an HTML file in headless Chromium and report what a reader would see go wrong.

Talks the Chrome DevTools Protocol over the browser's local WebSocket (127.0.0.1, a port
the browser picks): console errors, uncaught exceptions, log entries of level error, and
every ``<img>`` that does not decode (``HTMLImageElement.decode()`` rejects). The browser
runs with a fresh profile, no network services, in its own process group, stopped at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)


def find_chromium() -> str | None:
    for name in (os.environ.get("MATCHER_CHROMIUM"), "chromium", "chromium-browser"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


@dataclass
class PageCheck:
    errors: list[str] = field(default_factory=list)  # console errors, exceptions, error log entries
    images: list[tuple[str, object]] = field(default_factory=list)  # (alt, naturalWidth or "ERROR ...")

    @property
    def broken_images(self) -> list[tuple[str, object]]:
        return [(alt, w) for alt, w in self.images if not isinstance(w, int) or w <= 0]


def _wait_port(profile: Path, proc: subprocess.Popen, timeout: float) -> int:
    f = profile / "DevToolsActivePort"
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with code {proc.returncode} before it listened")
        if f.exists():
            lines = f.read_text().split()
            if lines:
                return int(lines[0])
        time.sleep(0.1)
    raise RuntimeError(f"chromium did not open its DevTools port within {timeout:.0f} s")


def check_page(html_path: str | os.PathLike, chromium: str, timeout: float = 60.0) -> PageCheck:
    """Load ``html_path`` (file://) in headless Chromium; returns what went wrong (nothing: a clean page)."""
    from websockets.sync.client import connect

    url = Path(html_path).resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="matcher-chromium-") as tmp:
        profile = Path(tmp)
        proc = subprocess.Popen(
            [chromium, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stopped whole below
        )
        try:
            port = _wait_port(profile, proc, timeout)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=timeout) as r:
                pages = [p for p in json.load(r) if p.get("type") == "page"]
            ws_url = pages[0]["webSocketDebuggerUrl"]
            return _drive(connect(ws_url, max_size=None, open_timeout=timeout), url, timeout)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _drive(ws, url: str, timeout: float) -> PageCheck:
    out = PageCheck()
    next_id = [0]

    def send(method: str, **params) -> int:
        next_id[0] += 1
        ws.send(json.dumps({"id": next_id[0], "method": method, "params": params}))
        return next_id[0]

    def pump(until) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            msg = json.loads(ws.recv(timeout=max(0.1, end - time.monotonic())))
            method = msg.get("method")
            if method == "Runtime.consoleAPICalled" and msg["params"]["type"] in ("error", "assert"):
                args = msg["params"].get("args", [])
                out.errors.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in args))
            elif method == "Runtime.exceptionThrown":
                out.errors.append("exception: " + msg["params"]["exceptionDetails"].get("text", "?"))
            elif method == "Log.entryAdded" and msg["params"]["entry"]["level"] == "error":
                out.errors.append("log: " + msg["params"]["entry"].get("text", "?"))
            if until(msg):
                return msg
        raise RuntimeError("chromium: no answer in time")

    with ws:
        for m in ("Runtime.enable", "Log.enable", "Page.enable"):
            i = send(m)
            pump(lambda msg, i=i: msg.get("id") == i)
        send("Page.navigate", url=url)
        pump(lambda msg: msg.get("method") == "Page.loadEventFired")
        probe = (
            "Promise.all(Array.from(document.images).map(img => img.decode()"
            ".then(() => [img.alt, img.naturalWidth]).catch(e => [img.alt, 'ERROR ' + e])))"
        )
        i = send("Runtime.evaluate", expression=probe, awaitPromise=True, returnByValue=True)
        res = pump(lambda msg: msg.get("id") == i)["result"]
        if "exceptionDetails" in res:
            out.errors.append("probe: " + res["exceptionDetails"].get("text", "?"))
        out.images = [tuple(x) for x in res["result"].get("value", [])]
        time.sleep(0.2)  # late console messages
        i = send("Runtime.evaluate", expression="1", returnByValue=True)
        pump(lambda msg: msg.get("id") == i)
    return out
