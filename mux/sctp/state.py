"""An association's states (RFC 9260 §4) and the error its commands raise: shared by the association and its parts."""

from __future__ import annotations

CLOSED = "closed"
COOKIE_WAIT = "cookie_wait"
COOKIE_ECHOED = "cookie_echoed"
ESTABLISHED = "established"
SHUTDOWN_PENDING = "shutdown_pending"
SHUTDOWN_SENT = "shutdown_sent"
SHUTDOWN_RECEIVED = "shutdown_received"
SHUTDOWN_ACK_SENT = "shutdown_ack_sent"

#: user messages may be queued (before establishment they wait for it)
CAN_SEND = (ESTABLISHED, COOKIE_WAIT, COOKIE_ECHOED)
#: DATA, SACKs and RE-CONFIG flow
DATA_FLOWS = (ESTABLISHED, SHUTDOWN_PENDING, SHUTDOWN_RECEIVED, SHUTDOWN_SENT)


class SctpError(Exception):
    """A user command cannot be carried out (bad stream, association closed)."""


class BufferFull(SctpError):
    """The send queue is over ``sndbuf``: wait for ``SendQueueDrained``."""
