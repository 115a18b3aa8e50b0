"""One QUIC connection as mux sees it: aioquic's events in, neutral events out, commands down."""

from __future__ import annotations

import asyncio
import logging
import pickle
from collections.abc import Callable, Mapping
from typing import Any

from aioquic.quic import events as qe
from aioquic.quic.connection import END_STATES, QuicConnectionState
from aioquic.quic.packet import QuicErrorCode
from aioquic.tls import AlertBadCertificate, SessionTicket, verify_certificate
from cryptography.hazmat.primitives.serialization import Encoding

from mux import transport as t
from mux.logs import peer_log
from mux.quic.core import MaxStreamsRaised, MuxQuicConnection, PeerClosed, StreamsBlocked
from mux.udp import Address, Driver, Pumped

log = logging.getLogger("mux.quic")

#: datagrams queued for sending at most (each at most a packet): beyond it new ones are dropped and counted
MAX_PENDING_DATAGRAMS = 256
#: a 1-RTT packet's bytes around a DATAGRAM frame's data: short header with a 20-byte CID and 4-byte packet
#: number, the AEAD tag, the frame type and a 2-byte length
DGRAM_PACKET_OVERHEAD = 1 + 20 + 4 + 16 + 1 + 2
CRYPTO_ERROR = 0x100
ALERT_BAD_CERTIFICATE = 42
ALERT_CERTIFICATE_REQUIRED = 116
TRANSPORT_CLOSE = 0x0  # any frame_type value makes aioquic send a transport CONNECTION_CLOSE
HANDSHAKE_IDLE = "handshake idle timeout"
#: quicer's (msquic's) default stream priority
DEFAULT_PRIORITY = 0x7FFF


def _by_priority(base: type[Any]) -> type[Any]:
    """``base`` (an aioquic connection class) serving its streams by priority, higher first.

    aioquic fills each packet from its streams in the order of a list it rotates after every packet (the streams
    just served go to its end): round robin. Read through this property, the list is first sorted by priority,
    stably, so a stream with data goes before every lower one and equal ones still take their turns: strict
    priority, as the SCTP ``prio`` scheduler. A connection becomes one of these when a stream first gets a priority
    other than the default; others pay nothing.
    """
    cached = _PRIORITISED.get(base)
    if cached is None:

        def get(self: Any) -> list[Any]:
            queue: list[Any] = self.__dict__["_streams_queue"]
            if len(queue) > 1:
                priorities: dict[int, int] = self.__dict__["_mux_priorities"]
                queue.sort(key=lambda stream: -priorities.get(stream.stream_id, DEFAULT_PRIORITY))
            return queue

        def set_(self: Any, value: list[Any]) -> None:
            self.__dict__["_streams_queue"] = value

        attrs = {"_streams_queue": property(get, set_)}
        cached = _PRIORITISED[base] = type(f"Prioritised{base.__name__}", (base,), attrs)
    return cached


_PRIORITISED: dict[type[Any], type[Any]] = {}


