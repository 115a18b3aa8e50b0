"""WebTransport over HTTP/3: a QUIC listener with ``webtransport: {paths: [...]}`` serves browsers.

Each QUIC connection runs aioquic's HTTP/3 layer (``H3Connection(enable_webtransport=True)``); each WebTransport
session on it (an extended CONNECT to one of ``paths``) is a connection to the behaviour, a
``mux.quic.wt_session.WebTransportSession``. One QUIC connection may carry several sessions (Chromium pools them),
and a session's streams and datagrams are routed to it here. Any other HTTP/3 request gets a small page at ``/``
and ``404`` elsewhere, so any HTTP/3 client can connect.

The QUIC connection itself is no behaviour connection: it is admitted as any QUIC peer is (Retry, refusal), and each
CONNECT is admitted by the pool again before its session gets a behaviour (``503`` when refused).

Receive credit still moves only as the behaviour consumes: the bytes of a session's stream data count as the
behaviour's, and everything else the HTTP/3 layer takes (stream prefixes, control and QPACK streams, headers,
capsules, a plain request's body) is credited as soon as the layer has taken it; what it still buffers (a HEADERS
frame not complete yet) is not.
"""

from __future__ import annotations

import logging
from typing import Any, cast

from aioquic.h3 import events as h3e
from aioquic.h3.connection import H3Connection, ProtocolError
from aioquic.quic import events as qe

from mux import transport as t
from mux.logs import peer_log
from mux.pool import Admission
from mux.quic import wt_wire as wire
from mux.quic.connection import QuicTransportConnection
from mux.quic.listener import QuicListener
from mux.quic.wt_session import WebTransportSession

log = logging.getLogger("mux.quic")

ALPN = "h3"
#: events for streams of a session whose CONNECT has not arrived yet (reordering), per QUIC connection
MAX_ORPHANS = 16
SWEEP_MIN = 64
PAGE = b"<!doctype html><title>mux</title><p>mux WebTransport server: open a WebTransport session to %s.\n"


