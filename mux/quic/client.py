"""A QUIC client connection on its own UDP socket."""

from __future__ import annotations

import asyncio
import logging
import pickle
import socket
from collections.abc import Awaitable, Callable

from aioquic.tls import SessionTicket

from mux.quic.connection import QuicTransportConnection
from mux.quic.core import MuxQuicConnection
from mux.quic.options import QuicClientOptions, build_configuration
from mux.quic.pmtud import attach as attach_pmtud
from mux.transport import SinkFactory
from mux.udp import Address, Driver, resolve

log = logging.getLogger("mux.quic")


class _OneConnection:
    """The client's demux: every datagram on its socket belongs to its one connection."""

    conn: QuicTransportConnection

    def datagram_received(self, data: bytes, addr: Address, now: float) -> None:
        self.conn.received(data, addr, now)

    def flush_stateless(self, driver: Driver) -> None:
        pass


def _load_ticket(path: str) -> SessionTicket | None:
    try:
        with open(path, "rb") as f:
            ticket = pickle.load(f)
    except (OSError, pickle.UnpicklingError, EOFError):
        return None
    return ticket if isinstance(ticket, SessionTicket) else None


async def connect(
    options: QuicClientOptions, host: str, port: int, make_sink: SinkFactory
) -> tuple[QuicTransportConnection, Callable[[], Awaitable[None]]]:
    loop = asyncio.get_running_loop()
    addr = await loop.run_in_executor(None, resolve, host, port)
    config = build_configuration(options, is_client=True)
    config.server_name = options.server_name or host
    ticket_file = str(options.session_ticket_file) if options.session_ticket_file else None
    if ticket_file is not None:
        config.session_ticket = _load_ticket(ticket_file)
    family = socket.AF_INET6 if len(addr) == 4 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind(("::", 0) if family == socket.AF_INET6 else ("0.0.0.0", 0))
    demux = _OneConnection()
    driver = Driver(sock, demux, loop, busy_poll_us=options.busy_poll_us)
    quic = MuxQuicConnection(
        configuration=config,
        peer_bidi_stream_count=options.peer_bidi_stream_count,
        peer_unidi_stream_count=options.peer_unidi_stream_count,
    )
    conn = QuicTransportConnection(
        quic,
        driver,
        high_water=options.ideal_send_buffer_size,
        keep_alive_interval_ms=options.keep_alive_interval_ms,
    )
    demux.conn = conn
    sink = conn.sink = make_sink(conn)
    conn.ticket_file = ticket_file
    if ticket_file is not None or sink.handles("nst_received"):
        # set before ``connect`` builds the ClientHello: only a client with a ticket handler offers to resume,
        # so the server issues tickets only to clients that keep them
        quic._session_ticket_handler = conn.ticket_received
    attach_pmtud(quic, options, addr)
    quic.connect(addr, now=loop.time())
    driver.touch(conn)

    async def release() -> None:
        driver.close()

    return conn, release