class QuicTransportConnection(Pumped):
    """Implements ``mux.transport.TransportConnection`` for aioquic."""

    # slotted (an instance dict of these would cost 1.6 kB an idle connection); a subclass without slots
    # (``mux.quic.webtransport``) gets its dict back for what it adds
    __slots__ = (
        "_alpn",
        "_cafile",
        "_client_verify",
        "_closing_by_us",
        "_connected",
        "_counters",
        "_dirty",
        "_handshake_idle_handle",
        "_held",
        "_keep_alive",
        "_keep_alive_handle",
        "_on_cid_issued",
        "_on_cid_retired",
        "_on_finished",
        "_peer_addr",
        "_peer_close",
        "_peer_closed",
        "_pings",
        "_proof_timeout",
        "_slot",
        "_streams_available",
        "_timer",
        "_timer_at",
        "cids",
        "core",
        "datagrams_received",
        "dgram_send_dropped",
        "driver",
        "finished",
        "high_water",
        "quic",
        "sink",
        "ticket_file",
    )

    transport_name = "quic"

    def __init__(
        self,
        quic: MuxQuicConnection,
        driver: Driver,
        *,
        high_water: int,
        keep_alive_interval_ms: int = 0,
        client_verify: str = "none",
        cafile: str | None = None,
        on_cid_issued: Callable[[bytes, QuicTransportConnection], None] | None = None,
        on_cid_retired: Callable[[bytes], None] | None = None,
        on_finished: Callable[[QuicTransportConnection], None] | None = None,
        counters: dict[str, int] | None = None,
    ) -> None:
        self.core = quic
        self.quic = quic
        self.driver = driver
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._slot: int | None = None
        self._dirty = False
        #: server side: the connection IDs the listener finds us by (kept here, not in a set per connection there)
        self.cids: list[bytes] = []
        self.high_water = high_water
        self.sink: t.ConnectionSink | None = None
        self._keep_alive = keep_alive_interval_ms / 1000.0
        self._keep_alive_handle: asyncio.TimerHandle | None = None
        self._client_verify = client_verify
        self._cafile = cafile
        self._on_cid_issued = on_cid_issued
        self._on_cid_retired = on_cid_retired
        self._on_finished = on_finished
        self._alpn: str | None = None
        self._closing_by_us = False
        self._peer_closed = False
        self._connected = False
        self._streams_available = (0, 0)
        self._peer_addr: Address | None = None
        self._pings = 0
        self.finished = False
        #: server side: datagrams held until the behaviour's new_conn accepts the peer
        self._held: list[tuple[bytes, Address]] | None = None
        #: the listener's counters, for what peers cause (their log lines are debug only)
        self._counters = counters
        #: datagrams we dropped because the queue to the peer was full (``MAX_PENDING_DATAGRAMS``)
        self.dgram_send_dropped = 0
        self._handshake_idle_handle: asyncio.TimerHandle | None = None
        self._proof_timeout: float | None = None
        #: the peer's CONNECTION_CLOSE, once it came (its props are those of ``closed``)
        self._peer_close: PeerClosed | None = None
        #: client: where session tickets are saved (``session_ticket_file``)
        self.ticket_file: str | None = None
        #: UDP datagrams received for this connection (``stats()``'s packets_received)
        self.datagrams_received = 0
        quic.app_idle = self._app_idle

    # -- TransportConnection --------------------------------------------------------------------

    @property
    def alpn(self) -> str | None:
        return self._alpn

    @property
    def local_address(self) -> Address:
        return self.driver.local_address

    @property
    def peer_address(self) -> Address:
        return self._peer_addr or self.quic.get_peer_address() or ()

    def stream_is_unidirectional(self, stream_id: int) -> bool:
        return bool(stream_id & 2)

    def stream_is_local(self, stream_id: int) -> bool:
        """Whether we opened ``stream_id``: its low bit names the initiator (RFC 9000 §2.1)."""
        return (stream_id & 1) == (0 if self.quic._is_client else 1)

    def open_stream(self, unidirectional: bool = False) -> int:
        quic = self.quic
        stream_id = quic.get_next_available_stream_id(unidirectional)
        # Creating it now reserves the id; beyond the peer's limit aioquic holds it until MAX_STREAMS.
        quic.send_stream_data(stream_id, b"", False)
        self.driver.touch(self)
        return stream_id

    def send(self, stream_id: int, data: bytes, fin: bool, props: Mapping[str, Any] | None) -> int:
        quic = self.quic
        try:
            quic.send_stream_data(stream_id, data, fin)
        except (ValueError, AssertionError, RuntimeError) as exc:
            # RuntimeError: aioquic already reset our side (the peer's STOP_SENDING, not yet seen by the behaviour)
            raise t.TransportError(f"stream {stream_id}: {exc}") from None
        self.driver.touch(self)
        return quic.stream_send_buffered(stream_id)

    def send_buffered(self, stream_id: int) -> int:
        return self.quic.stream_send_buffered(stream_id)

    def consumed(self, stream_id: int, nbytes: int) -> None:
        # the core only moves its limits; a pump sends them, and is needed only when one became due
        if self.quic.consumed(stream_id, nbytes) and not self.finished:
            self.driver.touch(self)

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        self.quic.reset_stream(stream_id, error_code)
        self.driver.touch(self)

    def stop_sending(self, stream_id: int, error_code: int) -> None:
        self.quic.stop_stream(stream_id, error_code)
        self.driver.touch(self)

    def set_priority(self, stream_id: int, priority: int) -> None:
        """quicer's stream ``priority`` (0..65535, higher first): aioquic has none, so the connection serves its
        streams through ``_by_priority`` from the first priority other than the default on."""
        if not 0 <= priority <= 0xFFFF:
            raise t.TransportError(f"a stream priority is 0..65535, not {priority}")
        quic = self.quic
        priorities: dict[int, int] | None = quic.__dict__.get("_mux_priorities")
        if priorities is None:
            if priority == DEFAULT_PRIORITY:
                return
            priorities = quic.__dict__["_mux_priorities"] = {}
            quic.__class__ = _by_priority(type(quic))
        priorities[stream_id] = priority
        if len(priorities) > 64 + 2 * len(quic._streams):  # forget the streams aioquic has discarded
            live = quic._streams
            for sid in [sid for sid in priorities if sid not in live]:
                del priorities[sid]
        self.driver.touch(self)

    def send_datagram(self, data: bytes) -> None:
        quic = self.quic
        limit = quic._remote_max_datagram_frame_size
        if limit is None:
            raise t.TransportError("the peer does not accept datagrams (RFC 9221 not negotiated)")
        # what fits in one packet: our datagram size less the short header (<= 25), AEAD tag and frame header
        room = min(quic._max_datagram_size - DGRAM_PACKET_OVERHEAD, limit - 3)
        if len(data) > room:
            # aioquic would keep it at the head of its queue for ever, and every later datagram behind it
            raise t.TransportError(f"datagram of {len(data)} bytes does not fit in a packet (at most {room})")
        pending = quic._datagrams_pending
        if len(pending) >= MAX_PENDING_DATAGRAMS:
            # unreliable by definition: while the path cannot carry them (a peer that never acknowledges
            # holds our congestion window shut), new ones are dropped rather than queued without bound
            self.dgram_send_dropped += 1
            if self._counters is not None:
                self._counters["dgram_send_dropped"] = self._counters.get("dgram_send_dropped", 0) + 1
            return
        pending.append(data)
        self.driver.touch(self)

    def reply_now(self) -> None:
        """The behaviour's callback for an event returned (``mux.dispatch``): when it was the datagram's last, its
        reply leaves now (``Driver.reply_now``)."""
        if not self.quic._events:
            self.driver.reply_now(self)

    def flush(self) -> None:
        # the mailbox is empty (the sink's ``idle`` is set just after): the peer may open more streams
        if self.quic.caught_up():
            self.driver.touch(self)
        self.driver.flush_one(self)

    def _app_idle(self) -> bool:
        sink = self.sink
        return sink is None or bool(sink.idle)

    def hold(self) -> None:
        """Do not answer the peer until ``proceed``: quicer's new_conn runs before the handshake."""
        self._held = []

    def expect_proof(self, timeout: float) -> None:
        """Server side: drop the connection silently unless the peer proves its address in ``timeout``.

        quicer's ``handshake_idle_timeout_ms``: a peer that sent only Initials (spoofed, or gone)
        gives its acceptor slot back this soon. The clock starts when we first answer (after
        ``new_conn``, which the pool's ``handshake_timeout_ms`` bounds) and is never pushed back, so a
        peer that keeps repeating its Initial does not extend it.
        """
        self._proof_timeout = timeout
        if self._held is None:
            self._start_proof_clock()

    def _start_proof_clock(self) -> None:
        timeout, self._proof_timeout = self._proof_timeout, None
        if timeout is not None and not self.finished:
            self._handshake_idle_handle = self.driver.loop.call_later(timeout, self._handshake_idle)

    def _handshake_idle(self) -> None:
        self._handshake_idle_handle = None
        if self.finished or self._connected or self.quic.address_validated:
            return
        if self._counters is not None:
            self._counters["handshake_idle_timeout"] += 1
        self.quic.abandon(HANDSHAKE_IDLE)
        self.driver.touch(self)

    def proceed(self) -> None:
        held, self._held = self._held, None
        if self._proof_timeout is not None:
            self._start_proof_clock()
        if held:
            now = self.driver.loop.time()
            for data, addr in held:
                self.received(data, addr, now)

    def close(self, error_code: int, reason: str) -> None:
        """An application CONNECTION_CLOSE: the peer's behaviour gets ``shutdown(error_code)``."""
        self._close(error_code, reason, None)

    def abort(self, reason: str) -> None:
        """A transport CONNECTION_CLOSE with INTERNAL_ERROR: the peer's gets ``transport_shutdown`` (aborted)."""
        self._close(QuicErrorCode.INTERNAL_ERROR, reason, TRANSPORT_CLOSE)

    def refuse(self, reason: str = "connection refused") -> None:
        """CONNECTION_CLOSE with CONNECTION_REFUSED (the peer was rejected by new_conn)."""
        self._close(QuicErrorCode.CONNECTION_REFUSED, reason, TRANSPORT_CLOSE)

    def _close(self, error_code: int, reason: str, frame_type: int | None) -> None:
        self.proceed()
        if not self._peer_closed:  # the peer's close came first: ``closed`` says it was theirs
            self._closing_by_us = True
        self.quic.close(error_code=error_code, frame_type=frame_type, reason_phrase=reason)
        self.driver.touch(self)

    def stats(self) -> dict[str, Any]:
        """``mux.transport.COMMON_STATS``. QUIC has no RTO: ``rto_ms`` is its probe timeout (RFC 9002 §6.2);
        ``peer_rwnd`` is the connection credit the peer has left us (MAX_DATA less what we sent);
        ``packets_retransmitted`` counts packets whose frames were sent again (declared lost, or probed)."""
        quic = self.quic
        loss = quic._loss
        state = quic._state
        if state in END_STATES:
            neutral = "closed" if state is QuicConnectionState.TERMINATED else "closing"
        else:
            neutral = "connected" if self._connected else "handshaking"
        return {
            "transport": "quic",
            "state": neutral,
            "peer": self.peer_address,
            "srtt_ms": round(loss._rtt_smoothed * 1000, 3) if loss._rtt_initialized else None,
            "rto_ms": round(loss.get_probe_timeout() * 1000, 3),
            "cwnd": loss.congestion_window,
            "bytes_in_flight": loss.bytes_in_flight,
            "mtu": quic._max_datagram_size,
            "pmtud": quic.pmtud.info() if quic.pmtud is not None else None,
            "peer_rwnd": max(0, quic._remote_max_data - quic._remote_max_data_used),
            "packets_sent": quic._packet_number,
            "packets_received": self.datagrams_received,
            "packets_retransmitted": quic.packets_rescheduled,
            "recv_unconsumed": quic.unconsumed,
            "dgram_send_queued": len(quic._datagrams_pending),
            "dgram_send_dropped": self.dgram_send_dropped,
            "quic": {
                "state": state.name.lower(),
                "streams": len(quic._streams),
                "rtt_min_ms": round(loss._rtt_min * 1000, 3) if loss._rtt_initialized else None,
                "ssthresh": loss._cc.ssthresh,
                "peer_dgram_max": quic._remote_max_datagram_frame_size,
            },
        }

    # -- driver side -----------------------------------------------------------------------------

    def received(self, data: bytes, addr: Address, now: float) -> None:
        held = self._held
        if held is not None:
            if len(held) < 16:  # a client retransmitting its Initial must not grow this without bound
                held.append((data, addr))
            return
        quic = self.quic
        self.datagrams_received += 1
        quic.receive_datagram(data, addr, now)
        sink = self.sink
        if sink is not None and sink.blocked:
            sink.writable()
        if addr != self._peer_addr and self._connected:  # a datagram from elsewhere: did the peer migrate?
            paths = quic._network_paths
            if paths and paths[0].addr != self._peer_addr and paths[0].is_validated:
                self._peer_addr = paths[0].addr
                if sink is not None:
                    sink.deliver(t.AddressChanged(self._peer_addr))
        self.driver.touch(self)

    def handle_event(self, event: Any) -> None:
        sink = self.sink
        assert sink is not None
        kind = type(event)
        if kind is qe.StreamDataReceived:
            sink.deliver(t.StreamData(event.stream_id, event.data, event.end_stream))
        elif kind is qe.DatagramFrameReceived:
            sink.deliver(t.DatagramReceived(event.data))
        elif kind is qe.ConnectionIdIssued:
            if self._on_cid_issued is not None:
                self._on_cid_issued(event.connection_id, self)
        elif kind is qe.ConnectionIdRetired:
            if self._on_cid_retired is not None:
                self._on_cid_retired(event.connection_id)
        elif kind is qe.ProtocolNegotiated:
            self._alpn = event.alpn_protocol
        elif kind is qe.HandshakeCompleted:
            self._handshake_completed(event)
        elif kind is qe.StreamReset:
            sink.deliver(t.StreamReset(event.stream_id, event.error_code))
        elif kind is qe.StopSendingReceived:
            sink.deliver(t.StopSending(event.stream_id, event.error_code))
        elif kind is PeerClosed:
            self._peer_closed = True
            self._peer_close = event
            if not self._closing_by_us:
                # quicer (msquic) reports an application close as ``shutdown`` and a transport close, which is
                # what an abort or a crash sends, as ``transport_shutdown``: their codes are different spaces
                if event.is_application:
                    sink.deliver(t.PeerShutdown(event.error_code, event.reason_phrase))
                else:
                    sink.deliver(t.TransportShutdown(_end_props("peer", event.error_code, event.reason_phrase, 0)))
        elif kind is StreamsBlocked:
            sink.deliver(t.PeerNeedsStreams(event.unidirectional))
        elif kind is MaxStreamsRaised:
            self._report_streams_available()
        elif kind is qe.ConnectionTerminated:
            self._terminated(event)

    def _handshake_completed(self, event: qe.HandshakeCompleted) -> None:
        sink = self.sink
        assert sink is not None
        self._alpn = event.alpn_protocol
        self._peer_addr = self.quic.get_peer_address()
        props: dict[str, Any] = {
            "transport": "quic",
            "alpn": event.alpn_protocol,
            "session_resumed": event.session_resumed,
            "early_data_accepted": event.early_data_accepted,
            "peer": self._peer_addr,
        }
        if self._handshake_idle_handle is not None:
            self._handshake_idle_handle.cancel()
            self._handshake_idle_handle = None
        quic = self.quic
        if quic.request_client_certificate and not self._check_client_certificate(props):
            return
        self._connected = True
        # what the handshake learnt comes before ``connected``, as msquic reports it during the handshake
        certificate = quic.tls._peer_certificate
        if certificate is not None and sink.handles("peer_cert_received"):
            chain = [certificate, *quic.tls._peer_certificate_chain]
            sink.deliver(t.PeerCertificate([cert.public_bytes(Encoding.DER) for cert in chain]))
        sink.deliver(t.DatagramStateChanged(self.datagram_state()))
        if event.session_resumed and not quic._is_client:
            sink.deliver(t.Resumed(False))
        sink.deliver(t.Connected(props))
        self._report_streams_available()
        if self._keep_alive > 0:
            self._schedule_keep_alive()

    def datagram_state(self) -> dict[str, Any]:
        """quicer's ``dgram_state_changed`` props: whether the peer takes DATAGRAM frames, and the largest
        datagram ``send_datagram`` accepts (what fits in one packet under the peer's limit)."""
        quic = self.quic
        limit = quic._remote_max_datagram_frame_size
        if limit is None:
            return {"dgram_send_enabled": False, "dgram_max_len": 0}
        room = min(quic._max_datagram_size - DGRAM_PACKET_OVERHEAD, limit - 3)
        return {"dgram_send_enabled": room > 0, "dgram_max_len": max(room, 0)}

    def ticket_received(self, ticket: SessionTicket) -> None:
        """Client: aioquic's session ticket handler. Saved to ``session_ticket_file`` and given to
        ``nst_received`` in that file's format, so an application can store it anywhere and resume."""
        data = pickle.dumps(ticket)
        if self.ticket_file is not None:
            with open(self.ticket_file, "wb") as f:
                f.write(data)
        sink = self.sink
        if sink is not None and sink.handles("nst_received"):
            sink.deliver(t.TicketReceived(data))

    def _check_client_certificate(self, props: dict[str, Any]) -> bool:
        tls = self.quic.tls
        cert = tls._peer_certificate
        if cert is None:
            if self._client_verify == "required":
                self._close_crypto(ALERT_CERTIFICATE_REQUIRED, "client certificate required")
                return False
            return True
        try:
            verify_certificate(certificate=cert, chain=tls._peer_certificate_chain, cafile=self._cafile)
        except AlertBadCertificate as exc:
            self._close_crypto(ALERT_BAD_CERTIFICATE, f"bad client certificate: {exc}")
            return False
        props["peer_cert_subject"] = cert.subject.rfc4514_string()
        return True

    def _close_crypto(self, alert: int, reason: str) -> None:
        peer_log(log, "quic.client_cert", "refusing client %s: %s", self.quic.get_peer_address(), reason)
        if self._counters is not None:
            self._counters["client_cert_refused"] += 1
        self._close(CRYPTO_ERROR + alert, reason, TRANSPORT_CLOSE)

    def _report_streams_available(self) -> None:
        available = self.quic.streams_available()
        if available != self._streams_available and self.sink is not None and self._connected:
            self._streams_available = available
            self.sink.deliver(t.StreamsAvailable(*available))

    def _schedule_keep_alive(self) -> None:
        self._keep_alive_handle = self.driver.loop.call_later(self._keep_alive, self._send_keep_alive)

    def _send_keep_alive(self) -> None:
        if self.finished:
            return
        self._pings += 1
        self.quic.send_ping(self._pings)
        self.driver.touch(self)
        self._schedule_keep_alive()

    def _terminated(self, event: qe.ConnectionTerminated) -> None:
        sink = self.sink
        assert sink is not None
        self.finished = True
        if self._keep_alive_handle is not None:
            self._keep_alive_handle.cancel()
        if self._handshake_idle_handle is not None:
            self._handshake_idle_handle.cancel()
            self._handshake_idle_handle = None
        peer_close = self._peer_close
        if self._closing_by_us:
            # aioquic's close: no frame type is an application close (``close``), one is ours as a transport
            # (``abort``, ``refuse``, a refused client certificate)
            props = _end_props("local", event.error_code, event.reason_phrase, event.frame_type)
        elif peer_close is not None:
            frame_type = None if peer_close.is_application else 0
            props = _end_props("peer", peer_close.error_code, peer_close.reason_phrase, frame_type)
        else:
            props = _end_props("transport", event.error_code, event.reason_phrase, event.frame_type)
            props["error"] = _TERMINATION_ERRORS.get(event.reason_phrase) or _error_name(event.error_code)
            sink.deliver(t.TransportShutdown(dict(props)))
        sink.deliver(t.Closed(props))

    def on_finished(self) -> None:
        self.quic.release()
        if self._on_finished is not None:
            self._on_finished(self)


