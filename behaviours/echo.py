"""Echo: every byte (QUIC) or message (SCTP) a peer sends on a stream it opened comes back on it.

The echo ends its side of a stream when the peer ends its side. Over SCTP each message goes back
with the same PPID and unordered flag. Datagrams are echoed too. Data on a peer's unidirectional
stream has no way back and is dropped (and counted in ``dropped_unidirectional``).
"""

from __future__ import annotations

from typing import Any

from mux import Connection, ConnectionBehaviour, Stream


class Echo(ConnectionBehaviour):
    def init(self, opts: dict[str, Any]) -> None:
        self.dropped_unidirectional = 0

    async def stream_data(self, stream: Stream, data: bytes, fin: bool, props: dict[str, Any]) -> None:
        if stream.local:
            return
        if stream.unidirectional:
            self.dropped_unidirectional += len(data)
            return
        if props:  # SCTP: the same PPID and ordering go back
            await stream.send(data, fin=fin, ppid=props.get("ppid", 0), unordered=props.get("unordered", False))
        else:
            await stream.send(data, fin=fin)

    def dgram_recv(self, conn: Connection, data: bytes, flags: int) -> None:
        conn.send_datagram(data)
