"""Headless Chromium to ``mux serve`` over WebTransport: echo round trip p50 and bulk Mbit/s.

The server is a real ``mux serve`` process (uvloop when installed) with ``behaviours.echo:Echo`` on a QUIC listener
with ``webtransport: {paths: [/echo]}`` and a 10-day ECDSA certificate; Chromium (driven over its DevTools pipe,
``tests/browser.py``) opens one session from a page on 127.0.0.1 and measures in the page, with
``performance.now()``:

* round trip: ``--rounds`` 32-byte messages, each sent on one long-lived bidirectional stream after the previous
  echo came back; and as many datagrams, one at a time (a lost one is counted and sent again after 1 s);
* bulk: ``--bulk-mb`` MiB written on one bidirectional stream in 64 KiB writes while the echo is read back,
  timed until the last byte is back (Mbit/s counts the bytes once: each direction carried them all).

Usage: python bench/webtransport_browser.py [--rounds 2000] [--bulk-mb 32] [--reps 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.browser import chromium_page, page_script, serve_page, webtransport_certificate  # noqa: E402

SCRIPT = """
(async () => {
  const wt = new WebTransport(URL, {serverCertificateHashes: [{algorithm: 'sha-256', value: HASH}]});
  await withTimeout(wt.ready, 10000, 'ready');
  const out = {};
  // stream round trips
  const stream = await wt.createBidirectionalStream();
  const writer = stream.writable.getWriter();
  const reader = stream.readable.getReader();
  const message = new Uint8Array(32).fill(120);
  const rtts = [];
  for (let i = 0; i < ROUNDS; i++) {
    const t0 = performance.now();
    await writer.write(message);
    let got = 0;
    while (got < message.length) got += (await reader.read()).value.length;
    rtts.push(performance.now() - t0);
  }
  out.stream_rtt_ms = rtts;
  await writer.close();
  // datagram round trips
  const dw = wt.datagrams.writable.getWriter();
  const dr = wt.datagrams.readable.getReader();
  const drtts = []; let lost = 0;
  for (let i = 0; i < ROUNDS; i++) {
    for (;;) {
      const t0 = performance.now();
      await dw.write(message);
      try { await withTimeout(dr.read(), 1000, 'datagram'); drtts.push(performance.now() - t0); break; }
      catch (e) { lost++; }
    }
  }
  out.datagram_rtt_ms = drtts; out.datagrams_lost = lost;
  // bulk echo
  const bulk = await wt.createBidirectionalStream();
  const total = BULK;
  const chunk = new Uint8Array(65536).fill(98);
  const t0 = performance.now();
  const reading = (async () => {
    const r = bulk.readable.getReader(); let got = 0;
    while (got < total) { const {value, done} = await r.read(); if (done) break; got += value.length; }
    return got;
  })();
  const bw = bulk.writable.getWriter();
  for (let sent = 0; sent < total; sent += chunk.length) await bw.write(chunk);
  await bw.close();
  const got = await reading;
  out.bulk_ms = performance.now() - t0; out.bulk_bytes = got;
  wt.close({closeCode: 0, reason: 'done'});
  return out;
})()
"""

CONFIG = """
behaviour: behaviours.echo:Echo
logging: {{level: info}}
listeners:
  - name: wt
    transport: quic
    host: 127.0.0.1
    port: 0
    certfile: {certfile}
    keyfile: {keyfile}
    webtransport: {{paths: [/echo]}}
"""


async def start_server(directory: Path) -> tuple[asyncio.subprocess.Process, int, bytes]:
    certfile, keyfile, cert_hash = webtransport_certificate(directory)
    config = directory / "wt.yaml"
    config.write_text(CONFIG.format(certfile=certfile, keyfile=keyfile))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mux.cli", "serve", str(config), cwd=ROOT, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stderr is not None
    while True:
        line = (await asyncio.wait_for(proc.stderr.readline(), 20)).decode()
        if not line:
            raise RuntimeError("mux serve exited")
        found = re.search(r"listener wt: QUIC on \('127\.0\.0\.1', (\d+)\)", line)
        if found:
            asyncio.get_running_loop().create_task(_drain(proc.stderr))
            return proc, int(found.group(1)), cert_hash


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        proc, port, cert_hash = await start_server(Path(tmp))
        try:
            results: list[dict[str, Any]] = []
            async with serve_page() as page_url, chromium_page(page_url) as page:
                for _ in range(args.reps):
                    script = page_script(
                        SCRIPT.replace("URL", json.dumps(f"https://127.0.0.1:{port}/echo"))
                        .replace("HASH", f"new Uint8Array({list(cert_hash)})")
                        .replace("ROUNDS", str(args.rounds))
                        .replace("BULK", str(args.bulk_mb * 1024 * 1024))
                    )
                    results.append(await asyncio.wait_for(page.evaluate(script), 600))
        finally:
            proc.terminate()
            await proc.wait()
    for i, r in enumerate(results):
        stream, dgram = r["stream_rtt_ms"], r["datagram_rtt_ms"]
        mbit = r["bulk_bytes"] * 8 / (r["bulk_ms"] / 1000) / 1e6
        print(
            f"run {i + 1}: stream RTT p50 {statistics.median(stream) * 1000:.0f} us, p99 "
            f"{percentile(stream, 0.99) * 1000:.0f} us; datagram RTT p50 {statistics.median(dgram) * 1000:.0f} us "
            f"(lost {r['datagrams_lost']}); bulk echo {r['bulk_bytes'] / 2**20:.0f} MiB at {mbit:.0f} Mbit/s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--bulk-mb", type=int, default=32)
    parser.add_argument("--reps", type=int, default=3)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