#: how aioquic's (and our core's) termination reasons read in ``closed``/``transport_shutdown`` props
_TERMINATION_ERRORS = {"Idle timeout": "idle_timeout", HANDSHAKE_IDLE: "handshake_idle_timeout"}

#: ``error`` names both transports share, for the QUIC transport codes that mean them
_SHARED_ERRORS: dict[int, str] = {QuicErrorCode.INTERNAL_ERROR: "aborted", QuicErrorCode.CONNECTION_REFUSED: "refused"}
#: TLS alerts (RFC 8446 §6) a QUIC handshake commonly ends with, as CRYPTO_ERROR + alert
_TLS_ALERTS = {
    40: "handshake_failure",
    42: "bad_certificate",
    45: "certificate_expired",
    46: "certificate_unknown",
    48: "unknown_ca",
    116: "certificate_required",
    120: "no_application_protocol",
}


def _error_name(code: int) -> str:
    """The ``error`` of a transport-level end: a name shared with SCTP where there is one, else QUIC's own."""
    shared = _SHARED_ERRORS.get(code)
    if shared is not None:
        return shared
    if CRYPTO_ERROR <= code < CRYPTO_ERROR + 0x100:
        return _TLS_ALERTS.get(code - CRYPTO_ERROR, f"tls_alert_{code - CRYPTO_ERROR}")
    try:
        return QuicErrorCode(code).name.lower()
    except ValueError:
        return f"quic_error_{code:#x}"


def _end_props(by: str, error_code: int, reason: str, frame_type: int | None) -> dict[str, Any]:
    """``closed`` (and ``transport_shutdown``) props. ``frame_type`` None is an application close, which
    has no ``error``; otherwise the close was a transport one (RFC 9000 §19.19) and ``error`` names it."""
    props: dict[str, Any] = {"by": by, "error_code": error_code, "reason": reason}
    if frame_type is not None:
        props["error"] = _error_name(error_code)
        if frame_type:
            props["quic"] = {"frame_type": frame_type}
    return props
