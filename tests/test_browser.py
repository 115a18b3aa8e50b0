"""A real headless Chromium opens WebTransport sessions to mux's echo behaviour (over the DevTools protocol).

Skipped where Chromium is not installed (``apt-get install chromium``; ``bash .ci/run`` installs it).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests import wt_apps
from tests.browser import CHROMIUM, chromium_page, page_script, serve_page, webtransport_certificate
from tests.conftest import ServerFactory

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")

ECHO_SCRIPT = """
(async () => {
  const wt = new WebTransport(URL, {serverCertificateHashes: [{algorithm: 'sha-256', value: HASH}]});
  await withTimeout(wt.ready, 10000, 'ready');
  const result = {};
  // a second session alongside, with its own streams and close
  const second = new WebTransport(URL, {serverCertificateHashes: [{algorithm: 'sha-256', value: HASH}]});
  await withTimeout(second.ready, 10000, 'second ready');
  const other = await second.createBidirectionalStream();
  const otherWriter = other.writable.getWriter();
  await otherWriter.write(new TextEncoder().encode('the other session'));
  await otherWriter.close();
  result.second = text(await readAll(other.readable, 'second echo'));
  second.close({closeCode: 1, reason: 'second done'});
  await withTimeout(second.closed, 5000, 'second closed');
  // a bidirectional stream: 64 KB and its end come back
  const big = new Uint8Array(65536).map((_, i) => i % 251);
  const bidi = await wt.createBidirectionalStream();
  const writer = bidi.writable.getWriter();
  await writer.write(new TextEncoder().encode('hello from chromium '));
  await writer.write(big);
  await writer.close();
  const back = await readAll(bidi.readable, 'bidi echo');
  result.bidi_head = text(back.slice(0, 20));
  result.bidi_length = back.length;
  result.bidi_intact = back.slice(20).every((b, i) => b === i % 251);
  // a unidirectional stream: echo has no way back on it, and counts what it got
  const uni = await wt.createUnidirectionalStream();
  const uniWriter = uni.getWriter();
  await uniWriter.write(new Uint8Array(1000).fill(7));
  await uniWriter.close();
  // datagrams (unreliable: sent again until one comes back)
  const datagrams = wt.datagrams.writable.getWriter();
  const incoming = wt.datagrams.readable.getReader();
  let echoed = null;
  for (let i = 0; i < 20 && echoed === null; i++) {
    await datagrams.write(new TextEncoder().encode('datagram ' + i));
    try { echoed = text((await withTimeout(incoming.read(), 500, 'datagram')).value); } catch (e) {}
  }
  result.datagram = echoed;
  // a stream the server echoes after the uni stream's data was read: by then echo has counted it
  const after = await wt.createBidirectionalStream();
  const afterWriter = after.writable.getWriter();
  await afterWriter.write(new TextEncoder().encode('sync'));
  await afterWriter.close();
  result.sync = text(await readAll(after.readable, 'sync'));
  wt.close({closeCode: 4242, reason: 'bye from chromium'});
  const closed = await withTimeout(wt.closed, 5000, 'closed');
  result.closed = closed;
  return result;
})()
"""


def script(template: str, url: str, cert_hash: bytes) -> str:
    return page_script(template.replace("URL", json.dumps(url)).replace("HASH", f"new Uint8Array({list(cert_hash)})"))


async def test_chromium_echo_streams_datagrams_and_close(make_server: ServerFactory, tmp_path: Path) -> None:
    certfile, keyfile, cert_hash = webtransport_certificate(tmp_path)
    listener: dict[str, Any] = {
        "transport": "quic",
        "host": "127.0.0.1",
        "port": 0,
        "name": "wt",
        "certfile": str(certfile),
        "keyfile": str(keyfile),
        "webtransport": {"paths": ["/echo"]},
    }
    server = await make_server("tests.wt_apps:WatchedEcho", [listener])
    port = server.listener("wt").address[1]
    async with serve_page() as page_url, chromium_page(page_url) as page:
        result = await asyncio.wait_for(
            page.evaluate(script(ECHO_SCRIPT, f"https://127.0.0.1:{port}/echo", cert_hash)), 60
        )
    origin = page_url.rstrip("/")
    sessions = [cid for cid, seen in wt_apps.SEEN.items() if seen.get("new_conn", {}).get("origin") == origin]
    assert len(sessions) == 2, "each session is a connection of its own"
    for _ in range(500):  # the behaviour's closed may run just after the page saw its end
        if all("closed" in wt_apps.SEEN[cid] for cid in sessions):
            break
        await asyncio.sleep(0.01)
    conn_id, other_id = sorted(sessions)  # the first session was accepted first
    assert result["second"] == "the other session"
    assert wt_apps.SEEN[other_id]["closed"] == {"by": "peer", "error_code": 1, "reason": "second done"}
    assert result["bidi_head"] == "hello from chromium "
    assert result["bidi_length"] == 20 + 65536 and result["bidi_intact"]
    assert result["datagram"] is not None and result["datagram"].startswith("datagram ")
    assert result["sync"] == "sync"
    seen = wt_apps.SEEN[conn_id]
    new_conn = seen["new_conn"]
    assert new_conn["path"] == "/echo" and new_conn["transport"] == "webtransport"
    assert new_conn["origin"] == origin  # the page's, so a behaviour can Reject by it
    assert new_conn["headers"]["sec-webtransport-http3-draft02"] == "1"
    assert seen["dropped_unidirectional"] == 1000
    assert seen["shutdown"] == 4242
    assert seen["closed"] == {"by": "peer", "error_code": 4242, "reason": "bye from chromium"}
    assert result["closed"] == {"closeCode": 4242, "reason": "bye from chromium"}
