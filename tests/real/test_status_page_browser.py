"""The status page in a real browser: headless Chromium against a `riskaudit serve` process."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from testbed.ports import free_port

from tests.helpers import clean_env, start_serve, wait_serving

pytestmark = pytest.mark.slow

RISKAUDIT = str(Path(sys.executable).with_name("riskaudit"))
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
NO_JS = "--blink-settings=scriptEnabled=false"
BROWSER_TIMEOUT = 60.0
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
# uvicorn drains, then re-raises SIGTERM; `serve` ends with 0 (a supervisor's stop).
CLEAN_SIGTERM_EXITS = (0,)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CHAIN_HEAD = re.compile(r'<span id="chain-head"[^>]*>\s*(\d+)\s*</span>')
HEALTH = re.compile(r'<div class="big [^"]*" id="health">\s*([a-z]+)\s*</div>')
# Chromium's --remote-debugging-pipe reads commands on fd 3 and answers on fd 4.
FD_TRAMPOLINE = (
    "import os, sys\n"
    "cmd, resp = int(sys.argv[1]), int(sys.argv[2])\n"
    "os.dup2(cmd, 3)\n"
    "os.dup2(resp, 4)\n"
    "os.close(cmd)\n"
    "os.close(resp)\n"
    "os.execv(sys.argv[3], sys.argv[3:])\n"
)


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    output: Path
    tmp: Path

    def get_json(self, path: str) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + path, timeout=10) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data

    def get_text(self, path: str) -> str:
        with urllib.request.urlopen(self.url + path, timeout=10) as resp:
            text: str = resp.read().decode()
            return text


def chromium_path() -> str:
    """The browser, or skip (fail on CI, where a missing browser is a broken setup)."""
    found = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if found is None:
        reason = f"{CHROMIUM} not found: install Debian's chromium (`make system-deps`)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def browser_cmd(browser: str, tmp: Path, *args: str) -> list[str]:
    """The command line: the fixed flags and a new, empty profile directory."""
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp)
    return [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]


def run_chromium(browser: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium to completion; its whole process group dies on timeout."""
    cmd = browser_cmd(browser, tmp, *args)
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=BROWSER_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"chromium did not finish in {BROWSER_TIMEOUT:.0f} s: {cmd}\n{err[-2000:]}")
    assert proc.returncode == 0, f"chromium exited {proc.returncode}: {cmd}\n{err[-2000:]}"
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@dataclass
class DevTools:
    """Chromium driven over the DevTools protocol on --remote-debugging-pipe (stdlib only).

    Needed for the no-JavaScript test: --dump-dom serialises the DOM by evaluating script
    in the page, so with scripts disabled it prints nothing. DOM.getOuterHTML does not run
    page script.
    """

    proc: subprocess.Popen[bytes]
    commands: int
    answers: int
    deadline: float
    buffer: bytes = b""
    last_id: int = 0
    session: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def launch(cls, browser: str, tmp: Path, *args: str) -> DevTools:
        cmd_r, cmd_w = os.pipe()
        resp_r, resp_w = os.pipe()
        # Child ends above fd 9, so moving them onto 3 and 4 cannot clobber one another.
        child = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (cmd_r, resp_w)]
        for fd in (cmd_r, resp_w):
            os.close(fd)
        cmd = browser_cmd(browser, tmp, *args, "--remote-debugging-pipe", "about:blank")
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", FD_TRAMPOLINE, *map(str, child), *cmd],
                pass_fds=child,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            for fd in child:
                os.close(fd)
        return cls(proc, cmd_w, resp_r, time.monotonic() + BROWSER_TIMEOUT)

    def box_of(self, selector: str) -> dict[str, Any]:
        """The box model Chromium laid out for the first element matching ``selector``."""
        root = self.call("DOM.getDocument", depth=-1)["root"]["nodeId"]
        node = self.call("DOM.querySelector", nodeId=root, selector=selector)
        assert node["nodeId"], f"no {selector} on the page"
        model: dict[str, Any] = self.call("DOM.getBoxModel", nodeId=node["nodeId"])["model"]
        return model

    def _message(self) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            left = self.deadline - time.monotonic()
            ready, _, _ = select.select([self.answers], [], [], max(0.0, left))
            if not ready:
                pytest.fail(f"chromium DevTools gave no answer within {BROWSER_TIMEOUT:.0f} s")
            chunk = os.read(self.answers, 1 << 16)
            if not chunk:
                pytest.fail(f"chromium closed the DevTools pipe (exit {self.proc.poll()})")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.last_id += 1
        msg: dict[str, Any] = {"id": self.last_id, "method": method, "params": params}
        if self.session is not None and not method.startswith(("Target.", "Browser.")):
            msg["sessionId"] = self.session
        os.write(self.commands, json.dumps(msg).encode() + b"\0")
        while True:
            answer = self._message()
            if answer.get("id") == self.last_id:
                assert "error" not in answer, (method, answer["error"])
                result: dict[str, Any] = answer["result"]
                return result
            self.events.append(answer)

    def wait_event(self, method: str) -> None:
        while True:
            while self.events:
                ev = self.events.pop(0)
                if ev.get("method") == method and ev.get("sessionId") == self.session:
                    return
            self.events.append(self._message())

    def open_page(self) -> None:
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        self.call("Page.enable")

    def dom_of(self, url: str) -> str:
        """The serialised DOM once the page has loaded."""
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired")
        root = self.call("DOM.getDocument", depth=-1)["root"]
        html: str = self.call("DOM.getOuterHTML", nodeId=root["nodeId"])["outerHTML"]
        return html

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.call("Browser.close")
                self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired, pytest.fail.Exception):
            pass
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            os.close(self.commands)
            os.close(self.answers)


