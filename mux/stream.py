"""The transport-neutral stream handle given to behaviours."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from mux.transport import ConnectionGone

#: quicer's (msquic's) default stream priority
DEFAULT_PRIORITY = 0x7FFF

if TYPE_CHECKING:
    from mux.connection import Connection


class Stream:
    """One stream of a connection. QUIC streams are byte streams; SCTP streams carry messages.

    ``await send(...)`` applies backpressure: it returns at once while the transport's queue for this
    stream is under its high-water mark, and otherwise waits until the transport has drained it.
    """

    __slots__ = ("_priority", "closed", "conn", "id", "local", "recv_done", "send_done", "unidirectional")

    def __init__(self, conn: Connection, stream_id: int, *, unidirectional: bool, local: bool) -> None:
        self.conn = conn
        self.id = stream_id
        self.unidirectional = unidirectional
        #: True when we opened it
        self.local = local
        # A unidirectional stream has only one side; the missing side counts as already done.
        self.send_done = unidirectional and not local
        self.recv_done = unidirectional and local
        self.closed = False
        self._priority = DEFAULT_PRIORITY

    @property
    def priority(self) -> int:
        """quicer's stream ``priority``: 0..65535, higher first, 0x7FFF by default (msquic's).

        Over SCTP it is what the ``prio`` (strict) and ``wfq`` (bytes in proportion to priority + 1) schedulers
        go by (the ``scheduler`` option); ``rr`` and ``fcfs`` ignore it. Over QUIC a stream with data goes before
        every lower one, equal ones taking turns (aioquic has no priorities: mux orders its streams for each
        packet). It orders what waits to be sent: data already queued takes its new place at once.
        """
        return self._priority

    @priority.setter
    def priority(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF:
            raise ValueError(f"a stream priority is an int 0..65535, not {value!r}")
        if value != self._priority and not self.send_done:
            try:
                self.conn._live_transport().set_priority(self.id, value)
            except ConnectionGone as exc:
                exc.connection = self.conn
                raise
        self._priority = value

    @property
    def direction(self) -> str:
        return "unidi" if self.unidirectional else "bidi"

    def send(self, data: bytes, fin: bool = False, **props: Any) -> Awaitable[None]:
        """Queue ``data`` at once (one message over SCTP; ``ppid=``/``unordered=`` go in ``props``).

        Await the result for backpressure: it is already done while the stream's queue is under the
        high-water mark, and otherwise completes when the transport has drained it. A plain ``def``
        callback may ignore it; the data is queued either way.
        """
        conn = self.conn
        if self.send_done:
            raise conn._error(f"stream {self.id} cannot send: its sending side is finished")
        tconn = conn._live_transport()
        try:
            buffered = tconn.send(self.id, data, fin, props or None)
        except ConnectionGone as exc:  # the transport's own connection ended under us: say which one
            exc.connection = conn
            raise
        conn.bytes_out += len(data)
        if fin:
            self.send_done = True
            conn._maybe_stream_closed(self)
        if buffered > tconn.high_water:
            return conn._wait_writable(self.id)
        return conn._sent

    def reset(self, error_code: int = 0) -> None:
        """Abandon our sending side (QUIC RESET_STREAM)."""
        if not self.send_done:
            try:
                self.conn._live_transport().reset_stream(self.id, error_code)
            except ConnectionGone as exc:
                exc.connection = self.conn
                raise
            self.send_done = True
            self.conn._maybe_stream_closed(self)

    def stop_sending(self, error_code: int = 0) -> None:
        """Ask the peer to stop sending (QUIC STOP_SENDING)."""
        if not self.recv_done:
            try:
                self.conn._live_transport().stop_sending(self.id, error_code)
            except ConnectionGone as exc:
                exc.connection = self.conn
                raise

    def __repr__(self) -> str:
        return f"<Stream {self.id} {self.direction} {'local' if self.local else 'peer'} of conn {self.conn.id}>"
