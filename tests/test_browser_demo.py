"""conf/browser.yaml's demo in headless Chromium: its page, served by the ``webrtc`` listener at ``/``, reaches the
unchanged echo and chat over a data channel and over WebTransport, and chat members on both share a room."""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path
from typing import Any

import pytest
import yaml

from mux.quic.certs import webtransport_certificate
from tests.browser import CHROMIUM, chromium_page, page_script
from tests.conftest import ServerFactory
from tests.test_browser_webrtc import FLAGS

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
CONF = Path(__file__).resolve().parent.parent / "conf"

DEMO_SCRIPT = """
(async () => {
  const result = {};
  const until = async (conn, wanted, what) => {
    for (;;) { const line = await withTimeout(conn.next(), 10000, what); if (line === wanted) return line; }
  };
  const dcEcho = await muxDataChannel('/echo');
  dcEcho.send('ping over a data channel');
  result.dc_echo = await withTimeout(dcEcho.next(), 10000, 'dc echo');
  const wtEcho = await muxWebTransport('/echo');
  wtEcho.send('ping over WebTransport');
  result.wt_echo = await withTimeout(wtEcho.next(), 10000, 'wt echo');
  const alice = await muxDataChannel('/chat');
  alice.send('/join ROOM'); alice.send('/nick alice');
  const bob = await muxWebTransport('/chat');
  bob.send('/join ROOM'); bob.send('/nick bob');
  bob.send('hello from webtransport');
  result.alice_heard = await until(alice, 'bob: hello from webtransport', 'alice hears bob');
  alice.send('hello from a data channel');
  result.bob_heard = await until(bob, 'alice: hello from a data channel', 'bob hears alice');
  for (const c of [dcEcho, wtEcho, alice, bob]) await c.close();
  return result;
})()
"""


async def test_demo_page_echo_and_chat_over_both_transports(make_server: ServerFactory, tmp_path: Path) -> None:
    certfile, keyfile, _ = webtransport_certificate(tmp_path)
    conf = yaml.safe_load((CONF / "browser.yaml").read_text())
    webrtc, quic = conf["listeners"]
    quic.update(port=0, certfile=str(certfile), keyfile=str(keyfile))
    wt_server = await make_server(conf["behaviour"], [quic], options=conf["options"])
    wt_port = wt_server.listener(quic["name"]).address[1]
    link = {"url": f"https://127.0.0.1:{wt_port}", "certfile": str(certfile)}
    webrtc.update(port=0, page=str(CONF / "browser.html"), webtransport=link)
    rtc_server = await make_server(conf["behaviour"], [webrtc], options=conf["options"])
    port = rtc_server.listener(webrtc["name"]).address[1]
    room = "room-" + secrets.token_hex(4)
    script = DEMO_SCRIPT.replace("ROOM", room)
    async with chromium_page(f"http://127.0.0.1:{port}/", extra_flags=FLAGS) as page:
        result: dict[str, Any] = await asyncio.wait_for(page.evaluate(page_script(script)), 60)
    assert result == {
        "dc_echo": "ping over a data channel",
        "wt_echo": "ping over WebTransport",
        "alice_heard": "bob: hello from webtransport",
        "bob_heard": "alice: hello from a data channel",
    }, json.dumps(result)
