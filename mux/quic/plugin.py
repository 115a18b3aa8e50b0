"""Registers QUIC with mux's transport registry."""

from __future__ import annotations

from mux.quic.client import connect
from mux.quic.listener import QuicListener
from mux.quic.options import QuicClientOptions, QuicListenerOptions
from mux.registry import TransportPlugin

PLUGIN = TransportPlugin(
    name="quic",
    listener_model=QuicListenerOptions,
    client_model=QuicClientOptions,
    listener=QuicListener,
    connect=connect,
    default_port=4433,
)
