"""A QUIC server endpoint: one UDP socket, connections found by connection ID.

Admission, so that spoofed packets cannot lock real clients out (stated in the README too):

* A new peer's Initial must decrypt (its keys derive from the packet's own DCID) and carry
  well-formed Initial frames with a CRYPTO frame before anything else happens; garbage is dropped
  and counted (``undecryptable``): no slot, no state, no reply.
* A token in the Initial is checked whatever the mode: a valid Retry token proves the address and
  sets the connection's original_destination_connection_id / retry_source_connection_id; an invalid
  one is counted (``invalid_token``) and the peer treated as token-less.
* ``retry``: ``true`` answers every token-less Initial with a stateless Retry, ``false`` none, and
  ``auto`` (the default) does so once the pool's handshakes in flight reach half of
  ``num_acceptors``: spoofed Initials can then hold at most half the slots, and only for
  ``handshake_idle_timeout_ms``, while clients that prove their address take the rest.
* A peer admitted without proof that sends no Handshake packet within ``handshake_idle_timeout_ms``
  is dropped silently and its slot freed; the pool's ``handshake_timeout_ms`` bounds the rest.
* ``BUSY`` (``num_acceptors`` handshakes in flight): a token-less Initial gets a Retry unless
  ``retry: false``; otherwise the Initial is dropped and counted, and the client retransmits it after
  its PTO, which is a natural accept queue.
* ``REFUSE`` (``max_connections`` reached, or suspended/draining): with ``refuse: close`` the
  client gets a CONNECTION_CLOSE with CONNECTION_REFUSED; with ``refuse: retry`` a token-less
  Initial is answered with a stateless Retry (the client comes back one RTT later, when a slot may be
  free, and is then admitted or refused) and a retried one with CONNECTION_CLOSE. No state is kept.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from typing import Any

from aioquic.buffer import Buffer  # type: ignore[attr-defined]
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.packet import (
    QuicPacketType,
    encode_quic_retry,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from aioquic.quic.retry import QuicRetryTokenHandler
from aioquic.tls import SessionTicket

from mux.pcap import maybe_capture
from mux.pool import AcceptorPool, Admission
from mux.quic.certs import self_signed
from mux.quic.connection import QuicTransportConnection
from mux.quic.core import MuxQuicConnection
from mux.quic.options import QuicListenerOptions, build_configuration
from mux.quic.pmtud import attach as attach_pmtud
from mux.steering import current as current_steering
from mux.steering import quic_cid, take_socket
from mux.udp import Address, Driver, open_socket

log = logging.getLogger("mux.quic")

SMALLEST_INITIAL = 1200
MAX_TICKETS = 10_000
#: frame types an Initial packet may carry (RFC 9000 §12.4, table 3)
PADDING, PING, ACK, ACK_ECN, CRYPTO, CONNECTION_CLOSE = 0x00, 0x01, 0x02, 0x03, 0x06, 0x1C


def initial_is_genuine(packet: bytes, encrypted_offset: int, dcid: bytes, version: int) -> bool:
    """Whether a new peer's first Initial decrypts and its frames parse, holding a CRYPTO frame.

    Anyone can build such a packet (the keys derive from its DCID), so this only sorts random bytes
    from a QUIC client: it costs one key derivation and one AEAD open (~60 us), no state.
    """
    pair = CryptoPair()
    pair.setup_initial(cid=dcid, is_client=False, version=version)
    try:
        plain_header, payload, _ = pair.decrypt_packet(packet, encrypted_offset, 0)
    except ValueError:  # aioquic's CryptoError: too short to sample, or the AEAD tag does not match
        return False
    if plain_header[0] & 0x0C:  # reserved bits
        return False
    return _initial_frames_parse(payload)


def _initial_frames_parse(payload: bytes) -> bool:
    buf = Buffer(data=payload)
    end = len(payload)
    crypto = False
    try:
        while buf.tell() < end:
            frame_type = buf.pull_uint_var()
            if frame_type == PADDING:
                pos = buf.tell()
                buf.seek(end - len(payload[pos:].lstrip(b"\0")))  # padding runs to the end, mostly
            elif frame_type == PING:
                pass
            elif frame_type in (ACK, ACK_ECN):
                buf.pull_uint_var()  # largest acknowledged
                buf.pull_uint_var()  # delay
                ranges = buf.pull_uint_var()
                buf.pull_uint_var()  # first range
                for _ in range(ranges):  # each takes at least two bytes: bounded by the payload
                    buf.pull_uint_var()
                    buf.pull_uint_var()
                if frame_type == ACK_ECN:
                    for _ in range(3):
                        buf.pull_uint_var()
            elif frame_type == CRYPTO:
                buf.pull_uint_var()
                buf.pull_bytes(buf.pull_uint_var())
                crypto = True
            elif frame_type == CONNECTION_CLOSE:
                buf.pull_uint_var()
                buf.pull_uint_var()
                buf.pull_bytes(buf.pull_uint_var())
            else:
                return False
    except ValueError:  # BufferReadError: a frame runs past the payload
        return False
    return crypto


class _Refusal(MuxQuicConnection):
    """A throwaway server connection that only answers CONNECTION_REFUSED.

    Its ClientHello never reaches TLS: the key exchange and signature would cost ~0.9 ms for each
    Initial anyone can forge, against ~0.2 ms for the close alone.
    """

    def _handle_crypto_frame(self, context: Any, frame_type: int, buf: Any) -> None:
        buf.pull_uint_var()  # offset
        buf.pull_bytes(buf.pull_uint_var())


class TicketStore:
    """Server session tickets for resumption and 0-RTT, bounded (oldest evicted first)."""

    def __init__(self, limit: int = MAX_TICKETS) -> None:
        self._tickets: OrderedDict[bytes, SessionTicket] = OrderedDict()
        self._limit = limit

    def add(self, ticket: SessionTicket) -> None:
        self._tickets[ticket.ticket] = ticket
        while len(self._tickets) > self._limit:
            self._tickets.popitem(last=False)

    def pop(self, label: bytes) -> SessionTicket | None:
        # single use: a ticket replayed for 0-RTT must not be accepted twice
        return self._tickets.pop(label, None)


class QuicListener:
    transport_name = "quic"
    #: what each admitted peer becomes (``mux.quic.webtransport`` puts HTTP/3 there)
    connection_class: type[QuicTransportConnection] = QuicTransportConnection

    def __init__(self, options: QuicListenerOptions, pool: AcceptorPool) -> None:
        self.options = options
        self.pool = pool
        self.name = options.name or f"quic:{options.port}"
        self.driver: Driver | None = None
        self._by_cid: dict[bytes, QuicTransportConnection] = {}
        # tokens are checked in every mode: refuse: retry and retry: auto issue them too
        self._retry = QuicRetryTokenHandler()
        self._tickets = TicketStore()
        steering = current_steering()
        #: a worker's connection IDs carry its index (``mux.steering``), so the kernel steers their packets to it
        self._cid_factory = None if steering is None else partial(quic_cid, steering.index, steering.count)
        #: what peers caused; none of it is logged above debug
        self.counters = {
            "malformed": 0,
            "version_negotiation": 0,
            "dropped_busy": 0,
            "unknown_cid": 0,
            "undecryptable": 0,
            "retry_sent": 0,
            "invalid_token": 0,
            "refused": 0,
            "handshake_idle_timeout": 0,
            "client_cert_refused": 0,
        }

    @property
    def address(self) -> Address:
        assert self.driver is not None
        return self.driver.local_address

    async def start(self) -> None:
        opts = self.options
        certfile, keyfile = opts.certfile, opts.keyfile
        if certfile is None:
            certfile, keyfile = self_signed(opts.host)
            opts = opts.model_copy(update={"certfile": certfile, "keyfile": keyfile})
        self.config = build_configuration(opts, is_client=False)
        self._verify = opts.verify or "none"
        sock = maybe_capture(take_socket(self.name) or open_socket(opts.host, opts.port), opts)
        self.driver = Driver(sock, self, busy_poll_us=opts.busy_poll_us)
        log.info("listener %s: QUIC on %s alpn=%s", self.name, self.address[:2], ",".join(opts.alpn))
        if opts.webtransport is not None:
            log.info("listener %s: WebTransport at %s", self.name, ", ".join(opts.webtransport.paths))

    def reconfigure(self, options: QuicListenerOptions) -> Callable[[], None]:
        """New options for connections made from now on (a reload): certificates are read again here, and
        a problem raises before anything changes; the returned function applies them. Live connections keep
        the configuration object they were made with."""
        opts = options
        if opts.certfile is None:
            certfile, keyfile = self_signed(opts.host)
            opts = opts.model_copy(update={"certfile": certfile, "keyfile": keyfile})
        config = build_configuration(opts, is_client=False)

        def commit() -> None:
            self.options = options
            self.config = config
            self._verify = opts.verify or "none"
            if self.driver is not None:
                self.driver.busy_poll_us = options.busy_poll_us

        return commit

    async def close(self) -> None:
        if self.driver is not None:
            self.driver.close()

    def flush_stateless(self, driver: Driver) -> None:
        pass  # stateless replies are sent as they are made

    # -- demux -----------------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: Address, now: float) -> None:
        if data and not data[0] & 0x80:  # short header: the hot path
            conn = self._by_cid.get(data[1:9])
            if conn is not None:
                conn.received(data, addr, now)
            else:
                self.counters["unknown_cid"] += 1
            return
        buf = Buffer(data=data)
        try:
            header = pull_quic_header(buf, host_cid_length=self.config.connection_id_length)
        except ValueError:
            self.counters["malformed"] += 1
            return
        conn = self._by_cid.get(header.destination_cid)
        if conn is not None:
            conn.received(data, addr, now)
            return
        driver = self.driver
        assert driver is not None
        if (
            header.packet_type != QuicPacketType.VERSION_NEGOTIATION
            and header.version is not None
            and header.version not in self.config.supported_versions
        ):
            self.counters["version_negotiation"] += 1
            driver.sendto(
                encode_quic_version_negotiation(
                    source_cid=header.destination_cid,
                    destination_cid=header.source_cid,
                    supported_versions=self.config.supported_versions,
                ),
                addr,
            )
            return
        if header.packet_type != QuicPacketType.INITIAL or len(data) < SMALLEST_INITIAL:
            self.counters["unknown_cid"] += 1
            return
        assert header.version is not None
        if not initial_is_genuine(data[: header.packet_length], buf.tell(), header.destination_cid, header.version):
            self.counters["undecryptable"] += 1
            return
        self._new_peer(data, addr, now, header)

    def _new_peer(self, data: bytes, addr: Address, now: float, header: Any) -> None:
        """Admit a peer whose Initial decrypted: Retry, refuse, drop, or take a slot."""
        driver = self.driver
        assert driver is not None
        odcid: bytes | None = None
        retry_scid: bytes | None = None
        if header.token:
            try:
                odcid = self._retry.validate_token(
                    address=addr, destination_cid=header.destination_cid, token=header.token, now=now
                )
                retry_scid = header.destination_cid
            except ValueError:
                # forged, expired, from another address, or another server's NEW_TOKEN: the peer is
                # treated as token-less (RFC 9000 §8.1.3), and one that answers a Retry only once fails
                self.counters["invalid_token"] += 1
        proven = odcid is not None
        admission = self.pool.admit(self.name)
        if admission is Admission.REFUSE:
            if self.options.refuse == "retry" and not proven:
                self._send_retry(header, addr, now)
            else:
                self._refuse(data, addr, now, header)
            return
        if not proven and self._wants_retry(admission):
            self._send_retry(header, addr, now)
            return
        if admission is Admission.BUSY:
            self.counters["dropped_busy"] += 1
            return
        quic = MuxQuicConnection(
            configuration=self.config,
            original_destination_connection_id=odcid or header.destination_cid,
            retry_source_connection_id=retry_scid,
            session_ticket_fetcher=self._tickets.pop if self.options.server_resumption_level else None,
            session_ticket_handler=self._tickets.add if self.options.server_resumption_level else None,
            peer_bidi_stream_count=self.options.peer_bidi_stream_count,
            peer_unidi_stream_count=self.options.peer_unidi_stream_count,
            cid_factory=self._cid_factory,
        )
        attach_pmtud(quic, self.options, addr)
        quic.request_client_certificate = self._verify != "none"
        quic.allow_early_data = self.options.server_resumption_level == 2
        conn = self.connection_class(
            quic,
            driver,
            high_water=self.options.ideal_send_buffer_size,
            keep_alive_interval_ms=self.options.keep_alive_interval_ms,
            client_verify=self._verify,
            cafile=str(self.options.cacertfile) if self.options.cacertfile else None,
            on_cid_issued=self._cid_issued,
            on_cid_retired=self._cid_retired,
            on_finished=self._finished,
            counters=self.counters,
        )
        self._cid_issued(header.destination_cid, conn)
        self._cid_issued(quic.host_cid, conn)
        self._supervise(conn, addr)
        if not proven:
            conn.expect_proof(self.options.handshake_idle_timeout_ms / 1000.0)
        conn.received(data, addr, now)

    def _supervise(self, conn: QuicTransportConnection, addr: Address) -> None:
        """The pool runs the behaviour on the connection; the handshake waits for its ``new_conn``."""
        conn.hold()
        conn.sink = self.pool.accept(self.name, conn, {"transport": "quic", "peer": addr, "listener": self.name})

    def _wants_retry(self, admission: Admission) -> bool:
        """Whether a token-less Initial gets a Retry instead of a slot (or a drop, when busy)."""
        mode = self.options.retry
        if mode == "auto":
            # msquic's retry_memory_limit, counted in handshakes: unproven peers may take half the slots
            in_flight = self.pool.handshakes_in_flight
            return admission is Admission.BUSY or 2 * in_flight >= self.pool.options.num_acceptors
        return bool(mode)

    def _send_retry(self, header: Any, addr: Address, now: float) -> None:
        assert self.driver is not None
        self.counters["retry_sent"] += 1
        # the client's next Initial goes to this ID: a worker's must lead back to it (its token key is its own)
        source_cid = os.urandom(8) if self._cid_factory is None else self._cid_factory(8)
        token = self._retry.create_token(
            address=addr,
            original_destination_connection_id=header.destination_cid,
            retry_source_connection_id=source_cid,
            now=now,
        )
        self.driver.sendto(
            encode_quic_retry(
                version=header.version,
                source_cid=source_cid,
                destination_cid=header.source_cid,
                original_destination_cid=header.destination_cid,
                retry_token=token,
            ),
            addr,
        )

    def _refuse(self, data: bytes, addr: Address, now: float, header: Any) -> None:
        """CONNECTION_CLOSE(CONNECTION_REFUSED) from a throwaway connection that is never kept."""
        assert self.driver is not None
        self.counters["refused"] += 1
        quic = _Refusal(configuration=self.config, original_destination_connection_id=header.destination_cid)
        quic.receive_datagram(data, addr, now)
        quic.close(error_code=0x2, frame_type=0x0, reason_phrase="connection refused")
        for payload, to in quic.datagrams_to_send(now):
            self.driver.sendto(payload, to)

    def _cid_issued(self, cid: bytes, conn: QuicTransportConnection) -> None:
        self._by_cid[cid] = conn
        if cid not in conn.cids:  # a handful each (aioquic keeps up to 8 issued): a list costs less than a set
            conn.cids.append(cid)

    def _cid_retired(self, cid: bytes) -> None:
        conn = self._by_cid.pop(cid, None)
        if conn is not None and cid in conn.cids:
            conn.cids.remove(cid)

    def _finished(self, conn: QuicTransportConnection) -> None:
        cids, conn.cids = conn.cids, []
        for cid in cids:
            if self._by_cid.get(cid) is conn:
                del self._by_cid[cid]
