"""A behaviour to start from (written by ``mux init``): one instance per connection, over QUIC and SCTP alike.

Serve it: ``mux serve server.yaml``. Try it: ``mux client quic://127.0.0.1:4433 --alpn hello --insecure``, or
``mux client sctp://127.0.0.1:9899``. Every callback is optional; README.md's "The contract" lists them all.
"""

from __future__ import annotations

import logging
from typing import Any

from mux import Connection, ConnectionBehaviour, Reject, Stream

log = logging.getLogger("hello")


class Hello(ConnectionBehaviour):
    def init(self, opts: dict[str, Any]) -> None:
        # ``opts`` is the YAML's ``options:``; ``self.conn`` is already set
        self.greeting: str = opts.get("greeting", "hello")
        self.blocked: set[str] = set(opts.get("blocked", []))
        self.lines = 0

    def new_conn(self, conn: Connection, props: dict[str, Any]) -> None:
        # server side, before the handshake completes: raise Reject(code, reason) to refuse the peer
        if props["peer"][0] in self.blocked:
            raise Reject(0, "blocked")

    def connected(self, conn: Connection, props: dict[str, Any]) -> None:
        log.info("%s connected over %s (alpn %s)", conn.peer_address, conn.transport, conn.alpn)

    def stream_data(self, stream: Stream, data: bytes, fin: bool, props: dict[str, Any]) -> Any:
        # QUIC: bytes as they arrive; SCTP: one message each. Reply on the same stream; returning the send's
        # awaitable lets the framework wait when the peer reads slowly
        if stream.local or stream.unidirectional:
            return None
        self.lines += data.count(b"\n")
        return stream.send(self.greeting.encode() + b": " + data if data else b"", fin=fin)

    def dgram_recv(self, conn: Connection, data: bytes, flags: int) -> None:
        conn.send_datagram(data[::-1])

    def closed(self, conn: Connection, props: dict[str, Any]) -> None:
        log.info("%s closed (%s) after %d lines", conn.peer_address, props.get("error") or props.get("by"), self.lines)
