"""QUIC options, named as quicer names them, and their mapping onto aioquic's configuration."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, Literal

from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.logger import QuicFileLogger
from pydantic import Field, field_validator, model_validator

from mux.schema import DriverOptions, ListenerBase, StrictModel


class QuicOptions(DriverOptions):
    alpn: list[str] = Field(min_length=1)
    certfile: Path | None = None
    keyfile: Path | None = None
    #: server: ask for a client certificate (optional) or insist on one (required).
    #: client: anything but ``none`` checks the server's chain and name.
    verify: Literal["none", "optional", "required"] | None = None
    cacertfile: Path | None = None
    idle_timeout_ms: int = Field(default=30_000, gt=0)
    keep_alive_interval_ms: int = Field(default=0, ge=0)
    #: RFC 9221 DATAGRAM frames
    datagrams: bool = True
    #: receive credit: stream data received and not yet consumed by the behaviour, per connection and
    #: per stream; credit returns to the peer only as the behaviour consumes (``mux.quic.core``)
    conn_flow_control_window: int = Field(default=4 * 1024 * 1024, gt=0)
    stream_recv_window_default: int = Field(default=1024 * 1024, gt=0)
    #: streams of each kind the peer may have open at once (MAX_STREAMS; more as they finish)
    peer_bidi_stream_count: int = Field(default=128, ge=0, le=2**60)
    peer_unidi_stream_count: int = Field(default=128, ge=0, le=2**60)
    congestion_control_algorithm: Literal["reno", "cubic"] = "reno"
    max_datagram_size: int = Field(default=1200, ge=1200, le=65527)
    #: path MTU discovery (RFC 8899, ``mux.quic.pmtud``), IP MTUs as quicer's: the search starts at
    #: ``max_datagram_size`` (or ``minimum_mtu`` less IP and UDP headers, if larger) and climbs to at most
    #: ``maximum_mtu`` and the interface's MTU; ``maximum_mtu`` at or below the start turns it off
    minimum_mtu: int | None = Field(default=None, ge=1228, le=65535)
    maximum_mtu: int = Field(default=16411, ge=1228, le=65535)
    #: a search that ended below the maximum looks again after this long (RFC 8899's raise timer)
    mtu_discovery_search_complete_timeout_us: int = Field(default=600_000_000, gt=0)
    #: unanswered probes of one size before it counts as too big (RFC 8899's MAX_PROBES); also the probe timeouts
    #: in a row that mean a black hole
    mtu_discovery_missing_probe_count: int = Field(default=3, ge=1, le=100)
    #: bytes queued on a stream above which ``await stream.send`` waits (quicer's stream option)
    ideal_send_buffer_size: int = Field(default=1024 * 1024, gt=0)
    qlog_dir: Path | None = None
    sslkeylogfile: Path | None = None


class WebTransportOptions(StrictModel):
    """``webtransport:`` on a QUIC listener: it speaks HTTP/3, and a WebTransport session to one of ``paths`` is
    a connection to the behaviour (``mux.quic.webtransport``)."""

    paths: list[str] = Field(min_length=1)

    @field_validator("paths")
    @classmethod
    def _absolute(cls, paths: list[str]) -> list[str]:
        for path in paths:
            if not path.startswith("/") or "?" in path:
                raise ValueError(f"a path starts with '/' and has no query, not {path!r}")
        return paths


class QuicListenerOptions(ListenerBase, QuicOptions):
    transport: Literal["quic"] = "quic"
    port: int = Field(default=4433, ge=0, le=65535)
    #: answer a token-less Initial with a stateless Retry (address validation, RFC 9000 §8.1.2):
    #: always (true), never (false), or ``auto``: once the pool's handshakes in flight reach half of
    #: ``num_acceptors`` (msquic's retry_memory_limit), so spoofed Initials cannot take the rest
    retry: bool | Literal["auto"] = "auto"
    #: a handshaking peer that has not proven its address by then (no Handshake packet, no Retry
    #: token) is dropped silently and its acceptor slot freed (quicer's option of that name)
    handshake_idle_timeout_ms: int = Field(default=3_000, gt=0)
    #: quicer's server_resumption_level: 0 off, 1 session resumption, 2 resumption and 0-RTT
    server_resumption_level: Literal[0, 1, 2] = 2
    #: at max_connections: CONNECTION_CLOSE with CONNECTION_REFUSED, or keep answering with Retry
    refuse: Literal["close", "retry"] = "close"
    #: serve WebTransport over HTTP/3 (ALPN h3) at these paths instead of the behaviour over raw QUIC
    webtransport: WebTransportOptions | None = None

    @model_validator(mode="before")
    @classmethod
    def _h3_alpn(cls, data: Any) -> Any:
        # a WebTransport listener speaks HTTP/3: ALPN h3 goes without saying
        if isinstance(data, dict) and data.get("webtransport") is not None and "alpn" not in data:
            data = {**data, "alpn": ["h3"]}
        return data

    @model_validator(mode="after")
    def _h3_only(self) -> QuicListenerOptions:
        if self.webtransport is not None:
            if list(self.alpn) != ["h3"]:
                raise ValueError(f"a webtransport listener speaks HTTP/3 only: alpn must be [h3], not {self.alpn}")
            if not self.datagrams:
                raise ValueError("webtransport needs datagrams: true (HTTP/3 datagrams ride on RFC 9221)")
        return self


class QuicClientOptions(QuicOptions):
    alpn: list[str] = Field(default_factory=lambda: ["echo"], min_length=1)
    server_name: str | None = None
    #: session ticket file: read to resume (0-RTT when the server allows), written when one arrives
    session_ticket_file: Path | None = None
    #: skip the server certificate check (the same as ``verify: none``): for a test server's self-signed
    #: certificate; ``quic://host:port?insecure=1`` or ``mux client --insecure``
    insecure: bool = False

    @model_validator(mode="after")
    def _insecure_or_verify(self) -> QuicClientOptions:
        if self.insecure and (self.verify not in (None, "none") or self.cacertfile is not None):
            raise ValueError("insecure skips the certificate check; it cannot go with verify or cacertfile")
        return self


def build_configuration(opts: QuicOptions, *, is_client: bool) -> QuicConfiguration:
    config = QuicConfiguration(
        is_client=is_client,
        alpn_protocols=list(opts.alpn),
        idle_timeout=opts.idle_timeout_ms / 1000.0,
        max_data=opts.conn_flow_control_window,
        max_stream_data=opts.stream_recv_window_default,
        congestion_control_algorithm=opts.congestion_control_algorithm,
        max_datagram_size=opts.max_datagram_size,
        max_datagram_frame_size=65536 if opts.datagrams else None,
    )
    if opts.qlog_dir is not None:
        opts.qlog_dir.mkdir(parents=True, exist_ok=True)
        config.quic_logger = QuicFileLogger(str(opts.qlog_dir))
    if opts.sslkeylogfile is not None:
        config.secrets_log_file = open(opts.sslkeylogfile, "a")  # noqa: SIM115 - lives as long as the config
    verify = "none" if getattr(opts, "insecure", False) else opts.verify or ("required" if is_client else "none")
    if is_client:
        config.verify_mode = ssl.CERT_NONE if verify == "none" else ssl.CERT_REQUIRED
    if opts.cacertfile is not None:
        config.load_verify_locations(cafile=str(opts.cacertfile))
    if opts.certfile is not None:
        config.load_cert_chain(opts.certfile, opts.keyfile)
    return config
