"""aiortc as the WebRTC client of a ``webrtc`` listener: WHIP-style signalling, ICE-lite, DTLS, SCTP and DCEP
end to end on loopback, with ``behaviours.echo:Echo`` unchanged."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests import webrtc_apps
from tests.conftest import ServerFactory

aiortc = pytest.importorskip("aiortc")


async def http(
    port: int, method: str, path: str, body: bytes = b"", ctype: str = "application/sdp"
) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: {ctype}\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    raw = await reader.read()
    writer.close()
    top, _, rest = raw.partition(b"\r\n\r\n")
    lines = top.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, rest


async def offer_answer(pc: Any, port: int) -> str:
    await pc.setLocalDescription(await pc.createOffer())
    status, headers, body = await http(port, "POST", "/echo", pc.localDescription.sdp.encode())
    assert status == 201, body
    assert headers["content-type"] == "application/sdp" and headers["location"].startswith("/session/")
    assert b"a=ice-lite" in body and b"a=setup:passive" in body
    await pc.setRemoteDescription(aiortc.RTCSessionDescription(body.decode(), "answer"))
    return headers["location"]


async def test_aiortc_echo_over_data_channels(make_server: ServerFactory) -> None:
    listener = {"transport": "webrtc", "host": "127.0.0.1", "port": 0, "name": "rtc"}
    server = await make_server("tests.webrtc_apps:WatchedEcho", [listener])
    port = server.listener("rtc").address[1]
    before = set(webrtc_apps.SEEN)
    pc = aiortc.RTCPeerConnection()
    received: dict[str, asyncio.Queue[Any]] = {}
    channels = {}
    for label, kwargs in (("text", {}), ("lossy", {"ordered": False, "maxRetransmits": 0})):
        channel = pc.createDataChannel(label, protocol="p-" + label, **kwargs)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        channel.on("message", queue.put_nowait)
        received[label], channels[label] = queue, channel
    try:
        location = await offer_answer(pc, port)
        for channel in channels.values():
            for _ in range(200):
                if channel.readyState == "open":
                    break
                await asyncio.sleep(0.05)
            assert channel.readyState == "open"
        channels["text"].send("hello")
        assert await asyncio.wait_for(received["text"].get(), 10) == "hello"  # text stays text
        channels["text"].send(b"\x00\x01binary")
        assert await asyncio.wait_for(received["text"].get(), 10) == b"\x00\x01binary"
        big = bytes(range(256)) * 256
        channels["text"].send(big)
        assert await asyncio.wait_for(received["text"].get(), 10) == big
        channels["lossy"].send("unordered")
        assert await asyncio.wait_for(received["lossy"].get(), 10) == "unordered"
        status, _, _ = await http(port, "DELETE", location)
        assert status == 200
        (conn_id,) = set(webrtc_apps.SEEN) - before
        seen = webrtc_apps.SEEN[conn_id]
        for _ in range(200):
            if "closed" in seen:
                break
            await asyncio.sleep(0.05)
        assert seen["new_conn"][0]["path"] == "/echo" and seen["new_conn"][0]["transport"] == "webrtc"
        opened = {props["label"]: props for _, props in seen["new_stream"]}
        assert opened["text"]["protocol"] == "p-text" and opened["text"]["ordered"] is True
        assert opened["text"]["max_retransmits"] is None
        assert opened["lossy"]["ordered"] is False and opened["lossy"]["max_retransmits"] == 0
        ppids = [entry[3] for entry in seen["stream_data"]]
        assert ppids[:3] == [51, 53, 53]
        assert seen["closed"][0]["by"] == "local"
    finally:
        await pc.close()


async def test_signalling_refuses_what_it_cannot_answer(make_server: ServerFactory) -> None:
    listener = {"transport": "webrtc", "host": "127.0.0.1", "port": 0, "name": "rtc"}
    server = await make_server("tests.webrtc_apps:WatchedEcho", [listener])
    port = server.listener("rtc").address[1]
    status, _, body = await http(port, "POST", "/", b"v=0\r\n", ctype="text/plain")
    assert status == 415
    status, _, body = await http(port, "POST", "/", b"v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n")
    assert status == 400 and b"data channels only" in body
    status, _, body = await http(port, "GET", "/")
    assert status == 200 and b"RTCPeerConnection" in body
    status, _, _ = await http(port, "DELETE", "/session/nope")
    assert status == 404
    status, _, body = await http(port, "POST", "/", b"v=0\r\n" + b"a=x\r\n" * 8000)  # 48 KB: read, then refused
    assert status == 400 and b"no m=application" in body
    status, _, _ = await http(port, "POST", "/", b"x" * (64 * 1024 + 1))
    assert status == 413


async def test_a_channel_the_server_opens(make_server: ServerFactory) -> None:
    listener = {"transport": "webrtc", "host": "127.0.0.1", "port": 0, "name": "rtc"}
    server = await make_server("tests.webrtc_apps:Greeter", [listener])
    port = server.listener("rtc").address[1]
    before = set(webrtc_apps.SEEN)
    pc = aiortc.RTCPeerConnection()
    pc.createDataChannel("mine")  # an offer needs a data channel section
    incoming: asyncio.Queue[Any] = asyncio.Queue()
    said: asyncio.Queue[Any] = asyncio.Queue()

    @pc.on("datachannel")
    def on_channel(channel: Any) -> None:
        incoming.put_nowait(channel)
        channel.on("message", said.put_nowait)

    try:
        await offer_answer(pc, port)
        channel = await asyncio.wait_for(incoming.get(), 10)
        assert channel.label == "" and channel.ordered
        assert await asyncio.wait_for(said.get(), 10) == "hello from the server"  # PPID 51: text
        (conn_id,) = set(webrtc_apps.SEEN) - before
        (opened,) = webrtc_apps.SEEN[conn_id]["opened"]
        assert opened % 2 == 1 and channel.id == opened, "the DTLS server's channels take odd stream ids"
    finally:
        await pc.close()
