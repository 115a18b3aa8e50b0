"""One log line per connection accepted and per connection closed, with the fields an operator greps for.

Both lines are at info for a peer that completed its handshake (it proved its address: a QUIC handshake, an SCTP
COOKIE-ECHO), so their number is bounded by real handshakes. A peer admitted that never completes one (a spoofed
QUIC Initial can be) is logged at debug only, rate-limited like every other peer-caused line.
"""

from __future__ import annotations

import logging
from typing import Any

from mux.connection import Connection
from mux.logs import fields, limited_log

log = logging.getLogger("mux.conn")


def peer_text(address: Any) -> str:
    """``host:port`` (``[v6]:port``) of a socket address tuple."""
    try:
        host, port = address[0], address[1]
    except (TypeError, IndexError):
        return str(address)
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def base_fields(conn: Connection) -> dict[str, Any]:
    return {
        "conn_id": conn.id,
        "transport": conn.transport,
        "listener": conn.listener,
        "peer": peer_text(conn.peer_address),
    }


def accepted(conn: Connection, now: float) -> None:
    """The handshake is done: the connection is up."""
    if not log.isEnabledFor(logging.INFO):
        return
    handshake_ms = round((now - conn.started) * 1000, 3)
    log.info(
        "connection %d accepted on %s from %s",
        conn.id,
        conn.listener,
        peer_text(conn.peer_address),
        extra=fields(**base_fields(conn), handshake_ms=handshake_ms, alpn=conn.alpn),
    )


def closed(conn: Connection, now: float) -> None:
    if not log.isEnabledFor(logging.INFO if conn.connected_at is not None else logging.DEBUG):
        return
    props = conn.close_props or {}
    extra = fields(
        **base_fields(conn),
        duration_ms=round((now - conn.started) * 1000, 3),
        bytes_in=conn.bytes_in,
        bytes_out=conn.bytes_out,
        by=props.get("by"),
        error_code=props.get("error_code"),
        reason=str(props.get("reason") or "")[:200],
        error=props.get("error"),
        callback_errors=conn.callback_errors,
    )
    how = props.get("error") or f"code {props.get('error_code', 0)}"
    if conn.connected_at is None:
        limited_log(
            log,
            logging.DEBUG,
            "conn.closed_handshaking",
            "connection %d closed in its handshake (%s)",
            conn.id,
            how,
            extra=extra,
        )
        return
    log.info("connection %d closed (%s, by %s)", conn.id, how, props.get("by"), extra=extra)
