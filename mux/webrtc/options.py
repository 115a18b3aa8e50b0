"""The ``webrtc`` listener's options: where it listens, the signalling page, and the SCTP options it runs with."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mux.schema import ListenerBase, StrictModel
from mux.sctp.options import InitMsg, SctpOptions


def _streams() -> InitMsg:
    # a data channel is a stream: browsers offer 65535 each way, and a page may open many
    return InitMsg(num_ostreams=1024, max_instreams=1024)


class WebTransportLink(StrictModel):
    """Where the page at ``/`` finds the server's WebTransport listener: ``GET /webtransport.json`` gives ``url`` and
    the SHA-256 of ``certfile`` (the QUIC listener's certificate), for ``serverCertificateHashes``."""

    url: str
    certfile: str


class WebRtcListenerOptions(ListenerBase, SctpOptions):
    transport: Literal["webrtc"] = "webrtc"
    #: one UDP port for ICE, DTLS and SCTP, and the same TCP port number for signalling (HTTP)
    port: int = Field(default=8443, ge=0, le=65535)
    #: an HTML file served at ``/`` instead of the built-in demo page
    page: str | None = None
    #: the same server's WebTransport listener, for a page that uses both (``conf/browser.yaml``)
    webtransport: WebTransportLink | None = None
    #: RFC 9653: answer a peer offering zero checksums (Chromium does) in kind; DTLS checks integrity anyway
    zero_checksum: bool = True
    #: ICE consent freshness (RFC 7675): with no valid check from the peer for this long, the connection ends
    consent_timeout_ms: int = Field(default=30_000, ge=1000)
    #: a session whose ICE and DTLS are not done this long after its offer is forgotten
    session_timeout_ms: int = Field(default=30_000, ge=1000)
    #: sessions (offers answered, connection not up yet) at most; more get 503
    max_pending_sessions: int = Field(default=1000, ge=1)
    #: the handshake behaviour: ``dtls`` (browsers), or ``none`` (SCTP in the clear, tests only)
    handshake: Literal["dtls", "none"] = "dtls"
    #: SCTP packets of at most 1200 bytes, as browsers use, so that a DTLS record fits any path
    pmtu: int = Field(default=1228, ge=576, le=65535)
    #: no path MTU discovery by default: the probes' sizes would not count the DTLS record around them, and
    #: browsers' SCTP stacks take packets of about 1200 bytes anyway (``maximum_mtu`` above ``pmtu`` turns it on)
    maximum_mtu: int = Field(default=1228, ge=576, le=65535)
    initmsg: InitMsg = Field(default_factory=_streams)


class WebRtcClientOptions(StrictModel):
    """No client side: mux answers offers, it does not make them."""
