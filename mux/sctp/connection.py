"""One SCTP association as mux sees it: core events in, neutral events out, commands down.

Mapping (see README): ESTABLISHED -> connected; each complete user message -> stream data with its
``ppid`` and ``unordered`` flag in props (``fin`` is always False: SCTP streams have no end); peer
SHUTDOWN -> shutdown(0); ABORT or retransmission failure -> transport_shutdown with the cause;
CLOSED -> closed. SCTP streams are bidirectional channels: ``open_stream`` hands out the next
outbound stream id not yet used, and a peer's first message on an id we have not used opens it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from mux import transport as t
from mux.logs import peer_log
from mux.sctp import events as se
from mux.sctp.association import CLOSED, SHUTDOWN_ACK_SENT, SHUTDOWN_RECEIVED, Association, SctpError
from mux.udp import Address, Driver, Pumped

log = logging.getLogger("mux.sctp")

_PEER_CLOSING = (SHUTDOWN_RECEIVED, SHUTDOWN_ACK_SENT)


class SctpTransportConnection(Pumped):
    """Implements ``mux.transport.TransportConnection`` for our SCTP association."""

    transport_name = "sctp"
    alpn = None

    def __init__(
        self,
        assoc: Association,
        driver: Driver,
        *,
        high_water: int,
        on_finished: Callable[[SctpTransportConnection], None] | None = None,
        counters: dict[str, int] | None = None,
    ) -> None:
        self.core = assoc
        self.assoc = assoc
        self.driver = driver
        self.high_water = high_water
        self.sink: t.ConnectionSink | None = None
        self._on_finished = on_finished
        #: the listener's (endpoint's) counters, where what peers cause is counted instead of logged
        self._counters = counters if counters is not None else {}
        self._used_streams: set[int] = set()
        self._next_stream = 0
        self._closing_by_us = False
        self._peer_shutdown = False
        self._aborted = False
        self.finished = False

    # -- TransportConnection --------------------------------------------------------------------

    @property
    def local_address(self) -> Address:
        return self.driver.local_address

    @property
    def peer_address(self) -> Address:
        return tuple(self.assoc.peer_addr)

    def stream_is_unidirectional(self, stream_id: int) -> bool:
        return False

    def open_stream(self, unidirectional: bool = False) -> int:
        if unidirectional:
            raise t.TransportError("SCTP streams are bidirectional; open_stream(unidirectional=False)")
        limit = self.assoc.outbound_streams
        while self._next_stream < limit and self._next_stream in self._used_streams:
            self._next_stream += 1
        if self._next_stream >= limit:
            raise t.TransportError(f"all {limit} outbound SCTP streams are in use")
        stream_id = self._next_stream
        self._used_streams.add(stream_id)
        self._next_stream += 1
        return stream_id

    def send(self, stream_id: int, data: bytes, fin: bool, props: Mapping[str, Any] | None) -> int:
        if not data:
            # SCTP has no empty messages and no stream FIN; ``fin`` only ends our side locally
            return self.assoc.buffered_amount()
        if props:
            ppid = int(props.get("ppid", 0))
            unordered = bool(props.get("unordered", False))
        else:
            ppid, unordered = 0, False
        try:
            self.assoc.send(stream_id, data, ppid=ppid, unordered=unordered)
        except SctpError as exc:  # the core's own errors: invalid stream, closed, buffer full
            state = self.assoc.state
            if state == CLOSED:
                raise t.ConnectionGone(f"sctp association with {self.peer_address} is closed") from None
            if state in _PEER_CLOSING:
                # RFC 9260 §9.2: after the peer's SHUTDOWN we accept no new data from our user
                raise t.ConnectionGone(f"sctp association with {self.peer_address} is shutting down") from None
            raise t.TransportError(f"sctp send on stream {stream_id}: {exc}") from None
        self.driver.touch(self)
        return self.assoc.buffered_amount()

    def send_buffered(self, stream_id: int) -> int:
        return self.assoc.buffered_amount()

    def consumed(self, stream_id: int, nbytes: int) -> None:
        if self.assoc.consumed(nbytes):
            self.driver.touch(self)  # the window reopened: the update leaves now

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        raise t.TransportError("SCTP stream reset needs RFC 6525 (RE-CONFIG), not supported yet")

    def stop_sending(self, stream_id: int, error_code: int) -> None:
        raise t.TransportError("SCTP has no stop-sending; RFC 6525 stream reset is not supported yet")

    def send_datagram(self, data: bytes) -> None:
        raise t.TransportError("SCTP unreliable messages need PR-SCTP (RFC 3758), not supported yet")

    def proceed(self) -> None:
        """The application accepted the peer (new_conn returned): answer its COOKIE-ECHO."""
        self.assoc.proceed(self.driver.loop.time())
        self.driver.touch(self)

    def close(self, error_code: int, reason: str) -> None:
        """Graceful SHUTDOWN: outstanding data is delivered first. SCTP carries no close code."""
        if self.assoc.on_hold:
            self.abort(reason)  # never up for the peer: there is nothing to shut down gracefully
            return
        self._closing_by_us = True
        self.assoc.shutdown(self.driver.loop.time())
        self.driver.touch(self)

    def abort(self, reason: str) -> None:
        self._closing_by_us = True
        self._aborted = True  # ``closed`` then says so: an ABORT we sent is not a graceful close
        self.assoc.abort(reason)
        self.driver.touch(self)

    def refuse(self, reason: str = "refused") -> None:
        self.abort(reason)

    def flush(self) -> None:
        self.driver.flush_one(self)

    def stats(self) -> dict[str, Any]:
        status = dict(self.assoc.status())
        status["transport"] = "sctp"
        status["peer"] = self.peer_address
        return status

    # -- driver side -----------------------------------------------------------------------------

    def handle_event(self, event: Any) -> None:
        sink = self.sink
        assert sink is not None
        kind = type(event)
        if kind is se.DataReceived:
            sink.deliver(
                t.StreamData(event.stream_id, event.data, False, {"ppid": event.ppid, "unordered": event.unordered})
            )
        elif kind is se.SendQueueDrained:
            if sink.blocked:
                sink.writable()
        elif kind is se.AssociationUp:
            sink.deliver(
                t.Connected(
                    {
                        "transport": "sctp",
                        "peer": self.peer_address,
                        "outbound_streams": event.outbound_streams,
                        "inbound_streams": event.inbound_streams,
                        "peer_rwnd": event.peer_rwnd,
                    }
                )
            )
            sink.deliver(t.StreamsAvailable(event.outbound_streams - len(self._used_streams), 0))
        elif kind is se.ShutdownReceived:
            self._peer_shutdown = True
            if not self._closing_by_us:
                sink.deliver(t.PeerShutdown(0))
        elif kind is se.AssociationAborted:
            self._aborted = True
            if not self._closing_by_us or event.reason:
                sink.deliver(t.TransportShutdown({"error": event.reason, "causes": [str(c) for c in event.causes]}))
        elif kind is se.AssociationClosed:
            self.finished = True
            by = "local" if self._closing_by_us else "peer" if self._peer_shutdown else "transport"
            props: dict[str, Any] = {"by": by}
            if self._aborted:
                props["error"] = "aborted"
            sink.deliver(t.Closed(props))
        elif kind is se.PeerError:
            # peer-caused: counted, and logged at debug only, briefly and at a bounded rate
            self._counters["peer_errors"] = self._counters.get("peer_errors", 0) + 1
            peer_log(log, "sctp.peer_error", "association %s: peer reported %s", self.peer_address, event.causes)
        elif kind is se.AssociationRestarted:
            peer_log(log, "sctp.restart", "association %s: peer restarted", self.peer_address)

    def on_finished(self) -> None:
        if self._on_finished is not None:
            self._on_finished(self)
