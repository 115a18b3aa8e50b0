"""Headless Chromium uploading on one WebRTC data channel: to ``mux serve`` (the ``webrtc`` transport), and to an
aiortc server measured the same way, alternating, one ratio per pair.

Both servers run in processes of their own and do the same thing: count the bytes of every binary message on the
channel, and answer the text message ``done`` with the count. The page (Chromium, driven over its DevTools pipe by
``tests/browser.py``) POSTs its offer to the server (WHIP-style; both answer ``201`` with the SDP), opens one
reliable ordered channel, sends ``--mb`` MiB in 16 KiB messages (keeping at most 4 MiB buffered), then ``done``, and
times from the first message to the answer with ``performance.now()``. The count must match what was sent. Each
server's CPU time over the run (from ``/proc``) is printed too: it says which side is the limit.

Usage: python bench/webrtc_browser.py [--mb 32] [--reps 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mux import ConnectionBehaviour, Stream  # noqa: E402
from tests.browser import chromium_page, page_script, serve_page  # noqa: E402
from tests.raw_peers import cpu_seconds  # noqa: E402

FLAGS = ["--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns"]

SCRIPT = """
(async () => {
  const pc = new RTCPeerConnection();
  const ch = pc.createDataChannel('bulk');
  ch.binaryType = 'arraybuffer';
  await pc.setLocalDescription(await pc.createOffer());
  const res = await fetch(SIGNAL, {method: 'POST', headers: {'content-type': 'application/sdp'},
                                   body: pc.localDescription.sdp});
  if (res.status !== 201) throw new Error('signalling: ' + res.status);
  await pc.setRemoteDescription({type: 'answer', sdp: await res.text()});
  await withTimeout(new Promise((resolve) => { ch.onopen = resolve; }), 20000, 'open');
  const reply = new Promise((resolve) => { ch.onmessage = (e) => resolve(e.data); });
  const chunk = new Uint8Array(16384).fill(7);
  ch.bufferedAmountLowThreshold = 1 << 20;
  const t0 = performance.now();
  let sent = 0;
  while (sent < BULK) {
    if (ch.bufferedAmount > (4 << 20)) await new Promise((resolve) => { ch.onbufferedamountlow = resolve; });
    ch.send(chunk); sent += chunk.length;
  }
  ch.send('done');
  const count = await withTimeout(reply, 300000, 'count');
  const ms = performance.now() - t0;
  pc.close();
  return {sent, count: Number(count), ms};
})()
"""

CONFIG = """
behaviour: bench.webrtc_browser:Sink
logging: {level: info}
listeners:
  - {name: rtc, transport: webrtc, host: 127.0.0.1, port: 0}
"""


class Sink(ConnectionBehaviour):
    """mux's side: count binary messages' bytes; answer ``done`` (text) with the count, as text."""

    def init(self, opts: dict[str, Any]) -> None:
        self.total = 0

    def stream_data(self, stream: Stream, data: bytes, fin: bool, props: dict[str, Any]) -> Any:
        if props.get("ppid") == 51 and data == b"done":
            return stream.send(str(self.total).encode())  # text stays text: the channel's last PPID was 51
        self.total += len(data)
        return None


async def aiortc_server() -> None:
    """aiortc's side, the same protocol over the same signalling; prints its port."""
    from aiortc import RTCPeerConnection, RTCSessionDescription

    peers: set[Any] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        found = re.search(r"(?i)content-length:\s*(\d+)", head)
        length = int(found.group(1)) if found else 0
        body = await reader.readexactly(length) if length else b""
        cors = "access-control-allow-origin: *\r\naccess-control-allow-headers: content-type\r\n"
        if head.startswith("OPTIONS"):
            writer.write(f"HTTP/1.1 204 No Content\r\n{cors}content-length: 0\r\n\r\n".encode())
        else:
            pc = RTCPeerConnection()
            peers.add(pc)

            @pc.on("datachannel")
            def on_channel(channel: Any) -> None:
                total = 0

                @channel.on("message")
                def on_message(message: Any) -> None:
                    nonlocal total
                    if isinstance(message, str) and message == "done":
                        channel.send(str(total))
                    else:
                        total += len(message)

            await pc.setRemoteDescription(RTCSessionDescription(body.decode(), "offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            answer = pc.localDescription.sdp.encode()
            head = f"HTTP/1.1 201 Created\r\n{cors}content-type: application/sdp\r\n"
            head += f"content-length: {len(answer)}\r\n\r\n"
            writer.write(head.encode() + answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(f"aiortc on {server.sockets[0].getsockname()[1]}", flush=True)
    await asyncio.Event().wait()


async def start(argv: list[str], pattern: str) -> tuple[asyncio.subprocess.Process, int]:
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    assert proc.stdout is not None
    while True:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        if not line:
            raise RuntimeError(f"{argv} exited")
        found = re.search(pattern, line)
        if found:
            asyncio.get_running_loop().create_task(_drain(proc.stdout))
            return proc, int(found.group(1))


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


async def run(args: argparse.Namespace) -> None:
    bulk = args.mb * 1024 * 1024
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "rtc.yaml"
        config.write_text(CONFIG)
        listening = r"listener rtc: WebRTC on UDP \('127\.0\.0\.1', (\d+)\)"
        mux_proc, mux_port = await start([sys.executable, "-m", "mux.cli", "serve", str(config)], listening)
        rtc_proc, rtc_port = await start([sys.executable, __file__, "--aiortc-server"], r"aiortc on (\d+)")
        rows: list[tuple[float, float]] = []
        try:
            async with serve_page() as page_url, chromium_page(page_url, extra_flags=FLAGS) as page:
                for rep in range(args.reps):
                    pair: list[float] = []
                    for name, port, proc in (("mux", mux_port, mux_proc), ("aiortc", rtc_port, rtc_proc)):
                        script = SCRIPT.replace("SIGNAL", json.dumps(f"http://127.0.0.1:{port}/")).replace(
                            "BULK", str(bulk)
                        )
                        cpu0, wall0 = cpu_seconds(proc.pid), time.perf_counter()
                        r = await asyncio.wait_for(page.evaluate(page_script(script)), 600)
                        cpu = cpu_seconds(proc.pid) - cpu0
                        share = cpu / (time.perf_counter() - wall0)
                        assert r["count"] == r["sent"] == bulk, r
                        mbit = bulk * 8 / (r["ms"] / 1000) / 1e6
                        pair.append(mbit)
                        print(
                            f"rep {rep + 1} {name:6}: {args.mb} MiB in {r['ms'] / 1000:.2f} s, {mbit:.0f} Mbit/s; "
                            f"server CPU {cpu:.2f} s ({share:.0%} of a core, signalling and handshake included)"
                        )
                    rows.append((pair[0], pair[1]))
        finally:
            for proc in (mux_proc, rtc_proc):
                proc.terminate()
                await proc.wait()
    for i, (m, a) in enumerate(rows):
        print(f"pair {i + 1}: mux {m:.0f} Mbit/s, aiortc {a:.0f} Mbit/s: mux/aiortc {m / a:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=32)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--aiortc-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    asyncio.run(aiortc_server() if args.aiortc_server else run(args))


if __name__ == "__main__":
    main()
