"""Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``): no npm, no port.

Used by tests/test_browser.py and bench/webtransport_browser.py. Chromium reads commands on fd 3 and writes answers
and events on fd 4, each a JSON object ended by a NUL byte. A page must come from a real HTTP server on 127.0.0.1
(a page faked through interception is blocked by Local Network Access): ``serve_page`` starts one.
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

from mux.quic import certs

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-default-browser-check",
    "--mute-audio",
    # nothing leaves the machine: Chromium otherwise looks up Google's hosts even with the flags above
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
    "--remote-debugging-pipe",
]


def webtransport_certificate(directory: Path) -> tuple[Path, Path, bytes]:
    """``mux.quic.certs.webtransport_certificate`` valid 10 days (``serverCertificateHashes`` takes none longer
    than 14): (certfile, keyfile, SHA-256 of its DER)."""
    return certs.webtransport_certificate(directory, days=10)


@asynccontextmanager
async def serve_page(body: bytes = b"<!doctype html><title>mux test</title>") -> AsyncIterator[str]:
    """A one-page HTTP/1.1 server on 127.0.0.1 (an ephemeral port); yields its URL."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            head = f"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {len(body)}\r\n\r\n"
            writer.write(head.encode() + body)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.close()


class DevToolsError(Exception):
    pass


class Chromium:
    """One headless Chromium and one page in it."""

    def __init__(self, extra_flags: list[str] | None = None) -> None:
        #: more command-line flags (WebRTC's loopback ones, say); Chromium honours only the last --disable-features
        self.extra_flags = list(extra_flags or [])
        self._proc: asyncio.subprocess.Process | None = None
        self._write_fd = -1
        self._reader: asyncio.StreamReader | None = None
        self._ids = 0
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._pump: asyncio.Task[None] | None = None
        self._session: str | None = None
        self._profile = tempfile.mkdtemp(prefix="mux-chromium-")

    async def start(self) -> None:
        assert CHROMIUM is not None, "chromium is not installed"
        commands_r, commands_w = os.pipe()  # we write, Chromium reads on its fd 3
        answers_r, answers_w = os.pipe()  # Chromium writes on its fd 4, we read
        # above 4, so that putting them on 3 and 4 in the child cannot clobber one with the other
        high_r, high_w = fcntl.fcntl(commands_r, fcntl.F_DUPFD, 10), fcntl.fcntl(answers_w, fcntl.F_DUPFD, 10)

        try:
            # bash puts them on 3 and 4 and becomes Chromium
            script = f'exec "$0" "$@" 3<&{high_r} 4>&{high_w} {high_r}<&- {high_w}>&-'
            self._proc = await asyncio.create_subprocess_exec(
                "/bin/bash",  # dash takes single-digit fds only
                "-c",
                script,
                CHROMIUM,
                *FLAGS,
                *self.extra_flags,
                f"--user-data-dir={self._profile}",
                "about:blank",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=None if os.environ.get("MUX_CHROMIUM_STDERR") else asyncio.subprocess.DEVNULL,
                pass_fds=(high_r, high_w),
            )
        finally:
            for fd in {commands_r, answers_w, high_r, high_w}:
                os.close(fd)
        self._write_fd = commands_w
        loop = asyncio.get_running_loop()
        self._reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(self._reader), os.fdopen(answers_r, "rb", 0))
        self._pump = asyncio.create_task(self._read_messages())
        for _ in range(100):  # the first page may take a moment to appear
            targets = await self.send("Target.getTargets")
            page = next((t for t in targets["targetInfos"] if t["type"] == "page"), None)
            if page is not None:
                break
            await asyncio.sleep(0.05)
        else:
            raise DevToolsError("Chromium opened no page")
        attached = await self.send("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True})
        self._session = attached["sessionId"]

    async def _read_messages(self) -> None:
        assert self._reader is not None
        while True:
            try:
                raw = await self._reader.readuntil(b"\0")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                break
            message = json.loads(raw[:-1])
            future = self._pending.pop(message.get("id", -1), None)
            if future is None:
                self._events.put_nowait(message)
            elif not future.done():
                if "error" in message:
                    future.set_exception(DevToolsError(str(message["error"])))
                else:
                    future.set_result(message.get("result", {}))
        for future in self._pending.values():
            if not future.done():
                future.set_exception(DevToolsError("Chromium went away"))

    async def send(self, method: str, params: dict[str, Any] | None = None, *, page: bool = False) -> Any:
        self._ids += 1
        message: dict[str, Any] = {"id": self._ids, "method": method, "params": params or {}}
        if page:
            message["sessionId"] = self._session
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[self._ids] = future
        os.write(self._write_fd, json.dumps(message).encode() + b"\0")
        return await future

    async def open(self, url: str) -> None:
        await self.send("Page.enable", page=True)
        await self.send("Page.navigate", {"url": url}, page=True)
        while True:
            event = await self._events.get()
            if event.get("method") == "Page.loadEventFired":
                return

    async def evaluate(self, expression: str) -> Any:
        """Run ``expression`` in the page, await it if it is a promise, and return its value (JSON)."""
        result = await self.send(
            "Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True}, page=True
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise DevToolsError(str(details.get("exception", {}).get("description") or details.get("text")))
        return result["result"].get("value")

    async def close(self) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with suppress(DevToolsError, OSError, TimeoutError):
                await asyncio.wait_for(self.send("Browser.close"), 5)
            with suppress(ProcessLookupError):
                if proc.returncode is None:
                    proc.kill()
            await proc.wait()
        if self._pump is not None:
            self._pump.cancel()
            with suppress(asyncio.CancelledError):
                await self._pump
        if self._write_fd >= 0:
            os.close(self._write_fd)
            self._write_fd = -1
        shutil.rmtree(self._profile, ignore_errors=True)


@asynccontextmanager
async def chromium_page(url: str, extra_flags: list[str] | None = None) -> AsyncIterator[Chromium]:
    browser = Chromium(extra_flags)
    try:
        await browser.start()
        await browser.open(url)
        yield browser
    finally:
        await browser.close()


def js_bytes(data: bytes) -> str:
    """A JavaScript expression for ``data`` as a Uint8Array."""
    return f"Uint8Array.from(atob('{base64.b64encode(data).decode()}'), c => c.charCodeAt(0))"


#: helpers the page scripts share: read a stream to its end, with a deadline on each read
JS_HELPERS = """
const withTimeout = (promise, ms, what) => Promise.race([promise,
  new Promise((_, reject) => setTimeout(() => reject(new Error('timed out: ' + what)), ms))]);
async function readAll(readable, what) {
  const reader = readable.getReader(); const chunks = []; let size = 0;
  for (;;) {
    const {value, done} = await withTimeout(reader.read(), 10000, what);
    if (done) break;
    chunks.push(value); size += value.length;
  }
  const all = new Uint8Array(size); let at = 0;
  for (const c of chunks) { all.set(c, at); at += c.length; }
  return all;
}
const text = (bytes) => new TextDecoder().decode(bytes);
"""


def page_script(body: str) -> str:
    """``body`` (an expression, usually an async arrow called at once) with ``JS_HELPERS``, in a block of its own so
    that the page can run it again (its value is the block's)."""
    return "{" + JS_HELPERS + body + "}"
