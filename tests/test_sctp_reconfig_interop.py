"""Stream reconfiguration (RFC 6525) against usrsctp's own programs.

``rtcweb`` is an early WebRTC data channel peer: a channel is a stream each way (its own opens on the lowest free
outbound id from 1 up), closed by resetting its outgoing stream; it answers a reset of its incoming stream by
resetting its outgoing one, asks for more outbound streams when it runs out, and takes any the peer adds. It
enables stream resets and stream changes, so usrsctp carries them out. ``echo_server`` enables neither, so
usrsctp refuses them: a refused reset must leave the association working.

What these programs cannot make usrsctp do, and is covered in memory instead (tests/test_sctp_reconfig.py): send
an Incoming SSN Reset Request, an SSN/TSN Reset Request or an Add Incoming Streams Request (none of them ever
asks), or send a reset whose last TSN we have not received yet (usrsctp resets a stream only once its queue is
empty, so our deferred reset never runs against it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mux import Connection, ConnectionBehaviour, Stream, connect, registry
from mux.transport import TransportError
from tests import usrsctp

_why_not = usrsctp.missing("rtcweb", "echo_server") or (
    None if "sctp" in registry.plugins() else "mux has no sctp transport registered"
)
pytestmark = pytest.mark.skipif(_why_not is not None, reason=_why_not or "")

RTCWEB_PORT = 5000
#: data channel control messages (draft-jesup-rtcweb-data-protocol, as rtcweb speaks it), PPID 50
CONTROL, DOMSTRING = 50, 51
OPEN_REQUEST = struct.pack("!BBHHh", 0, 0, 0, 0, 0)  # reliable, ordered, no label
ACK = b"\x02"


def open_response(reverse_stream: int) -> bytes:
    return struct.pack("!BBHH", 1, 0, 0, reverse_stream)


class Rtcweb:
    """A running ``rtcweb`` server: commands go to its stdin as the test goes on (``usrsctp.Program`` feeds stdin
    once), its output, line buffered, to a file."""

    def __init__(self, local_udp: int, remote_udp: int, *, interleaving: bool = False) -> None:
        fd, self._out = tempfile.mkstemp(prefix="usrsctp-rtcweb-", suffix=".out")
        preload = usrsctp._preload(False, interleaving)  # I-DATA on (usrsctp.interleaving)
        argv = [str(usrsctp.path("rtcweb")), str(local_udp), str(remote_udp), str(RTCWEB_PORT)]
        if shutil.which("stdbuf"):
            argv = ["stdbuf", "-oL", *argv]
        with os.fdopen(fd, "ab") as out:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **preload} if preload else None,
            )
        deadline = time.monotonic() + 5
        while not usrsctp.udp_port_taken(local_udp):
            assert self.proc.poll() is None, self.output()
            assert time.monotonic() < deadline, "rtcweb did not bind its UDP port"
            time.sleep(0.01)
        time.sleep(0.1)  # and listen on its SCTP port

    def command(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def output(self) -> str:
        return Path(self._out).read_bytes().decode("utf-8", "replace")

    async def wait_for(self, pattern: str, count: int = 1, timeout: float = 10.0) -> list[re.Match[str]]:
        compiled = re.compile(pattern, re.M)
        async with asyncio.timeout(timeout):
            while len(matches := list(compiled.finditer(self.output()))) < count:
                await asyncio.sleep(0.02)
        return matches

    async def status(self) -> str:
        """What ``status`` prints: the association's stream counts and every channel not closed."""
        before = len(self.output())
        self.command("status")
        async with asyncio.timeout(5):
            while "Number of streams" not in self.output()[before:]:
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.05)
        return self.output()[before:]

    async def no_channels(self, timeout: float = 10.0) -> None:
        """Until ``status`` lists no channel: each closed both ways, as rtcweb sees it."""
        async with asyncio.timeout(timeout):
            while "Channel with id =" in await self.status():
                await asyncio.sleep(0.05)

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._out)


class Peer(ConnectionBehaviour):
    """The other end of rtcweb's data channels: answers its open requests on a stream of ours, ends its side of a
    stream when the peer ends its own, and records everything."""

    def init(self, opts: dict[str, Any]) -> None:
        self.log: list[tuple[Any, ...]] = []
        self.changed = asyncio.Event()
        #: rtcweb's stream -> ours, per channel it opened
        self.answers: dict[int, int] = {}

    def _note(self, *entry: Any) -> None:
        self.log.append(entry)
        self.changed.set()

    def new_stream(self, stream: Stream, props: dict[str, Any]) -> None:
        self._note("new_stream", stream.id)

    def stream_data(self, stream: Stream, data: bytes, fin: bool, props: dict[str, Any]) -> None:
        self._note("data", stream.id, data, fin, props.get("ppid"))
        if props.get("ppid") == CONTROL and data[:1] == b"\x00":
            ours = self.conn.open_stream()
            self.answers[stream.id] = ours.id
            ours.send(open_response(stream.id), ppid=CONTROL)
        if fin:
            # the peer closed its side of the channel: close ours, the stream we answered on, and this id's
            for sid in (self.answers.get(stream.id), stream.id):
                mine = self.conn.streams.get(sid) if sid is not None else None
                if mine is not None and not mine.send_done:
                    mine.send(b"", fin=True)

    def peer_send_aborted(self, stream: Stream, error_code: int) -> None:
        self._note("peer_send_aborted", stream.id, error_code)

    def stream_closed(self, stream: Stream, props: dict[str, Any]) -> None:
        self._note("stream_closed", stream.id)

    def streams_available(self, conn: Connection, bidi: int, unidi: int) -> None:
        self._note("streams_available", bidi)

    async def until(self, done: Any, timeout: float, what: str) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not done():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError(f"{what} within {timeout}s; got {self.log}") from None

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [e for e in self.log if e[0] == kind]


