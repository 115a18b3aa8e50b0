"""An SCTP-over-UDP client association on its own UDP socket (an ephemeral port unless configured)."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Awaitable, Callable

from mux.sctp import events as se
from mux.sctp.association import Association
from mux.sctp.connection import SctpTransportConnection
from mux.sctp.endpoint import Endpoint
from mux.sctp.listener import address_changed
from mux.sctp.options import SctpClientOptions, core_config
from mux.sctp.peer_rtts import PeerRtts
from mux.transport import SinkFactory
from mux.udp import Address, Driver, resolve

#: what this process's client associations measured to each peer host: times the next INIT to it
PEER_RTTS = PeerRtts()


class _ClientDemux:
    """The client's demux: an endpoint with one association; strays get §8.4 answers."""

    conn: SctpTransportConnection

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    def datagram_received(self, data: bytes, addr: Address, now: float) -> None:
        endpoint = self.endpoint
        assoc = endpoint.receive_datagram(data, addr, now)
        if endpoint._events:  # only PeerAddressChanged: a client endpoint admits nothing
            event = endpoint.next_event()
            while event is not None:
                if type(event) is se.PeerAddressChanged and event.association is self.conn.assoc:
                    address_changed(self.conn)
                event = endpoint.next_event()
        if assoc is not None and assoc is self.conn.assoc:
            self.conn.driver.touch(self.conn)

    def flush_stateless(self, driver: Driver) -> None:
        for data, addr in self.endpoint.datagrams_to_send(driver.loop.time()):
            driver.sendto(data, addr)


async def connect(
    options: SctpClientOptions, host: str, port: int, make_sink: SinkFactory
) -> tuple[SctpTransportConnection, Callable[[], Awaitable[None]]]:
    loop = asyncio.get_running_loop()
    addr = await loop.run_in_executor(None, resolve, host, port)
    family = socket.AF_INET6 if len(addr) == 4 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    local_host = options.local_host or ("::" if family == socket.AF_INET6 else "0.0.0.0")
    try:
        sock.bind((local_host, options.local_udp_port))
    except OSError:
        sock.close()
        raise
    local_port = options.local_sctp_port or random.randrange(49152, 65536)
    endpoint = Endpoint(core_config(options), local_port=local_port, admit=lambda _addr: False, listening=False)
    demux = _ClientDemux(endpoint)
    driver = Driver(sock, demux, loop, busy_poll_us=options.busy_poll_us)
    host = addr[0]
    assoc: Association = endpoint.connect(
        addr, options.sctp_port, loop.time(), rtt_hint=PEER_RTTS.lookup(host, loop.time())
    )

    def finished(conn: SctpTransportConnection) -> None:
        rtt = conn.assoc.rtt
        PEER_RTTS.remember(host, rtt.srtt, rtt.rttvar, loop.time())
        endpoint.remove(conn.assoc)

    conn = SctpTransportConnection(
        assoc, driver, high_water=options.sndbuf // 2, on_finished=finished, counters=endpoint.stats
    )
    demux.conn = conn
    conn.sink = make_sink(conn)
    driver.touch(conn)

    async def release() -> None:
        driver.close()

    return conn, release
