"""aioquic's QuicConnection with the few events it does not emit itself.

aioquic handles CONNECTION_CLOSE, STREAMS_BLOCKED and MAX_STREAMS silently. We hook its frame
handlers (bound at construction, so overriding them works) to queue events of our own alongside
aioquic's, so the adapter can call ``shutdown`` as soon as the peer closes (not after the
draining period), ``peer_needs_streams`` and ``streams_available`` honestly.
This depends on aioquic internals, pinned in pyproject.toml and covered by tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import QuicEvent


@dataclass
class PeerClosed(QuicEvent):
    error_code: int
    reason_phrase: str
    is_application: bool


@dataclass
class StreamsBlocked(QuicEvent):
    unidirectional: bool


@dataclass
class MaxStreamsRaised(QuicEvent):
    pass


class MuxQuicConnection(QuicConnection):
    #: server side: send a CertificateRequest (verify: optional/required)
    request_client_certificate = False
    #: server side: False keeps resumption but issues tickets that do not allow 0-RTT
    allow_early_data = True

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        if self.request_client_certificate:
            self.tls._request_client_certificate = True
        if not self.allow_early_data and not self._is_client:
            self.tls._max_early_data = None

    def _handle_connection_close_frame(self, context: Any, frame_type: int, buf: Any) -> None:
        first = self._close_event is None
        super()._handle_connection_close_frame(context, frame_type, buf)
        event = self._close_event
        if first and event is not None:
            self._events.append(
                PeerClosed(
                    error_code=event.error_code,
                    reason_phrase=event.reason_phrase,
                    is_application=frame_type == 0x1D,
                )
            )

    def _handle_streams_blocked_frame(self, context: Any, frame_type: int, buf: Any) -> None:
        super()._handle_streams_blocked_frame(context, frame_type, buf)
        self._events.append(StreamsBlocked(unidirectional=frame_type == 0x17))

    def _handle_max_streams_bidi_frame(self, context: Any, frame_type: int, buf: Any) -> None:
        super()._handle_max_streams_bidi_frame(context, frame_type, buf)
        self._events.append(MaxStreamsRaised())

    def _handle_max_streams_uni_frame(self, context: Any, frame_type: int, buf: Any) -> None:
        super()._handle_max_streams_uni_frame(context, frame_type, buf)
        self._events.append(MaxStreamsRaised())

    def streams_available(self) -> tuple[int, int]:
        """How many more streams of each kind the peer's limits let us open now."""
        bidi = self._remote_max_streams_bidi - (self._local_next_stream_id_bidi >> 2)
        uni = self._remote_max_streams_uni - (self._local_next_stream_id_uni >> 2)
        return max(bidi, 0), max(uni, 0)

    def stream_send_buffered(self, stream_id: int) -> int:
        stream = self._streams.get(stream_id)
        if stream is None:
            return 0
        sender = stream.sender
        return sender._buffer_stop - sender._buffer_start

    def next_event(self) -> QuicEvent | None:
        # aioquic's raises and catches IndexError when empty, which is most calls on our hot path
        events = self._events
        return events.popleft() if events else None