@contextlib.asynccontextmanager
async def rtcweb_and_us(
    loss: float = 0.0, interleaving: bool = False, **options: Any
) -> AsyncIterator[tuple[Rtcweb, Peer, Connection]]:
    """rtcweb serving, and our client connected to it (through a proxy losing ``loss`` of each direction's
    packets, when given); with ``interleaving`` over I-DATA (RFC 8260)."""
    from mux.impair.model import Impairment
    from mux.impair.proxy import ImpairProxy

    rtc_udp, our_udp = usrsctp.free_udp_ports(2)
    rtc = Rtcweb(rtc_udp, our_udp, interleaving=interleaving)
    proxy: ImpairProxy | None = None
    try:
        target = rtc_udp
        if loss:
            lossy = Impairment(loss=loss)
            proxy = ImpairProxy(("127.0.0.1", 0), ("127.0.0.1", rtc_udp), up=lossy, down=lossy, seed=17)
            await proxy.start()
            target = proxy.address[1]
        peer = Peer()
        conn = await connect(
            peer,
            f"sctp://127.0.0.1:{target}",
            options={"sctp_port": RTCWEB_PORT, "local_udp_port": our_udp, **options},
            timeout=20,
        )
        await rtc.wait_for(r"^Association change SCTP_COMM_UP.*RE-CONFIG")
        assert ("idata" in conn.stats()["sctp"]["extensions"]) == interleaving
        try:
            yield rtc, peer, conn
        finally:
            conn.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(conn.wait_closed(), 10)
    finally:
        if proxy is not None:
            proxy.close()
        rtc.close()


@pytest.mark.parametrize("interleaving", [False, True])
async def test_a_data_channel_closes_by_stream_resets_both_ways_and_its_ids_come_back(interleaving: bool) -> None:
    """rtcweb opens a channel (its stream 1), we answer on a stream of ours; we close our side with ``fin``: usrsctp
    performs our reset and rtcweb resets its stream in turn, which we see as ``fin``. Opened again, the channel
    comes on stream 1 again: a new stream to us, after the old one's ``stream_closed`` (over I-DATA, both MID
    counters of the stream start over)."""
    async with rtcweb_and_us(interleaving=interleaving) as (rtc, peer, conn):
        rtc.command("open 0 0 0")
        await peer.until(lambda: 1 in peer.answers and peer.of("data")[-1][2] == ACK, 5, "no channel")
        ours = conn.streams[peer.answers[1]]
        await ours.send(b"hello rtcweb", ppid=DOMSTRING)
        await rtc.wait_for(r"^Message received of length 12 on channel with id 0: hello rtcweb$")
        rtc.command("send 0:hello mux")
        await peer.until(lambda: ("data", 1, b"hello mux", False, DOMSTRING) in peer.log, 5, "no message")
        await ours.send(b"", fin=True)
        # usrsctp performed our reset (its incoming stream), and rtcweb answered with its own
        await rtc.wait_for(rf"^Stream reset event: flags = 1, incoming stream ids = {ours.id}\.$")
        await peer.until(lambda: ("data", 1, b"", True, None) in peer.log, 5, "rtcweb's stream never ended")
        await peer.until(lambda: len(peer.of("stream_closed")) == 1, 5, "stream 1 never closed")
        await rtc.no_channels()  # the channel is closed at rtcweb too, once it has our answers
        stats = conn.stats()["sctp"]
        assert stats["reconfig_sent"] >= 1 and stats["streams_reset_by_peer"] == 1
        assert "stream_resets_refused" not in conn.stats()["sctp"]

        rtc.command("open 0 0 0")  # the same stream again
        await peer.until(lambda: len(peer.of("new_stream")) == 2, 5, "stream 1 did not come back")
        log = peer.log
        reopened = len(log) - 1 - log[::-1].index(("new_stream", 1))
        assert log.index(("stream_closed", 1)) < reopened
        # the new stream's first message is the channel's open request (rtcweb's ACK of our answer may follow it)
        assert next(e for e in log[reopened:] if e[0] == "data" and e[1] == 1)[2] == OPEN_REQUEST


