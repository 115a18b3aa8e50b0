"""One WebTransport session: a ``mux.transport.TransportConnection`` for the behaviour, inside an HTTP/3 connection.

The session's streams are QUIC streams of the connection that carries it (their ids are QUIC's), its datagrams are
HTTP/3 datagrams on its CONNECT stream, and its end is the CONNECT stream's: a CLOSE_WEBTRANSPORT_SESSION capsule,
the stream's FIN, or its reset. The HTTP/3 side (``mux.quic.webtransport.WebTransportConnection``) routes what
arrives to the session it belongs to and calls the ``peer_*`` methods below; commands go down to it.

Like a QUIC server connection, a session is held until the behaviour's ``new_conn`` has accepted it: the ``200``
answering the CONNECT leaves only then (a ``Reject`` answers ``403``), and what the peer sent on the session's
streams meanwhile waits here, bounded by the connection's receive credit, and is delivered after ``connected``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aioquic.buffer import encode_uint_var
from aioquic.h3.connection import FrameType, H3Connection

from mux import transport as t
from mux.logs import peer_log
from mux.quic import wt_wire as wire

if TYPE_CHECKING:
    from mux.quic.webtransport import WebTransportConnection

log = logging.getLogger("mux.quic")

#: what the ``200`` answering a CONNECT says: the draft Chromium speaks (it checks the header)
ACCEPT_HEADERS = [(b":status", b"200"), (b"sec-webtransport-http3-draft", b"draft02")]


class SessionGone(t.ConnectionGone):
    """The session has ended (or its HTTP/3 connection has)."""


class WebTransportSession:
    transport_name = "webtransport"

    def __init__(self, owner: WebTransportConnection, session_id: int, props: dict[str, Any]) -> None:
        self.owner = owner
        #: the CONNECT stream's id, which names the session on its streams and datagrams
        self.session_id = session_id
        self.high_water = owner.high_water
        self.path: str = props["path"]
        self.sink: t.ConnectionSink | None = None
        self.finished = False
        #: pending (new_conn runs) -> open -> closed
        self.state = "pending"
        #: the session's streams, ours and the peer's, as long as they may carry anything
        self.streams: set[int] = set()
        #: events that arrived before the behaviour accepted the session
        self._held: list[t.Event] = []
        self._capsules = wire.CapsuleReader()
        #: the peer's close capsule, once it came
        self._peer_close: tuple[int, str] | None = None
        self._datagram_prefix = encode_uint_var(session_id // 4)

    # -- TransportConnection --------------------------------------------------------------------

    @property
    def alpn(self) -> str | None:
        return self.owner.alpn

    @property
    def local_address(self) -> t.Address:
        return self.owner.local_address

    @property
    def peer_address(self) -> t.Address:
        return self.owner.peer_address

    def stream_is_unidirectional(self, stream_id: int) -> bool:
        return bool(stream_id & 2)

    def stream_is_local(self, stream_id: int) -> bool:
        return self.owner.stream_is_local(stream_id)

    def _live(self) -> None:
        if self.finished:
            raise SessionGone(f"WebTransport session {self.session_id} has ended")
        if self.state != "open":
            raise t.TransportError(f"WebTransport session {self.session_id} is not accepted yet")

    def _own(self, stream_id: int) -> None:
        self._live()
        if stream_id not in self.streams:
            raise t.TransportError(f"stream {stream_id} is not a stream of WebTransport session {self.session_id}")

    def open_stream(self, unidirectional: bool = False) -> int:
        self._live()
        owner = self.owner
        assert owner.h3 is not None
        stream_id = open_webtransport_stream(owner.h3, self.session_id, unidirectional)
        self.streams.add(stream_id)
        owner.stream_session[stream_id] = self
        if len(owner.stream_session) > owner._sweep_at:
            owner._sweep()
        owner.driver.touch(owner)
        return stream_id

    def send(self, stream_id: int, data: bytes, fin: bool, props: Mapping[str, Any] | None) -> int:
        self._own(stream_id)
        return self.owner.send(stream_id, data, fin, props)

    def send_buffered(self, stream_id: int) -> int:
        return self.owner.send_buffered(stream_id)

    def consumed(self, stream_id: int, nbytes: int) -> None:
        self.owner.consumed(stream_id, nbytes)

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        self._own(stream_id)
        self.owner.reset_stream(stream_id, _code(error_code))

    def stop_sending(self, stream_id: int, error_code: int) -> None:
        self._own(stream_id)
        self.owner.stop_sending(stream_id, _code(error_code))

    def set_priority(self, stream_id: int, priority: int) -> None:
        self._own(stream_id)
        self.owner.set_priority(stream_id, priority)

    def send_datagram(self, data: bytes) -> None:
        self._live()
        room = self.datagram_state()["dgram_max_len"]
        if len(data) > room:
            raise t.TransportError(f"datagram of {len(data)} bytes does not fit in a packet (at most {room})")
        self.owner.send_datagram(self._datagram_prefix + data)

    def datagram_state(self) -> dict[str, Any]:
        """The connection's datagram room, less the quarter stream id that names the session."""
        state = self.owner.datagram_state()
        room = state["dgram_max_len"] - len(self._datagram_prefix)
        return {"dgram_send_enabled": state["dgram_send_enabled"] and room > 0, "dgram_max_len": max(room, 0)}

    def close(self, error_code: int, reason: str) -> None:
        """CLOSE_WEBTRANSPORT_SESSION with the code and reason, and our side of the CONNECT stream ends. Like
        QUIC's CONNECTION_CLOSE it is immediate: the session's streams are reset."""
        if self.finished:
            return
        if self.state == "pending":  # closed from new_conn (Stop, or the pool's handshake timeout)
            self.refuse(reason)
            return
        self.owner.write_request(self.session_id, data=wire.close_capsule(error_code, reason), end=True)
        self._end({"by": "local", "error_code": error_code & 0xFFFFFFFF, "reason": reason})

    def abort(self, reason: str) -> None:
        """The CONNECT stream is reset with H3_INTERNAL_ERROR: the peer sees the session fail, not close."""
        if self.finished:
            return
        self._reset_connect(wire.H3_INTERNAL_ERROR)
        self._end({"by": "local", "error_code": wire.H3_INTERNAL_ERROR, "reason": reason, "error": "aborted"})

    def refuse(self, reason: str = "refused") -> None:
        """The behaviour's ``Reject`` in ``new_conn``: the CONNECT gets ``403``."""
        if self.finished:
            return
        self.owner.respond(self.session_id, 403, reason)
        self._end({"by": "local", "error_code": 403, "reason": reason, "error": "refused"})

    def proceed(self) -> None:
        """``new_conn`` accepted the session: answer ``200``, then ``connected`` and what waited."""
        if self.finished or self.state != "pending":
            return
        owner = self.owner
        assert self.sink is not None
        if not owner.write_request(self.session_id, headers=ACCEPT_HEADERS):
            self._transport_end("peer", 0, "the CONNECT stream was stopped before the session was accepted", "aborted")
            return
        self.state = "open"
        sink = self.sink
        sink.deliver(t.DatagramStateChanged(self.datagram_state()))
        sink.deliver(t.Connected({**owner.session_props(), "path": self.path, "session_id": self.session_id}))
        held, self._held = self._held, []
        for event in held:
            sink.deliver(event)

    def flush(self) -> None:
        if not self.owner.finished:
            self.owner.flush()

    def stats(self) -> dict[str, Any]:
        stats = self.owner.stats()
        stats["transport"] = "webtransport"
        if self.finished:
            stats["state"] = "closed"
        elif self.state == "pending":
            stats["state"] = "handshaking"
        stats["webtransport"] = {"session_id": self.session_id, "path": self.path, "streams": len(self.streams)}
        return stats

    # -- from the HTTP/3 side --------------------------------------------------------------------

    def _deliver(self, event: t.Event) -> None:
        if self.state == "pending":
            self._held.append(event)
        elif self.sink is not None:
            self.sink.deliver(event)

    def peer_stream_data(self, stream_id: int, data: bytes, fin: bool) -> None:
        self.streams.add(stream_id)
        self._deliver(t.StreamData(stream_id, data, fin))

    def peer_stream_reset(self, stream_id: int, error_code: int) -> None:
        self._deliver(t.StreamReset(stream_id, wire.from_http3(error_code)))

    def peer_stop_sending(self, stream_id: int, error_code: int) -> None:
        self._deliver(t.StopSending(stream_id, wire.from_http3(error_code)))

    def peer_datagram(self, data: bytes) -> None:
        if self.state == "open" and self.sink is not None:
            self.sink.deliver(t.DatagramReceived(data))

    def peer_connect_data(self, data: bytes, ended: bool) -> None:
        """Capsules on the CONNECT stream, and its end."""
        if self.finished:
            return
        try:
            capsules = self._capsules.feed(data) if data else []
        except wire.CapsuleError as exc:
            peer_log(log, "webtransport.capsule", "session %d: %s", self.session_id, exc)
            self._reset_connect(wire.H3_MESSAGE_ERROR)
            self._transport_end("peer", wire.H3_MESSAGE_ERROR, str(exc), "protocol_violation")
            return
        for kind, value in capsules:
            if kind == wire.CLOSE_WEBTRANSPORT_SESSION and self._peer_close is None:
                self._peer_close = wire.parse_close(value)
                ended = True  # the close is the session's end, whether or not the FIN came with it
        if ended:
            code, reason = self._peer_close or (0, "")
            if self.sink is not None:
                self.sink.deliver(t.PeerShutdown(code, reason))
            if self.state == "open":  # our side of the CONNECT stream ends too
                self.owner.write_request(self.session_id, data=b"", end=True)
            self._end({"by": "peer", "error_code": code, "reason": reason})

    def peer_connect_reset(self, error_code: int) -> None:
        """The peer reset the CONNECT stream: the session failed rather than closed."""
        if not self.finished:
            self._transport_end("peer", error_code, "CONNECT stream reset", "aborted")

    def connection_event(self, event: t.Event) -> None:
        """The HTTP/3 connection's own end (or another event that concerns every session on it)."""
        if self.finished:
            return
        if type(event) is t.Closed:
            self._end(dict(event.props), reset=False)
        elif self.sink is not None and (self.state == "open" or type(event) in (t.PeerShutdown, t.TransportShutdown)):
            self.sink.deliver(event)

    # -- the end ---------------------------------------------------------------------------------

    def _reset_connect(self, code: int) -> None:
        owner = self.owner
        if not owner.finished:
            owner.quic.reset_stream(self.session_id, code)
            owner.quic.stop_stream(self.session_id, code)
            owner.driver.touch(owner)

    def _transport_end(self, by: str, code: int, reason: str, error: str) -> None:
        props = {"by": by, "error_code": code, "reason": reason, "error": error}
        if self.sink is not None:
            self.sink.deliver(t.TransportShutdown(dict(props)))
        self._end(props)

    def _end(self, props: dict[str, Any], *, reset: bool = True) -> None:
        """The session is over: its streams are reset both ways (the draft asks it of both ends) and forgotten,
        and ``closed`` is the behaviour's last event."""
        if self.finished:
            return
        self.finished = True
        self.state = "closed"
        self._held = []
        owner = self.owner
        if reset and not owner.finished:
            owner.abandon_streams(self.streams)
        owner.session_ended(self)
        self.streams = set()
        if self.sink is not None:
            self.sink.deliver(t.Closed(props))


def open_webtransport_stream(h3: H3Connection, session_id: int, unidirectional: bool) -> int:
    """aioquic's ``create_webtransport_stream``, plus what it leaves out: on a bidirectional stream we open, the
    peer's answer carries no frame header, so its HTTP/3 state must say from the start that the stream is the
    session's (else its data is parsed as HTTP/3 frames and the connection fails)."""
    stream_id = h3.create_webtransport_stream(session_id, is_unidirectional=unidirectional)
    if not unidirectional:
        with h3._get_or_create_stream(stream_id) as stream:
            stream.frame_type = FrameType.WEBTRANSPORT_STREAM
            stream.session_id = session_id
    return stream_id


def _code(error_code: int) -> int:
    try:
        return wire.to_http3(error_code)
    except ValueError as exc:
        raise t.TransportError(str(exc)) from None
