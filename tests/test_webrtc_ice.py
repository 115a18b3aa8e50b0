"""The ``webrtc`` listener at the wire, with the ``none`` handshake so a Python peer can speak plain SCTP: ICE-lite
answers only checks with our credentials, DCEP opens channels with their props and PR-SCTP policy, and a peer
that stops its consent checks loses its connection."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import struct
from typing import Any

from mux.sctp import events as se
from mux.sctp.association import Association
from mux.sctp.config import SctpConfig
from mux.webrtc import dcep, stun
from tests import webrtc_apps
from tests.conftest import ServerFactory
from tests.test_webrtc_aiortc import http

OFFER = """v=0\r
o=- 1 2 IN IP4 127.0.0.1\r
s=-\r
t=0 0\r
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r
c=IN IP4 0.0.0.0\r
a=ice-ufrag:peer\r
a=ice-pwd:peerpasswordpeerpassword\r
a=fingerprint:sha-256 00:11\r
a=setup:actpass\r
a=mid:0\r
a=sctp-port:5000\r
"""


class Peer:
    """A WebRTC peer of our own making: STUN checks by hand, then our SCTP in the clear (the ``none`` handshake)."""

    def __init__(self, port: int, answer: str) -> None:
        self.server = ("127.0.0.1", port)
        self.ufrag = re.search(r"a=ice-ufrag:(\S+)", answer).group(1)  # type: ignore[union-attr]
        self.pwd = re.search(r"a=ice-pwd:(\S+)", answer).group(1)  # type: ignore[union-attr]
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.assoc: Association | None = None
        self.events: list[Any] = []

    def check(self, *, pwd: str | None = None, nominate: bool = True, sock: socket.socket | None = None) -> None:
        attrs = [
            (stun.USERNAME, f"{self.ufrag}:peer".encode()),
            (stun.PRIORITY, struct.pack("!I", 1 << 24)),
            (stun.ICE_CONTROLLING, os.urandom(8)),
        ]
        if nominate:
            attrs.append((stun.USE_CANDIDATE, b""))
        key = (pwd or self.pwd).encode()
        (sock or self.sock).sendto(stun.build(stun.BINDING_REQUEST, os.urandom(12), attrs, key=key), self.server)

    async def receive(self, sock: socket.socket | None = None, timeout: float = 0.5) -> bytes | None:
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.sock_recv(sock or self.sock, 65536), timeout)
        except TimeoutError:
            return None

    def connect(self) -> Association:
        now = asyncio.get_running_loop().time()
        self.assoc = Association(SctpConfig(), local_port=5000, remote_port=5000, peer_addr=self.server)
        self.assoc.connect(now)
        self.flush()
        return self.assoc

    def flush(self) -> None:
        assert self.assoc is not None
        for data, _ in self.assoc.datagrams_to_send(asyncio.get_running_loop().time()):
            self.sock.sendto(data, self.server)

    async def pump(self, until: Any, seconds: float = 5.0) -> None:
        """Feed what arrives to the association until ``until(events)`` holds."""
        assert self.assoc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not until(self.events) and loop.time() < deadline:
            data = await self.receive(timeout=0.05)
            now = loop.time()
            if data is not None and data[0] >= 4:
                self.assoc.receive_datagram(data, self.server, now)
            timer = self.assoc.get_timer()
            if timer is not None and timer <= now:
                self.assoc.handle_timer(now)
            event = self.assoc.next_event()
            while event is not None:
                self.events.append(event)
                event = self.assoc.next_event()
            self.flush()


def messages(events: list[Any]) -> list[se.DataReceived]:
    return [e for e in events if isinstance(e, se.DataReceived)]


async def start(make_server: ServerFactory, **extra: Any) -> tuple[int, str]:
    listener = {"transport": "webrtc", "host": "127.0.0.1", "port": 0, "name": "rtc", "handshake": "none", **extra}
    server = await make_server("tests.webrtc_apps:WatchedEcho", [listener])
    port = server.listener("rtc").address[1]
    status, _, body = await http(port, "POST", "/", OFFER.encode())
    assert status == 201, body
    return port, body.decode()


async def test_only_checks_with_our_credentials_are_answered(make_server: ServerFactory) -> None:
    port, answer = await start(make_server)
    peer = Peer(port, answer)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind(("127.0.0.1", 0))
    stranger.setblocking(False)
    try:
        stranger.sendto(b"\x16\xfe\xfd" + b"\x00" * 60, peer.server)  # DTLS from nowhere
        stranger.sendto(b"\x13\x88\x13\x88" + b"\x00" * 30, peer.server)  # SCTP from nowhere
        peer.check(pwd="not-the-password-at-all", sock=stranger)
        stranger.sendto(
            stun.build(stun.BINDING_REQUEST, os.urandom(12), [(stun.USERNAME, b"nobody:peer")]), peer.server
        )
        assert await peer.receive(stranger) is None, "nothing is answered to a stranger"
        peer.check(sock=stranger)  # the right credentials: answered, from any address
        reply = await peer.receive(stranger)
        assert reply is not None
        msg = stun.parse(reply)
        assert msg is not None and msg.type == stun.BINDING_SUCCESS
        assert msg.check_integrity(peer.pwd.encode()) and msg.check_fingerprint()
        mapped = msg.get(stun.XOR_MAPPED_ADDRESS)
        assert mapped is not None and stun.read_xor_address(mapped, msg.transaction_id) == stranger.getsockname()
    finally:
        stranger.close()
        peer.sock.close()


async def test_dcep_opens_channels_with_their_props_and_policy(make_server: ServerFactory) -> None:
    port, answer = await start(make_server)
    peer = Peer(port, answer)
    before = set(webrtc_apps.SEEN)
    try:
        peer.check()
        assert await peer.receive() is not None
        assoc = peer.connect()
        await peer.pump(lambda ev: any(isinstance(e, se.AssociationUp) for e in ev))
        now = asyncio.get_running_loop().time()
        unordered = dcep.ChannelOpen(dcep.UNORDERED | dcep.PARTIAL_RELIABLE_REXMIT, 0, 0, "fast", "game").encode()
        assoc.send(0, dcep.ChannelOpen(dcep.RELIABLE, 0, 0, "chat", "").encode(), ppid=dcep.PPID_DCEP, now=now)
        assoc.send(2, unordered, ppid=dcep.PPID_DCEP, now=now)
        assoc.send(0, b"hi", ppid=dcep.PPID_STRING, now=now)
        assoc.send(2, b"\x00", ppid=dcep.PPID_BINARY_EMPTY, unordered=True, now=now)
        peer.flush()
        await peer.pump(lambda ev: len(messages(ev)) >= 4)
        got = {(m.stream_id, m.ppid, m.data, m.unordered) for m in messages(peer.events)}
        assert (0, dcep.PPID_DCEP, b"\x02", False) in got and (2, dcep.PPID_DCEP, b"\x02", False) in got, "ACKs"
        assert (0, dcep.PPID_STRING, b"hi", False) in got
        assert (2, dcep.PPID_BINARY_EMPTY, b"\x00", True) in got, "an empty binary message comes back as one"
        (conn_id,) = set(webrtc_apps.SEEN) - before
        seen = webrtc_apps.SEEN[conn_id]
        props = dict(seen["new_stream"])
        assert props[0]["label"] == "chat" and props[0]["ordered"] is True
        assert props[2] == {
            "label": "fast",
            "protocol": "game",
            "ordered": False,
            "max_retransmits": 0,
            "max_packet_life_time": None,
            "priority": 0,
        }
        # closing a channel is a stream reset: the echo's fin resets ours back
        assoc.close_stream(0)
        peer.flush()
        await peer.pump(lambda ev: any(isinstance(e, se.StreamReset) and 0 in e.stream_ids for e in ev))
        assert any(isinstance(e, se.StreamReset) and 0 in e.stream_ids for e in peer.events)
        assert (0, 0, True, None, None) in seen["stream_data"], "the behaviour saw the channel's end as fin"
    finally:
        peer.sock.close()


async def test_no_consent_ends_the_connection(make_server: ServerFactory) -> None:
    port, answer = await start(make_server, consent_timeout_ms=1000)
    peer = Peer(port, answer)
    before = set(webrtc_apps.SEEN)
    try:
        peer.check()
        assert await peer.receive() is not None
        peer.connect()
        await peer.pump(lambda ev: any(isinstance(e, se.AssociationUp) for e in ev))
        # no more checks: within a few seconds the server gives the path up and aborts the association
        await peer.pump(lambda ev: any(isinstance(e, se.AssociationAborted) for e in ev), seconds=5)
        assert any(isinstance(e, se.AssociationAborted) for e in peer.events)
        (conn_id,) = set(webrtc_apps.SEEN) - before
        seen = webrtc_apps.SEEN[conn_id]
        for _ in range(100):
            if "closed" in seen:
                break
            await asyncio.sleep(0.02)
        assert seen["closed"][0]["error"] == "communication_lost"
        assert "consent" in seen["closed"][0]["reason"]
    finally:
        peer.sock.close()


async def test_a_refused_offer_gets_503_and_a_rejected_peer_an_abort(make_server: ServerFactory) -> None:
    listener = {"transport": "webrtc", "host": "127.0.0.1", "port": 0, "name": "rtc", "handshake": "none"}
    server = await make_server("tests.webrtc_apps:Refusing", [listener])
    port = server.listener("rtc").address[1]
    server.pool.suspend("rtc")
    status, _, _ = await http(port, "POST", "/", OFFER.encode())
    assert status == 503, "a suspended listener takes no offer"
    server.pool.resume("rtc")
    status, _, body = await http(port, "POST", "/", OFFER.encode())
    assert status == 201
    peer = Peer(port, body.decode())
    try:
        peer.check()
        assert await peer.receive() is not None
        peer.connect()
        await peer.pump(lambda ev: any(isinstance(e, se.AssociationAborted) for e in ev))
        (aborted,) = [e for e in peer.events if isinstance(e, se.AssociationAborted)]
        assert "refused: not today" in aborted.reason
        assert not any(isinstance(e, se.AssociationUp) for e in peer.events), "never up for a refused peer"
    finally:
        peer.sock.close()


def test_ice_lite_nomination_and_consent() -> None:
    from mux.webrtc.ice import IceLite

    ice = IceLite("ours", "ourpasswordourpassword", "peer", "peerpasswordpeerpassword")

    def check(nominate: bool, username: bytes = b"ours:peer", key: bytes = b"ourpasswordourpassword") -> stun.Message:
        attrs = [(stun.USERNAME, username), (stun.ICE_CONTROLLING, b"\x00" * 8)]
        if nominate:
            attrs.append((stun.USE_CANDIDATE, b""))
        msg = stun.parse(stun.build(stun.BINDING_REQUEST, os.urandom(12), attrs, key=key))
        assert msg is not None
        return msg

    assert not ice.valid(check(False, username=b"ours:someone-else"))
    assert not ice.valid(check(False, key=b"a guess"))
    first, second = ("10.0.0.1", 1000), ("127.0.0.1", 2000)
    assert ice.valid(check(False))
    ice.on_check(check(False), first, 0.0)
    assert ice.selected == first and not ice.nominated, "the first checked address, until one is nominated"
    ice.on_check(check(True), second, 1.0)
    assert ice.selected == second and ice.nominated
    ice.on_check(check(False), first, 20.0)  # checks on another address keep no consent for the nominated one
    assert not ice.consent_expired(30.0, 30.0)
    assert ice.consent_expired(31.5, 30.0)
    ice.on_check(check(False), second, 31.0)
    assert not ice.consent_expired(31.5, 30.0)


async def test_a_reload_changes_the_page_and_options_for_new_sessions(tmp_path: Any) -> None:
    from mux.server import Server
    from tests.test_reload import reload, start, write

    first, second = tmp_path / "a.html", tmp_path / "b.html"
    first.write_text("<p>first page")
    second.write_text("<p>second page")
    config = tmp_path / "mux.yaml"

    def listener(page: Any, **extra: Any) -> dict[str, Any]:
        return {"name": "rtc", "transport": "webrtc", "host": "127.0.0.1", "port": 0, "page": str(page), **extra}

    servers: list[Server] = []
    write(config, [listener(first)])
    server = await start(servers, config)
    try:
        port = server.listener("rtc").address[1]
        assert (await http(port, "GET", "/"))[2] == b"<p>first page"
        write(config, [listener(second, consent_timeout_ms=5000)])
        answer = await reload(server)
        assert answer["ok"] and answer["result"]["updated"] == ["rtc"]
        assert (await http(port, "GET", "/"))[2] == b"<p>second page"
        assert server.listener("rtc").options.consent_timeout_ms == 5000  # type: ignore[attr-defined]
        write(config, [listener(tmp_path / "gone.html")])
        answer = await reload(server)
        assert not answer["ok"] and "gone.html" in str(answer)
        assert (await http(port, "GET", "/"))[2] == b"<p>second page", "a refused reload changes nothing"
    finally:
        for each in servers:
            await asyncio.wait_for(each.stop(), 10)
