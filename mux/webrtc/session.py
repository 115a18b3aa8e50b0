"""One WebRTC session: an answered offer's ICE-lite state, its handshake (driven through the handshake behaviour,
``mux.webrtc.handshake``, with its retransmission timer), and once that is done the record layer and the connection.
"""

from __future__ import annotations

import itertools
import logging
import secrets
from typing import TYPE_CHECKING, Any

from mux.logs import peer_log
from mux.udp import Address
from mux.webrtc import handshake as hs
from mux.webrtc import sdp
from mux.webrtc.channels import DataChannelConnection
from mux.webrtc.dtls import DtlsError, DtlsHandshake
from mux.webrtc.ice import IceLite

if TYPE_CHECKING:
    import asyncio

    from mux.webrtc.listener import WebRtcListener

log = logging.getLogger("mux.webrtc")
_ZERO4 = b"\x00\x00\x00\x00"
_sessions = itertools.count(1)


class Session:
    """One answered offer: its ICE state, its handshake, and later its connection."""

    def __init__(self, listener: WebRtcListener, offer: sdp.Offer, props: dict[str, Any], now: float) -> None:
        self.id = f"{next(_sessions)}-{secrets.token_hex(8)}"
        self.listener = listener
        self.offer = offer
        self.props = props
        self.created = now
        ufrag, pwd = sdp.credentials()
        self.ice = IceLite(ufrag, pwd, offer.ufrag, offer.pwd)
        self.module: Any = DtlsHandshake() if listener.options.handshake == "dtls" else hs.NoHandshake()
        opts = {"context": listener.context, "server": True, "remote_fingerprint": offer.fingerprint}
        started = self.module.init(opts)
        self.state: Any = started.state if isinstance(started, hs.Started) else None
        self.channel: hs.Channel | None = None if isinstance(started, hs.Started) else started.data
        self.failed = False
        #: the address the SCTP association knows this session by (the first one DTLS data came from)
        self.sctp_addr: Address | None = None
        self.conn: DataChannelConnection | None = None
        self.zero_checksum = False
        self._timer: asyncio.TimerHandle | None = None
        self.ready = False

    @property
    def remote(self) -> Address:
        return self.ice.selected or ("0.0.0.0", 0)

    def info(self) -> dict[str, Any]:
        return {"session": self.id, "nominated": self.ice.nominated, "zero_checksum": self.zero_checksum, **self.props}

    # -- handshake -------------------------------------------------------------------------------

    def path_ready(self) -> None:
        """ICE has a path (a first valid check): the handshake may start."""
        if self.ready:
            return
        self.ready = True
        if self.state is not None and self.channel is None:
            self._result(self.module.connection_ready(self.state))

    def handshake_datagram(self, data: bytes) -> None:
        if self.failed:
            return
        try:
            result = self.module.recv_from_peer(self.state, data)
        except DtlsError as exc:
            self._fail(str(exc))
            return
        self._result(result)

    def _result(self, result: hs.Result) -> None:
        packets = result.packets if isinstance(result, (hs.Ok, hs.FinishedWithPackets)) else []
        for packet in packets:
            self.listener.send_raw(packet, self.remote)
        if isinstance(result, (hs.Finished, hs.FinishedWithPackets)):
            self.channel = result.data
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        get_timer = getattr(self.module, "get_timer", None)
        wait = get_timer(self.state) if get_timer is not None else None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if wait is not None:
            self._timer = self.listener.loop.call_later(max(wait, 0.001), self._fire)

    def _fire(self) -> None:
        self._timer = None
        if self.channel is not None or self.failed:
            return
        try:
            result = self.module.handle_timer(self.state, self.listener.loop.time())
        except DtlsError as exc:
            self._fail(str(exc))
            return
        self._result(result)

    def _fail(self, reason: str) -> None:
        self.failed = True
        self.listener.counters["handshake_failed"] += 1
        peer_log(log, "webrtc.handshake", "session %s from %s: %s", self.id, self.remote, reason)
        self.listener.forget(self)

    # -- after the handshake ------------------------------------------------------------------------

    def seal(self, packet: bytes) -> None:
        channel = self.channel
        if channel is None:
            return
        if self.zero_checksum and len(packet) >= 12:
            packet = packet[:8] + _ZERO4 + packet[12:]  # RFC 9653: DTLS guards it
        self.listener.send_raw(channel.seal(packet), self.remote)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.channel is not None and self.ice.selected is not None:
            for packet in self.channel.close():
                self.listener.send_raw(packet, self.remote)
