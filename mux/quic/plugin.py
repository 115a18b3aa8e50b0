"""Registers QUIC with mux's transport registry."""

from __future__ import annotations

from mux.pool import AcceptorPool
from mux.quic.client import connect
from mux.quic.listener import QuicListener
from mux.quic.options import QuicClientOptions, QuicListenerOptions
from mux.registry import TransportPlugin
from mux.transport import Listener


def listener(options: QuicListenerOptions, pool: AcceptorPool) -> Listener:
    """A plain QUIC listener, or one serving WebTransport over HTTP/3 when ``webtransport`` is set."""
    if options.webtransport is not None:
        from mux.quic.webtransport import WebTransportListener  # the HTTP/3 layer loads only when used

        return WebTransportListener(options, pool)
    return QuicListener(options, pool)


PLUGIN = TransportPlugin(
    name="quic",
    listener_model=QuicListenerOptions,
    client_model=QuicClientOptions,
    listener=listener,
    connect=connect,
    default_port=4433,
)
