"""Echo: every byte (QUIC) or message (SCTP) a peer sends on a stream it opened comes back on it.

The echo ends its side of a stream when the peer ends its side. Over SCTP each message goes back
with the same PPID and unordered flag. Datagrams are echoed too. Data on a peer's unidirectional
stream has no way back and is dropped (and counted in ``dropped_unidirectional``), and so is a datagram
from a peer that accepts none (``dropped_datagrams``).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from mux import Connection, ConnectionBehaviour, Stream
from mux.transport import TransportError


class Echo(ConnectionBehaviour):
    # no ``__slots__``: ``mux.behaviours.browser.ByPath`` turns itself into an Echo (or a Chat), which needs the
    # same layout
    def init(self, opts: dict[str, Any]) -> None:
        self.dropped_unidirectional = 0
        self.dropped_datagrams = 0

    def stream_data(self, stream: Stream, data: bytes, fin: bool, props: dict[str, Any]) -> Awaitable[None] | None:
        # A plain ``def`` that returns what ``send`` returns: the framework awaits it, so the echo
        # still waits above the high-water mark, and costs no coroutine while it need not.
        if stream.local:
            return None
        if stream.unidirectional:
            self.dropped_unidirectional += len(data)
            return None
        if props:  # SCTP: the same PPID and ordering go back
            return stream.send(data, fin=fin, ppid=props.get("ppid", 0), unordered=props.get("unordered", False))
        return stream.send(data, fin)

    def dgram_recv(self, conn: Connection, data: bytes, flags: int) -> None:
        try:
            conn.send_datagram(data)
        except TransportError:  # a peer may send datagrams without accepting any (RFC 9221 is one-sided)
            self.dropped_datagrams += 1