def chain_head(dom: str) -> int:
    heads = CHAIN_HEAD.findall(dom)
    assert len(heads) == 1, f"expected one chain-head span in the DOM:\n{dom[:3000]}"
    return int(heads[0])


@pytest.fixture
def browser() -> str:
    return chromium_path()


@pytest.fixture
def server(tmp_path: Path, browser: str) -> Iterator[Server]:
    """`riskaudit serve` on a free loopback port, a fresh log, no producer; SIGTERM at the end."""
    env = clean_env()
    log_path = tmp_path / "logs" / "risk_audit.jsonl"
    env["RISK_AUDIT_LOG_PATH"] = str(log_path)
    port = free_port()
    output = tmp_path / "serve.out"
    proc = start_serve([RISKAUDIT], port, env, output, start_new_session=True)
    srv = Server(f"http://127.0.0.1:{port}", proc, output, tmp_path)
    try:
        wait_serving(proc, srv.url, output, STARTUP_TIMEOUT)
        yield srv
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail(f"riskaudit serve ignored SIGTERM for {STOP_TIMEOUT:.0f} s")
    assert code in CLEAN_SIGTERM_EXITS, f"exit {code} on SIGTERM:\n{output.read_text()}"
    tail = [json.loads(line) for line in log_path.read_bytes().splitlines()[-3:]]
    assert "stop" in [r.get("kind") for r in tail], f"no stop record, log not drained: {tail}"


def test_dom_shows_the_chain_head_from_status(server: Server, browser: str) -> None:
    """The DOM Chromium builds from / shows the same chain head as /v1/status."""
    before = server.get_json("/v1/status")
    dom = run_chromium(browser, server.tmp, "--dump-dom", server.url + "/").stdout
    after = server.get_json("/v1/status")
    assert before["last_seq"] >= 1
    # No producer: only the service's own control records could move the head meanwhile.
    assert before["last_seq"] <= chain_head(dom) <= after["last_seq"], (before, after)
    assert f"<td>chain head (seq)</td><td><b>{chain_head(dom)}</b></td>" in dom
    assert '<meta http-equiv="refresh" content="5">' in dom
    assert re.search(r'<svg [^>]*aria-label="events per second"', dom)


def test_screenshot_is_a_png(server: Server, browser: str) -> None:
    """Chromium renders the page to a real 1200x900 PNG of plausible size."""
    shot = server.tmp / "page.png"
    run_chromium(
        browser, server.tmp, f"--screenshot={shot}", "--window-size=1200,900", server.url + "/"
    )
    assert shot.is_file(), "chromium wrote no screenshot"
    data = shot.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (1200, 900)
    assert 5_000 < len(data) < 10_000_000, len(data)


def test_page_works_without_javascript(server: Server, browser: str) -> None:
    """With scripts disabled the rendered DOM still shows the health status and chain head."""
    assert "<script" not in server.get_text("/").lower()
    chrome = DevTools.launch(browser, server.tmp, NO_JS)
    try:
        chrome.open_page()
        # The flag really stops scripts in this Chromium, or the rest would prove nothing.
        probe = chrome.dom_of(
            "data:text/html,<p id=js>off</p>"
            "<script>document.getElementById('js').textContent='on'</script>"
        )
        assert '<p id="js">off</p>' in probe, probe
        health = server.get_json("/health")
        before = server.get_json("/v1/status")
        dom = chrome.dom_of(server.url + "/")
        after = server.get_json("/v1/status")
    finally:
        chrome.close()
    assert HEALTH.findall(dom) == [health["status"]], dom[:3000]
    assert f'<h1>riskaudit <span class="{health["status"]}">' in dom
    assert before["last_seq"] <= chain_head(dom) <= after["last_seq"], (before, after)


def test_chart_fills_its_card(server: Server, browser: str) -> None:
    """Laid out by Chromium at two window sizes, the chart is as wide as its card's
    content box and keeps its proportions (no script involved: box model only)."""
    for width in (1200, 700):
        chrome = DevTools.launch(browser, server.tmp, NO_JS, f"--window-size={width},900")
        try:
            chrome.open_page()
            chrome.dom_of(server.url + "/")
            svg, card = (chrome.box_of(sel) for sel in ("svg.chart", "div.card.wide"))
        finally:
            chrome.close()
        content = card["content"]  # x1,y1, x2,y2, x3,y3, x4,y4
        card_width = content[2] - content[0]
        assert abs(svg["width"] - card_width) <= 1, (width, svg["width"], card_width)
        assert card_width > width * 0.5, (width, card_width)
        assert abs(svg["height"] / svg["width"] - 180 / 800) < 0.02, (svg["width"], svg["height"])
