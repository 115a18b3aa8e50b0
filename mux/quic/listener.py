"""A QUIC server endpoint: one UDP socket, connections found by connection ID.

Policy when the pool says no (stated in the README too):

* ``BUSY`` (``num_acceptors`` handshakes in flight): the Initial is dropped and counted; the client
  retransmits it after its PTO, which is a natural accept queue.
* ``REFUSE`` (``max_connections`` reached, or suspended/draining): with ``refuse: close`` the
  client gets a CONNECTION_CLOSE with CONNECTION_REFUSED; with ``refuse: retry`` a first Initial is
  answered with a stateless Retry (the client comes back one RTT later, when a slot may be free)
  and a retried one with CONNECTION_CLOSE. No state is kept either way.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Any

from aioquic.buffer import Buffer  # type: ignore[attr-defined]
from aioquic.quic.packet import (
    QuicPacketType,
    encode_quic_retry,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from aioquic.quic.retry import QuicRetryTokenHandler
from aioquic.tls import SessionTicket

from mux.pool import AcceptorPool, Admission
from mux.quic.certs import self_signed
from mux.quic.connection import QuicTransportConnection
from mux.quic.core import MuxQuicConnection
from mux.quic.options import QuicListenerOptions, build_configuration
from mux.udp import Address, Driver, open_socket

log = logging.getLogger("mux.quic")

SMALLEST_INITIAL = 1200
MAX_TICKETS = 10_000


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

    def __init__(self, options: QuicListenerOptions, pool: AcceptorPool) -> None:
        self.options = options
        self.pool = pool
        self.name = options.name or f"quic:{options.port}"
        self.driver: Driver | None = None
        self._by_cid: dict[bytes, QuicTransportConnection] = {}
        self._cids: dict[QuicTransportConnection, set[bytes]] = {}
        self._retry: QuicRetryTokenHandler | None = None
        self._tickets = TicketStore()
        self.counters = {"malformed": 0, "version_negotiation": 0, "dropped_busy": 0, "unknown_cid": 0}

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
        if opts.retry or opts.refuse == "retry":
            self._retry = QuicRetryTokenHandler()
        self.driver = Driver(open_socket(opts.host, opts.port), self, busy_poll_us=opts.busy_poll_us)
        log.info("listener %s: QUIC on %s alpn=%s", self.name, self.address[:2], ",".join(opts.alpn))

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
        try:
            header = pull_quic_header(Buffer(data=data), host_cid_length=self.config.connection_id_length)
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
        self._new_peer(data, addr, now, header)

    def _new_peer(self, data: bytes, addr: Address, now: float, header: Any) -> None:
        driver = self.driver
        assert driver is not None
        admission = self.pool.admit(self.name)
        if admission is Admission.BUSY:
            self.counters["dropped_busy"] += 1
            return
        if admission is Admission.REFUSE:
            if self.options.refuse == "retry" and not header.token:
                self._send_retry(header, addr, now)
            else:
                self._refuse(data, addr, now, header)
            return
        odcid: bytes | None = None
        retry_scid: bytes | None = None
        if self.options.retry:
            if not header.token:
                self._send_retry(header, addr, now)
                return
            assert self._retry is not None
            retry_scid = header.destination_cid
            try:
                odcid = self._retry.validate_token(
                    address=addr, destination_cid=header.destination_cid, token=header.token, now=now
                )
            except ValueError:
                self.counters["malformed"] += 1
                return
        quic = MuxQuicConnection(
            configuration=self.config,
            original_destination_connection_id=odcid or header.destination_cid,
            retry_source_connection_id=retry_scid,
            session_ticket_fetcher=self._tickets.pop if self.options.server_resumption_level else None,
            session_ticket_handler=self._tickets.add if self.options.server_resumption_level else None,
        )
        quic.request_client_certificate = self._verify != "none"
        quic.allow_early_data = self.options.server_resumption_level == 2
        conn = QuicTransportConnection(
            quic,
            driver,
            high_water=self.options.ideal_send_buffer_size,
            keep_alive_interval_ms=self.options.keep_alive_interval_ms,
            client_verify=self._verify,
            cafile=str(self.options.cacertfile) if self.options.cacertfile else None,
            on_cid_issued=self._cid_issued,
            on_cid_retired=self._cid_retired,
            on_finished=self._finished,
        )
        self._cid_issued(header.destination_cid, conn)
        self._cid_issued(quic.host_cid, conn)
        conn.hold()
        conn.sink = self.pool.accept(self.name, conn, {"transport": "quic", "peer": addr, "listener": self.name})
        conn.received(data, addr, now)

    def _send_retry(self, header: Any, addr: Address, now: float) -> None:
        assert self._retry is not None and self.driver is not None
        source_cid = os.urandom(8)
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
        quic = MuxQuicConnection(configuration=self.config, original_destination_connection_id=header.destination_cid)
        quic.receive_datagram(data, addr, now)
        quic.close(error_code=0x2, frame_type=0x0, reason_phrase="connection refused")
        for payload, to in quic.datagrams_to_send(now):
            self.driver.sendto(payload, to)

    def _cid_issued(self, cid: bytes, conn: QuicTransportConnection) -> None:
        self._by_cid[cid] = conn
        self._cids.setdefault(conn, set()).add(cid)

    def _cid_retired(self, cid: bytes) -> None:
        conn = self._by_cid.pop(cid, None)
        if conn is not None:
            self._cids.get(conn, set()).discard(cid)

    def _finished(self, conn: QuicTransportConnection) -> None:
        for cid in self._cids.pop(conn, set()):
            if self._by_cid.get(cid) is conn:
                del self._by_cid[cid]
