"""Registers WebRTC data channels with mux's transport registry (server side only)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from mux import transport as t
from mux.pool import AcceptorPool
from mux.registry import TransportPlugin
from mux.webrtc.options import WebRtcClientOptions, WebRtcListenerOptions


def listener(options: WebRtcListenerOptions, pool: AcceptorPool) -> t.Listener:
    from mux.webrtc.listener import WebRtcListener  # pyOpenSSL loads only when a webrtc listener is configured

    return WebRtcListener(options, pool)


async def connect(
    options: Any, host: str, port: int, make_sink: t.SinkFactory
) -> tuple[t.TransportConnection, Callable[[], Awaitable[None]]]:
    raise t.TransportError("mux answers WebRTC offers; it has no WebRTC client (use a browser or aiortc)")


PLUGIN = TransportPlugin(
    name="webrtc",
    listener_model=WebRtcListenerOptions,
    client_model=WebRtcClientOptions,
    listener=listener,
    connect=connect,
    default_port=8443,
)
