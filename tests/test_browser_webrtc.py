"""A real headless Chromium opens data channels to mux's echo over the ``webrtc`` transport (DevTools pipe).

Skipped where Chromium is not installed (``apt-get install chromium``; ``bash .ci/run`` installs it).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests import webrtc_apps
from tests.browser import CHROMIUM, chromium_page, page_script, serve_page
from tests.conftest import ServerFactory

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")

#: Chromium offers no 127.0.0.1 candidate; mux's ICE-lite learns its address from its checks anyway
ECHO_SCRIPT = """
(async () => {
  const pc = new RTCPeerConnection();
  const result = {};
  const opened = (channel) => new Promise((resolve, reject) => {
    channel.onopen = resolve; channel.onerror = reject; });
  const nextMessage = (channel, what) => withTimeout(new Promise((resolve) => {
    channel.onmessage = (e) => resolve(e.data); }), 10000, what);
  const main = pc.createDataChannel('echo', {protocol: 'test'});
  main.binaryType = 'arraybuffer';
  await pc.setLocalDescription(await pc.createOffer());
  const res = await fetch(SIGNAL_URL, {method: 'POST', headers: {'content-type': 'application/sdp'},
                                body: pc.localDescription.sdp});
  result.status = res.status;
  const location = res.headers.get('location');
  await pc.setRemoteDescription({type: 'answer', sdp: await res.text()});
  await withTimeout(opened(main), 10000, 'open');
  main.send('hello from chromium');
  result.text = await nextMessage(main, 'text');
  main.send(new Uint8Array([0, 1, 2, 255]));
  const bin = await nextMessage(main, 'binary');
  result.binary = Array.from(new Uint8Array(bin));
  const big = new Uint8Array(65536).map((_, i) => i % 251);
  main.send(big);
  const back = new Uint8Array(await nextMessage(main, '64 KB'));
  result.big_length = back.length;
  result.big_intact = back.every((b, i) => b === i % 251);
  main.send('');
  result.empty = await nextMessage(main, 'empty');
  // several channels at once: ordered, and unordered without retransmission
  const more = [];
  for (let i = 0; i < 3; i++) more.push(pc.createDataChannel('ordered-' + i));
  for (let i = 0; i < 2; i++) more.push(pc.createDataChannel('lossy-' + i, {ordered: false, maxRetransmits: 0}));
  await withTimeout(Promise.all(more.map(opened)), 10000, 'more open');
  // a message on a channel without retransmission may be given up (and so may its echo) when a loaded machine
  // makes a packet look lost: send it again every 300 ms until the echo comes
  result.more = await Promise.all(more.map(async (c) => {
    const reply = nextMessage(c, c.label);
    c.send('on ' + c.label);
    const again = c.ordered ? null : setInterval(() => c.send('on ' + c.label), 300);
    try { return await reply; } finally { if (again) clearInterval(again); } }));
  // closing a channel is a stream reset: the echo ends its side, and the channel reports closed
  await withTimeout(Promise.all(more.map((c) => new Promise((resolve) => { c.onclose = resolve; c.close(); }))),
                    10000, 'channels closed');
  result.closed_states = more.map((c) => c.readyState);
  main.send('still here');
  result.after = await nextMessage(main, 'after');
  const deleted = await fetch(new URL(location, SIGNAL_URL), {method: 'DELETE'});
  result.deleted = deleted.status;
  await withTimeout(new Promise((resolve) => { main.onclose = resolve; }), 10000, 'closed by the server');
  pc.close();
  return result;
})()
"""

FLAGS = ["--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns"]


async def test_chromium_data_channels_to_the_echo(make_server: ServerFactory) -> None:
    listener: dict[str, Any] = {"transport": "webrtc", "host": "127.0.0.1", "port": 0, "name": "rtc"}
    server = await make_server("tests.webrtc_apps:WatchedEcho", [listener])
    port = server.listener("rtc").address[1]
    url = f"http://127.0.0.1:{port}/echo"
    before = set(webrtc_apps.SEEN)
    async with serve_page() as page_url, chromium_page(page_url, extra_flags=FLAGS) as page:
        result = await asyncio.wait_for(
            page.evaluate(page_script(ECHO_SCRIPT.replace("SIGNAL_URL", json.dumps(url)))), 60
        )
    assert result["status"] == 201
    assert result["text"] == "hello from chromium"
    assert result["binary"] == [0, 1, 2, 255]
    assert result["big_length"] == 65536 and result["big_intact"]
    assert result["empty"] == ""
    assert result["more"] == ["on ordered-0", "on ordered-1", "on ordered-2", "on lossy-0", "on lossy-1"]
    assert result["closed_states"] == ["closed"] * 5
    assert result["after"] == "still here"
    assert result["deleted"] == 200
    (conn_id,) = set(webrtc_apps.SEEN) - before
    seen = webrtc_apps.SEEN[conn_id]
    for _ in range(200):
        if "closed" in seen:
            break
        await asyncio.sleep(0.05)
    assert seen["new_conn"][0]["origin"] == page_url.rstrip("/")
    streams = {props["label"]: props for _, props in seen["new_stream"]}
    assert streams["echo"]["protocol"] == "test" and streams["echo"]["ordered"]
    assert streams["lossy-0"]["ordered"] is False and streams["lossy-0"]["max_retransmits"] == 0
    assert streams["ordered-1"]["ordered"] is True and streams["ordered-1"]["max_retransmits"] is None
    ppids = [entry[3] for entry in seen["stream_data"] if entry[1]]
    assert ppids[:4] == [51, 53, 53, 56], "text, binary, 64 KB binary, an empty string"
    fins = {entry[0] for entry in seen["stream_data"] if entry[2]}
    assert len(fins) == 5, "each closed channel ended its stream"
    assert seen["closed"][0]["by"] == "local"
    # Chromium 156 (Debian) offers no Zero Checksum Acceptable parameter in its INIT (its libwebrtc has no such
    # switch): mux then keeps CRC32c both ways; tests/test_webrtc_zero_checksum.py covers the other case
    assert seen["connected"][0]["zero_checksum"] is False
