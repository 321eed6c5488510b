"""Open a page in a real headless Chromium over the DevTools protocol, as a person would.

Chromium is Debian's ``chromium`` package (CI installs it in ``.ci/run``).
The page is loaded from a file; every script error, failed load and request
is recorded, the page is polled until a JavaScript condition holds (its
charts drew), and a full-page screenshot is saved.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket

#: Debian's name first; the others are what a developer's machine may have.
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def chromium() -> str:
    """Return the browser's path; fail in CI, skip elsewhere, when it is missing."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed; .ci/run installs it (apt-get install chromium)")
    pytest.skip("chromium is not installed (apt-get install chromium); CI runs these tests")


@dataclass
class PageLoad:
    """What happened while a page loaded: script errors, failed loads, requests, the screenshot.

    ``errors`` are the page's script errors (uncaught exceptions, console
    errors, other error logs); ``failed_loads`` the URLs that did not load.
    """

    errors: list[str] = field(default_factory=list)
    failed_loads: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    ready: Any = None
    screenshot: Path | None = None


class _DevTools:
    """One page's DevTools websocket: send commands, collect events while waiting."""

    def __init__(self, url: str, load: PageLoad) -> None:
        self.socket = websocket.create_connection(url, timeout=30, suppress_origin=True)
        self.load = load
        self.ids = itertools.count(1)
        self.events: list[str] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        number = next(self.ids)
        self.socket.send(json.dumps({"id": number, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == number:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._event(message)

    def _event(self, message: dict[str, Any]) -> None:
        method, params = message.get("method"), message.get("params", {})
        self.events.append(method)
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            self.load.errors.append(f"uncaught: {text}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.load.errors.append("console.error: " + " ".join(
                str(arg.get("value", arg.get("description"))) for arg in params["args"]))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            if entry.get("source") == "network":
                self.load.failed_loads.append(entry.get("url") or entry["text"])
            else:
                self.load.errors.append(f"{entry.get('source')}: {entry['text']}")
        elif method == "Network.requestWillBeSent":
            self.load.requests.append(params["request"]["url"])

    def wait_for_event(self, method: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while method not in self.events:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {method} within {timeout} s")
            self._event(json.loads(self.socket.recv()))


def open_page(page: Path, ready: str, screenshot: Path, *, width: int = 1200,
              timeout: float = 30.0) -> PageLoad:
    """Load ``page``, wait until the JavaScript expression ``ready`` is truthy, screenshot it.

    Raises TimeoutError when ``ready`` never holds; the errors seen so far are
    in its message.
    """
    load = PageLoad()
    with tempfile.TemporaryDirectory() as profile:
        process = subprocess.Popen(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--no-first-run", "--remote-debugging-port=0", f"--user-data-dir={profile}",
             f"--window-size={width},900", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            devtools = _DevTools(_page_socket(Path(profile), timeout), load)
            for domain in ("Runtime", "Log", "Page", "Network"):
                devtools.call(f"{domain}.enable")
            devtools.call("Page.navigate", url=page.resolve().as_uri())
            devtools.wait_for_event("Page.loadEventFired", timeout)
            deadline = time.monotonic() + timeout
            while not load.ready:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{ready!r} never held; errors: {load.errors}")
                load.ready = devtools.call("Runtime.evaluate", expression=ready,
                                           returnByValue=True)["result"].get("value")
                time.sleep(0.2)
            size = devtools.call("Page.getLayoutMetrics")["cssContentSize"]
            devtools.call("Emulation.setDeviceMetricsOverride", width=width,
                          height=int(size["height"]), deviceScaleFactor=1, mobile=False)
            # Charts sized to their container draw again after the resize.
            time.sleep(1.0)
            shot = devtools.call("Page.captureScreenshot", format="png")
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            load.screenshot = screenshot
            devtools.socket.close()
        finally:
            _stop(process)
    return load


def _stop(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """Stop the browser and every process it started, before its profile is removed.

    Chromium's helpers (renderer, crash handler) outlive the main process for a
    moment and may still write into the profile; removing it under them fails
    with "Directory not empty". The browser runs in its own session, so its
    whole process group is stopped and waited for.
    """
    group = process.pid
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            continue
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


def _page_socket(profile: Path, timeout: float) -> str:
    """Return the websocket URL of the browser's first page, once DevTools listens."""
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while not port_file.exists() or not port_file.read_text().strip():
        if time.monotonic() > deadline:
            raise TimeoutError("chromium did not open its DevTools port")
        time.sleep(0.1)
    port = port_file.read_text().split()[0]
    targets = requests.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
    return next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
