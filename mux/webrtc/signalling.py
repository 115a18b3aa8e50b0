"""WHIP-style signalling over HTTP/1.1 on the listener's port number (TCP).

* ``POST <any path>`` with ``Content-Type: application/sdp`` and an SDP offer: ``201 Created``, the answer as
  ``application/sdp`` and a ``Location`` (``/session/<id>``) naming the session.
* ``DELETE /session/<id>``: ends it (the behaviour's connection closes gracefully); ``200``, or ``404``.
* ``GET /``: a small demo page (or the listener's ``page``).
* ``OPTIONS``: CORS preflight, so a page from another origin can signal (``Access-Control-Allow-Origin: *``).

One request per TCP connection (``Connection: close``), bodies up to ``MAX_SDP`` bytes, headers up to 16 KB,
ten seconds to send them: a slow or large request costs a bounded amount and is cut off.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field

from mux.webrtc.sdp import MAX_SDP

log = logging.getLogger("mux.webrtc")

MAX_HEAD = 16 * 1024
READ_TIMEOUT = 10.0
REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    503: "Service Unavailable",
}
CORS = {
    "access-control-allow-origin": "*",
    "access-control-allow-methods": "GET, POST, DELETE, OPTIONS",
    "access-control-allow-headers": "content-type",
    "access-control-expose-headers": "location",
}


@dataclass(slots=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    #: our address on this TCP connection: the address the peer reached us by (the candidate to give it)
    local: tuple[str, int]
    peer: tuple[str, int]


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self, head_only: bool = False) -> bytes:
        lines = [f"HTTP/1.1 {self.status} {REASONS.get(self.status, 'Status')}"]
        headers = {**CORS, "content-length": str(len(self.body)), "connection": "close", **self.headers}
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if head_only else self.body)


Handler = Callable[[Request], Awaitable[Response]]


async def read_request(
    reader: asyncio.StreamReader, local: tuple[str, int], peer: tuple[str, int]
) -> Request | Response:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
    except asyncio.LimitOverrunError:
        return Response(413, b"headers too large\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return Response(400, b"not an HTTP/1.1 request\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        return Response(400, b"bad content-length\n")
    if length < 0 or length > MAX_SDP:
        return Response(413, b"body too large\n")
    body = await asyncio.wait_for(reader.readexactly(length), READ_TIMEOUT) if length else b""
    return Request(parts[0].upper(), parts[1], headers, body, local, peer)


def serve(handler: Handler) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """The ``asyncio.start_server`` callback: one request, one answer, close."""

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        local = writer.get_extra_info("sockname")[:2]
        peer = writer.get_extra_info("peername")[:2]
        head_only = False
        try:
            got = await read_request(reader, local, peer)
            if isinstance(got, Request):
                head_only = got.method == "HEAD"
                response = await handler(got)
            else:
                response = got
            writer.write(response.encode(head_only))
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except Exception:  # our bug: one request fails, the listener stays
            log.exception("webrtc signalling request failed")
            with suppress(ConnectionError):
                writer.write(Response(500, b"internal error\n").encode())
        finally:
            writer.close()
            with suppress(ConnectionError, OSError):
                await writer.wait_closed()

    return connection


PAGE = b"""<!doctype html><meta charset=utf-8><title>mux WebRTC</title>
<h1>mux: a data channel to the behaviour</h1>
<p><input id=line size=40 value="hello"> <button id=go>send</button></p><pre id=log></pre>
<script>
const log = (s) => document.getElementById('log').textContent += s + '\\n';
let channel;
async function connect() {
  const pc = new RTCPeerConnection();
  channel = pc.createDataChannel('demo');
  channel.onmessage = (e) => log('< ' + e.data);
  channel.onopen = () => log('* open');
  await pc.setLocalDescription(await pc.createOffer());
  const res = await fetch(location.pathname, {method: 'POST', headers: {'content-type': 'application/sdp'},
                                              body: pc.localDescription.sdp});
  if (res.status !== 201) { log('* ' + res.status + ' ' + await res.text()); return; }
  await pc.setRemoteDescription({type: 'answer', sdp: await res.text()});
}
document.getElementById('go').onclick = () => { const v = document.getElementById('line').value;
  if (channel && channel.readyState === 'open') { channel.send(v); log('> ' + v); } };
connect();
</script>
"""