class WebTransportConnection(QuicTransportConnection):
    """One QUIC connection carrying HTTP/3: its WebTransport sessions are the behaviour's connections."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.h3: H3Connection | None = None
        self.listener: WebTransportListener | None = None
        #: live sessions by session id (the CONNECT stream's id)
        self.sessions: dict[int, WebTransportSession] = {}
        #: which session each live WebTransport stream belongs to
        self.stream_session: dict[int, WebTransportSession] = {}
        #: bytes the HTTP/3 layer holds in its buffers (a HEADERS frame not complete yet), per stream: not
        #: credited to the peer until it takes them
        self._h3_held: dict[int, int] = {}
        #: stream data for sessions not known yet, by session id: (stream id, data, fin)
        self._orphans: dict[int, list[tuple[int, bytes, bool]]] = {}
        self._orphan_count = 0
        #: sweep finished streams out of the tables once they hold this many (``_sweep``)
        self._sweep_at = SWEEP_MIN
        self.sink = cast(t.ConnectionSink, _AllSessions(self))

    # -- from the listener -------------------------------------------------------------------------

    def session_props(self) -> dict[str, Any]:
        return {"transport": "webtransport", "alpn": ALPN, "peer": self.peer_address}

    # -- QUIC events -------------------------------------------------------------------------------

    def handle_event(self, event: Any) -> None:
        kind = type(event)
        if kind is qe.StreamDataReceived:
            self._stream_data(event)
        elif kind is qe.DatagramFrameReceived:
            if self.h3 is not None:
                self._h3_events(self.h3.handle_event(event))
        elif kind is qe.StreamReset:
            self._stream_reset(event)
        elif kind is qe.StopSendingReceived:
            session = self.stream_session.get(event.stream_id)
            if self.h3 is not None:
                self.h3.handle_event(event)
            if session is not None:
                session.peer_stop_sending(event.stream_id, event.error_code)
        else:
            if kind is qe.ProtocolNegotiated and event.alpn_protocol == ALPN and self.h3 is None:
                self.h3 = H3Connection(self.quic, enable_webtransport=True)
                self.driver.touch(self)
            super().handle_event(event)

    def _stream_data(self, event: qe.StreamDataReceived) -> None:
        stream_id = event.stream_id
        h3 = self.h3
        if h3 is None:  # no HTTP/3 (cannot happen with ALPN h3 only): nothing will ever read it
            self._credit(stream_id, len(event.data))
            return
        held = self._h3_held
        before = held.get(stream_id, 0)
        events = h3.handle_event(event)
        delivered = self._h3_events(events)
        stream = h3._stream.get(stream_id)
        after = len(stream.buffer) if stream is not None else 0
        if after:
            held[stream_id] = after
        elif before:
            del held[stream_id]
        self._credit(stream_id, len(event.data) + before - after - delivered.get(stream_id, 0))
        if len(held) > (stream_id in held):
            self._recount_held(stream_id, delivered)
        if len(h3._stream) > self._sweep_at or len(self.stream_session) > self._sweep_at:
            self._sweep()

    def _sweep(self) -> None:
        """Forget streams QUIC has discarded (done both ways): the HTTP/3 layer never forgets a WebTransport
        bidirectional stream by itself (we write on it past it), and our tables keep a session's streams while it
        lives. Amortised O(1) per stream, as the threshold doubles with what is live."""
        h3 = self.h3
        assert h3 is not None
        discarded = self.quic._stream_is_discarded
        for stream_id in [sid for sid in h3._stream if discarded(sid)]:
            del h3._stream[stream_id]
        table = self.stream_session
        for stream_id in [sid for sid in table if discarded(sid)]:
            table.pop(stream_id).streams.discard(stream_id)
        self._sweep_at = SWEEP_MIN + 2 * max(len(h3._stream), len(table))

    def _recount_held(self, skip: int, delivered: dict[int, int]) -> None:
        """Streams whose buffered HEADERS a QPACK encoder update has just released: credit what left."""
        h3 = self.h3
        assert h3 is not None
        held = self._h3_held
        for stream_id, before in list(held.items()):
            if stream_id == skip:
                continue
            stream = h3._stream.get(stream_id)
            after = len(stream.buffer) if stream is not None else 0
            if after != before:
                if after:
                    held[stream_id] = after
                else:
                    del held[stream_id]
                self._credit(stream_id, before - after - delivered.get(stream_id, 0))

    def _credit(self, stream_id: int, nbytes: int) -> None:
        """Receive credit for bytes no behaviour will see (the HTTP/3 layer took them)."""
        if nbytes > 0:
            self.consumed(stream_id, nbytes)

    def _stream_reset(self, event: qe.StreamReset) -> None:
        stream_id = event.stream_id
        self._h3_held.pop(stream_id, None)  # the core wrote the stream's bytes off
        session = self.stream_session.get(stream_id)
        connect = self.sessions.get(stream_id)
        if self.h3 is not None:
            self.h3.handle_event(event)
        if session is not None:
            session.peer_stream_reset(stream_id, event.error_code)
        elif connect is not None:
            connect.peer_connect_reset(event.error_code)

    def _h3_events(self, events: list[h3e.H3Event]) -> dict[int, int]:
        """Route HTTP/3 events; returns the stream bytes handed to behaviours (credited as they consume them)."""
        delivered: dict[int, int] = {}
        for event in events:
            kind = type(event)
            if kind is h3e.WebTransportStreamDataReceived:
                assert isinstance(event, h3e.WebTransportStreamDataReceived)
                if self._session_stream_data(event.session_id, event.stream_id, event.data, event.stream_ended):
                    delivered[event.stream_id] = delivered.get(event.stream_id, 0) + len(event.data)
            elif kind is h3e.DatagramReceived:
                assert isinstance(event, h3e.DatagramReceived)
                session = self.sessions.get(event.stream_id)
                if session is not None:
                    session.peer_datagram(event.data)
            elif kind is h3e.HeadersReceived:
                assert isinstance(event, h3e.HeadersReceived)
                if event.stream_id not in self.sessions:
                    self._request(event)
            elif kind is h3e.DataReceived:
                assert isinstance(event, h3e.DataReceived)
                session = self.sessions.get(event.stream_id)
                if session is not None:
                    session.peer_connect_data(event.data, event.stream_ended)
        return delivered

    def _session_stream_data(self, session_id: int, stream_id: int, data: bytes, fin: bool) -> bool:
        """Hand a session's stream data to it; False when no behaviour will see it (credit it now)."""
        session = self.stream_session.get(stream_id)
        if session is None:
            session = self.sessions.get(session_id)
            if session is None:
                return self._orphan(session_id, stream_id, data, fin)
            self.stream_session[stream_id] = session
        session.peer_stream_data(stream_id, data, fin)
        return True

    def _orphan(self, session_id: int, stream_id: int, data: bytes, fin: bool) -> bool:
        """A stream of a session whose CONNECT has not been read yet (it may come in a later packet): kept, a few
        per connection; beyond that, or for a session that cannot come any more, it is refused."""
        h3 = self.h3
        assert h3 is not None
        connect = h3._stream.get(session_id)
        if connect is None:  # not read yet, or read and done with (then QUIC has discarded it, or soon will)
            could_come = session_id % 4 == 0 and not self.quic._stream_is_discarded(session_id)
        else:
            could_come = connect.headers_recv_state.name == "INITIAL"
        if could_come and self._orphan_count < MAX_ORPHANS:
            self._orphan_count += 1
            self._orphans.setdefault(session_id, []).append((stream_id, data, fin))
            return True
        self.counters_add("webtransport_stream_refused")
        self._refuse_stream(stream_id)
        return False

    def _refuse_stream(self, stream_id: int) -> None:
        self._end_stream(stream_id, wire.BUFFERED_STREAM_REJECTED)
        self.driver.touch(self)

    def _end_stream(self, stream_id: int, code: int) -> None:
        """Stop what a stream still receives and reset what it still sends (either is a no-op once finished)."""
        quic = self.quic
        stream = quic._streams.get(stream_id)
        if stream is None:
            return
        local, unidirectional = self.stream_is_local(stream_id), bool(stream_id & 2)
        if not stream.receiver.is_finished and not (local and unidirectional):
            quic.stop_stream(stream_id, code)
        if (local or not unidirectional) and stream.sender._buffer_fin is None:  # one whose FIN is queued ends anyway
            quic.reset_stream(stream_id, code)

    # -- requests ----------------------------------------------------------------------------------

    def _request(self, event: h3e.HeadersReceived) -> None:
        listener = self.listener
        assert listener is not None
        stream_id = event.stream_id
        headers: dict[str, str] = {}
        for name, value in event.headers:
            key, text = name.decode(errors="replace"), value.decode(errors="replace")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        method, path = headers.get(":method", ""), headers.get(":path", "")
        if method != "CONNECT" or headers.get(":protocol") != "webtransport":
            self._plain_request(stream_id, method, path, event.stream_ended)
            return
        if path.split("?", 1)[0] not in listener.paths:
            self.respond(stream_id, 404, "no WebTransport endpoint at this path")
            self._drop_orphans(stream_id)
            return
        pool = listener.pool
        admission = pool.admit(listener.name)
        if admission is not Admission.ACCEPT or event.stream_ended:
            self.respond(stream_id, 503 if not event.stream_ended else 400, "not accepting sessions")
            self._drop_orphans(stream_id)
            return
        props = {
            **self.session_props(),
            "listener": listener.name,
            "path": path,
            "origin": headers.get("origin"),
            "authority": headers.get(":authority"),
            "headers": {k: v for k, v in headers.items() if not k.startswith(":")},
            "session_id": stream_id,
        }
        session = WebTransportSession(self, stream_id, props)
        self.sessions[stream_id] = session
        session.sink = pool.accept(listener.name, session, props)
        orphans = self._orphans.pop(stream_id, [])
        self._orphan_count -= len(orphans)
        for orphan_id, data, fin in orphans:
            self.stream_session[orphan_id] = session
            session.peer_stream_data(orphan_id, data, fin)

    def _drop_orphans(self, session_id: int) -> None:
        orphans = self._orphans.pop(session_id, [])
        self._orphan_count -= len(orphans)
        for stream_id, data, _fin in orphans:
            self._credit(stream_id, len(data))
            self._refuse_stream(stream_id)

    def _plain_request(self, stream_id: int, method: str, path: str, ended: bool) -> None:
        """Not a WebTransport session: a small page at ``/``, ``404`` elsewhere; a request body is not read."""
        assert self.listener is not None
        if method in ("GET", "HEAD") and path.split("?", 1)[0] == "/":
            page = PAGE % ", ".join(self.listener.paths).encode()
            self.answer(stream_id, 200, page, content_type=b"text/html", head_only=method == "HEAD")
        else:
            self.respond(stream_id, 404, "not found")

    def respond(self, stream_id: int, status: int, text: str) -> None:
        """A final answer with a short text body (``404``, ``403``, ``503``...)."""
        self.answer(stream_id, status, (text + "\n").encode())

    def answer(
        self, stream_id: int, status: int, body: bytes, *, content_type: bytes = b"text/plain", head_only: bool = False
    ) -> None:
        """A whole response, ending our side of the stream; the rest of the request is not read (STOP_SENDING)."""
        headers = [(b":status", str(status).encode()), (b"content-type", content_type)]
        headers.append((b"content-length", str(len(body)).encode()))
        self.write_request(stream_id, headers=headers, data=b"" if head_only else body, end=True)
        stream = self.quic._streams.get(stream_id)
        if stream is not None and not stream.receiver.is_finished:
            self.quic.stop_stream(stream_id, wire.H3_NO_ERROR)

    def write_request(
        self,
        stream_id: int,
        *,
        headers: list[tuple[bytes, bytes]] | None = None,
        data: bytes | None = None,
        end: bool = False,
    ) -> bool:
        """HEADERS and/or DATA on a request (or CONNECT) stream; False when it cannot carry them any more (the peer
        stopped or reset it, or the connection is gone): that is the peer's doing, not an error of ours."""
        h3 = self.h3
        if h3 is None or self.finished:
            return False
        try:
            if headers is not None:
                h3.send_headers(stream_id, headers, end_stream=end and data is None)
            if data is not None:
                h3.send_data(stream_id, data, end_stream=end)
        except (RuntimeError, ValueError, ProtocolError) as exc:
            peer_log(log, "webtransport.write", "stream %d cannot be written: %s", stream_id, exc)
            return False
        self.driver.touch(self)
        return True

    # -- for sessions ------------------------------------------------------------------------------

    def abandon_streams(self, stream_ids: set[int]) -> None:
        """A session ended: reset what its streams still send, and stop what they still receive."""
        for stream_id in stream_ids:
            self._end_stream(stream_id, wire.SESSION_GONE)
        self.driver.touch(self)

    def session_ended(self, session: WebTransportSession) -> None:
        if self.sessions.get(session.session_id) is session:
            del self.sessions[session.session_id]
        table = self.stream_session
        for stream_id in session.streams:
            if table.get(stream_id) is session:
                del table[stream_id]

    def counters_add(self, name: str) -> None:
        counters = self._counters
        if counters is not None:
            counters[name] = counters.get(name, 0) + 1

    # -- the QUIC connection's own events, for every session ---------------------------------------

    def connection_event(self, event: t.Event) -> None:
        kind = type(event)
        if kind in (t.Connected, t.DatagramStateChanged, t.PeerCertificate, t.Resumed, t.TicketReceived):
            return
        if kind is t.Closed:
            self._orphans.clear()
            self._orphan_count = 0
        for session in list(self.sessions.values()):
            session.connection_event(event)