async def test_rtcweb_adds_streams_and_we_take_them_within_max_instreams() -> None:
    """rtcweb opens its channels on the lowest free outbound stream from 1; past the streams it started with it
    asks to add one each time (Add Outgoing Streams), and we accept within the ``max_instreams`` we offered."""
    async with rtcweb_and_us(initmsg={"max_instreams": 32}) as (rtc, peer, conn):
        initial = conn.stats()["sctp"]["instrms"]
        channels = initial + 1  # stream 0 is never used by rtcweb: two channels need added streams
        for _ in range(channels):
            rtc.command("open 0 0 0")
            await asyncio.sleep(0.05)
        await peer.until(lambda: len(peer.answers) == channels, 10, "not every channel opened")
        assert sorted(peer.answers) == list(range(1, channels + 1))
        assert conn.stats()["sctp"]["instrms"] == initial + 2
        await rtc.wait_for(rf"^Stream change event: streams \(in/out\) = \(\d+/{initial + 2}\), flags = 0\.$")


async def test_we_add_streams_and_stop_rtcweb_sending() -> None:
    """We run out of outbound streams: ``open_stream`` asks usrsctp for more (it accepts: rtcweb enables stream
    changes) and ``streams_available`` follows. ``stop_sending`` on rtcweb's stream: usrsctp resets it (its reset
    is a plain one, no mux marker: ``fin`` for us, and the code is lost)."""
    async with rtcweb_and_us() as (rtc, peer, conn):
        rtc.command("open 0 0 0")
        await peer.until(lambda: 1 in peer.answers, 5, "no channel")
        opened = []
        with pytest.raises(TransportError, match="asked the peer for"):
            while True:
                opened.append(conn.open_stream())
        total = conn.stats()["sctp"]["outstrms"]
        await peer.until(lambda: len(peer.of("streams_available")) == 2, 5, "no streams added")
        assert conn.stats()["sctp"]["outstrms"] == 2 * total
        assert conn.open_stream().id == total  # the first of the new ones
        await rtc.wait_for(rf"^Stream change event: streams \(in/out\) = \({2 * total}/\d+\), flags = 0\.$")

        conn.streams[1].stop_sending(42)
        await rtc.wait_for(r"^Stream reset event: flags = 2, outgoing stream ids = 1\.$")
        await peer.until(lambda: ("data", 1, b"", True, None) in peer.log, 5, "rtcweb never reset its stream")
        assert not peer.of("peer_send_aborted")


async def test_a_reset_usrsctp_refuses_leaves_the_association_working() -> None:
    """echo_server does not enable stream resets: usrsctp answers "Denied". Our side of the stream ends locally
    (counted), and the association carries on."""
    echo_udp, client_udp = usrsctp.free_udp_ports(2)
    with usrsctp.running(usrsctp.echo_server(echo_udp, client_udp)):
        peer = Peer()
        conn = await connect(
            peer,
            f"sctp://127.0.0.1:{echo_udp}",
            options={"sctp_port": usrsctp.ECHO_PORT, "local_udp_port": client_udp},
        )
        first = conn.open_stream()
        await first.send(b"and that was it", fin=True)
        await peer.until(lambda: ("data", first.id, b"and that was it", False, 0) in peer.log, 5, "no echo")
        async with asyncio.timeout(5):
            while not conn.stats()["sctp"].get("reconfig_refused"):
                await asyncio.sleep(0.02)
        second = conn.open_stream()
        assert second.id != first.id  # a refused reset leaves the id in use
        await second.send(b"still here")
        await peer.until(lambda: ("data", second.id, b"still here", False, 0) in peer.log, 5, "no echo")
        conn.close()
        props = await asyncio.wait_for(conn.wait_closed(), 5)
        assert props["by"] == "local" and "error" not in props, props


@pytest.mark.parametrize("interleaving", [False, True])
async def test_channels_open_and_close_through_loss(interleaving: bool) -> None:
    """Through a proxy losing a tenth of the packets each way, rtcweb opens and closes channels over and over
    (RE-CONFIG requests and responses lost and sent again, by both stacks); every one ends closed both ways, and
    the association with a SHUTDOWN."""
    timers = {"initial": 300, "min": 100, "max": 1000}
    async with rtcweb_and_us(loss=0.1, interleaving=interleaving, rtoinfo=timers) as (rtc, peer, conn):
        for cycle in range(1, 7):
            rtc.command("open 0 0 0")
            created = (await rtc.wait_for(r"^Channel with id (\d+) created\.$", cycle, 20))[-1]
            await peer.until(lambda n=cycle: len(peer.of("new_stream")) == n, 20, f"channel {cycle} never opened")
            sid = peer.of("new_stream")[-1][1]
            await peer.until(lambda: peer.of("data")[-1][2] == ACK, 20, f"channel {cycle} never acknowledged")
            rtc.command(f"close {created[1]}")
            await peer.until(lambda s=sid: ("stream_closed", s) in peer.log, 20, f"stream {sid} never closed")
            await rtc.no_channels(20)  # closed at rtcweb too: our reset reached it
        conn.close()
        props = await asyncio.wait_for(conn.wait_closed(), 20)
        assert props["by"] == "local" and "error" not in props, props
