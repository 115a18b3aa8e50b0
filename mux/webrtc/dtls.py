"""DTLS 1.2 for WebRTC (RFC 8261, RFC 8827): the handshake behaviour's first implementation, on pyOpenSSL.

OpenSSL does all the cryptography; this module only moves datagrams between it and the ICE path through memory
BIOs, and drives retransmission with ``DTLSv1_get_timeout`` / ``DTLSv1_handle_timeout``. The certificate is a
self-signed ECDSA P-256 one made per listener; its SHA-256 fingerprint goes in our SDP. The peer's certificate is
accepted by the TLS layer whoever signed it, then checked against the fingerprint its SDP offer gave: a mismatch
fails the handshake.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL

from mux.quic.certs import ec_certificate
from mux.webrtc.handshake import Finished, FinishedWithPackets, Ok, Result, Started

#: the largest DTLS record we make: an SCTP packet of up to 1200 bytes fits, with the record's overhead
CIPHERTEXT_MTU = 1300
_READ = 65536
#: a DTLS record's content type for application data (RFC 6347 §4.1)
_APPLICATION_DATA = 23
#: OpenSSL's DTLS1_2_VERSION (pyOpenSSL does not name it): DTLS 1.0 is refused
DTLS1_2_VERSION = 0xFEFD
#: cipher suites a browser offers and that need no RSA: ECDHE with AES-GCM or ChaCha20
CIPHERS = b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305"


class DtlsError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Certificate:
    """Our certificate and key, and the fingerprint the SDP announces (``sha-256 AB:CD:...``)."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def generate(cls, days: int = 30) -> Certificate:
        cert, key = ec_certificate("mux", days)
        return cls(cert, key)

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.cert.public_bytes(serialization.Encoding.DER))


def fingerprint_of(der: bytes) -> str:
    """``sha-256`` and the colon-separated upper-case hex of a certificate's SHA-256 (RFC 8122 §5)."""
    return "sha-256 " + ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def make_context(certificate: Certificate) -> SSL.Context:
    ctx = SSL.Context(SSL.DTLS_METHOD)
    ctx.set_min_proto_version(DTLS1_2_VERSION)
    ctx.use_certificate(certificate.cert)
    ctx.use_privatekey(certificate.key)
    ctx.set_cipher_list(CIPHERS)
    # use_srtp (RFC 5764) answered though no media flows: some peers (aiortc) fail a handshake without it
    ctx.set_tlsext_use_srtp(b"SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80")
    ctx.set_options(SSL.OP_NO_QUERY_MTU)  # memory BIOs: we set the MTU ourselves
    # any certificate is accepted here (WebRTC's are self-signed); its fingerprint is checked after the handshake
    ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *_: True)
    return ctx


class DtlsState:
    """One DTLS association in progress (the handshake behaviour's ``state``)."""

    def __init__(self, context: SSL.Context, *, server: bool, remote_fingerprint: str | None) -> None:
        self.ssl = SSL.Connection(context, None)
        if server:
            self.ssl.set_accept_state()
        else:
            self.ssl.set_connect_state()
        self.ssl.set_ciphertext_mtu(CIPHERTEXT_MTU)
        self.server = server
        self.remote_fingerprint = remote_fingerprint.lower() if remote_fingerprint else None
        #: set when the handshake ends: the peer's certificate, DER
        self.peer_certificate: bytes | None = None
        self.failed: str | None = None
        self.done = False

    def outgoing(self) -> list[bytes]:
        out: list[bytes] = []
        while True:
            try:
                data = self.ssl.bio_read(_READ)
            except SSL.WantReadError:
                break
            if not data:
                break
            out.append(data)
        return out

    def step(self) -> Result:
        """Push the handshake on; ``Finished...`` once it is done and the peer's certificate matched."""
        try:
            self.ssl.do_handshake()
        except SSL.WantReadError:
            return Ok(self.outgoing())
        except SSL.Error as exc:
            self.failed = f"DTLS handshake failed: {exc}"
            raise DtlsError(self.failed) from None
        self.done = True
        cert = self.ssl.get_peer_certificate()
        if cert is None:
            raise DtlsError("the peer sent no certificate")
        der = cert.to_cryptography().public_bytes(serialization.Encoding.DER)
        if self.remote_fingerprint is not None and fingerprint_of(der).lower() != self.remote_fingerprint:
            raise DtlsError("the peer's certificate does not match the fingerprint in its SDP")
        self.peer_certificate = der
        channel = DtlsChannel(self)
        packets = self.outgoing()
        return FinishedWithPackets(channel, packets) if packets else Finished(channel)


class DtlsChannel:
    """The record layer after the handshake: SCTP packets as DTLS application data."""

    def __init__(self, state: DtlsState) -> None:
        self.state = state
        self.ssl = state.ssl
        self.closed = False

    @property
    def peer_certificate(self) -> bytes | None:
        return self.state.peer_certificate

    def seal(self, data: bytes) -> bytes:
        ssl = self.ssl
        ssl.send(data)
        return ssl.bio_read(_READ)

    def open(self, payload: bytes) -> tuple[list[bytes], list[bytes]]:
        ssl = self.ssl
        ssl.bio_write(payload)
        if payload[0] == _APPLICATION_DATA and len(payload) == 13 + int.from_bytes(payload[11:13], "big"):
            # the common case, one application_data record: one recv, and no probing calls that end in an exception
            try:
                return [ssl.recv(_READ)], []
            except SSL.WantReadError:
                return [], []  # it did not decrypt: dropped (RFC 6347 §4.1.2.7)
            except SSL.ZeroReturnError:
                self.closed = True
                return [], []
            except SSL.Error:
                return [], []
        out: list[bytes] = []
        while True:
            try:
                out.append(ssl.recv(_READ))
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:  # close_notify
                self.closed = True
                break
            except SSL.Error:
                break  # a record that does not decrypt is dropped (RFC 6347 §4.1.2.7)
        return out, self.state.outgoing()  # a retransmitted last flight, when the peer's Finished came again

    def close(self) -> list[bytes]:
        if self.closed:
            return []
        self.closed = True
        try:
            self.ssl.shutdown()
        except SSL.Error:
            pass
        return self.state.outgoing()


class DtlsHandshake:
    """The handshake behaviour over DTLS. ``opts``: ``context`` (``make_context``), ``server`` (our role: the
    answerer is the server when the offer says ``a=setup:actpass``), ``remote_fingerprint`` (from the peer's SDP)."""

    def init(self, opts: dict[str, Any]) -> Started:
        state = DtlsState(
            opts["context"], server=opts.get("server", True), remote_fingerprint=opts.get("remote_fingerprint")
        )
        return Started(None, state)

    def connection_ready(self, state: DtlsState) -> Result:
        return Ok() if state.server else state.step()  # a client starts with its ClientHello

    def recv_from_peer(self, state: DtlsState, data: bytes) -> Result:
        state.ssl.bio_write(data)
        return state.step()

    def get_timer(self, state: DtlsState) -> float | None:
        """Seconds until a flight is due again (OpenSSL's own backoff), or None."""
        if state.done:
            return None
        timeout: float | None = state.ssl.DTLSv1_get_timeout()
        return timeout

    def handle_timer(self, state: DtlsState, now: float) -> Result:
        try:
            state.ssl.DTLSv1_handle_timeout()
        except SSL.Error as exc:
            raise DtlsError(f"DTLS handshake failed: {exc}") from None
        return state.step()