class _AllSessions:
    """The QUIC connection's sink: what ``QuicTransportConnection`` reports goes to every session on it, and the
    driver's questions (idle? blocked?) are asked of them all."""

    def __init__(self, owner: WebTransportConnection) -> None:
        self._owner = owner

    @property
    def idle(self) -> bool:
        return all(s.sink is None or s.sink.idle for s in self._owner.sessions.values())

    @property
    def blocked(self) -> bool:
        return any(s.sink is not None and s.sink.blocked for s in self._owner.sessions.values())

    def deliver(self, event: t.Event) -> None:
        self._owner.connection_event(event)

    def writable(self) -> None:
        for session in list(self._owner.sessions.values()):
            if session.sink is not None and session.sink.blocked:
                session.sink.writable()

    def handles(self, callback: str) -> bool:
        return False


class WebTransportListener(QuicListener):
    """A QUIC listener speaking HTTP/3, whose WebTransport sessions are the behaviour's connections."""

    connection_class = WebTransportConnection

    @property
    def paths(self) -> list[str]:
        assert self.options.webtransport is not None
        return self.options.webtransport.paths

    def _supervise(self, conn: QuicTransportConnection, addr: t.Address) -> None:
        # no behaviour for the QUIC connection: its sessions get theirs as their CONNECTs are accepted
        assert isinstance(conn, WebTransportConnection)
        conn.listener = self
        peer_log(log, "webtransport.connection", "listener %s: HTTP/3 connection from %s", self.name, addr)
