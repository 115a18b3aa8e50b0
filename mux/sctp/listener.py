"""An SCTP server endpoint feeding the shared pool: over UDP (RFC 6951), or directly on IP (``mux.sctp.rawip``).

Policy when the pool says no: ``BUSY`` drops the COOKIE-ECHO (the client's T1-cookie retransmits it,
a natural accept queue); ``REFUSE`` answers ABORT with an Out of Resource cause. Either way no state
is kept: an INIT only ever costs a stateless INIT-ACK.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

from mux import transport as t
from mux.pcap import maybe_capture
from mux.pmtud import interface_mtu
from mux.pool import AcceptorPool, Admission
from mux.sctp import events as se
from mux.sctp.association import Association
from mux.sctp.connection import SctpTransportConnection
from mux.sctp.endpoint import Endpoint
from mux.sctp.options import SctpListenerOptions, core_config, host_list
from mux.sctp.rawip import open_raw
from mux.steering import current as current_steering
from mux.steering import take_socket
from mux.udp import Address, DatagramSocket, Driver, open_socket

log = logging.getLogger("mux.sctp")


class SctpListener:
    transport_name = "sctp"

    def __init__(self, options: SctpListenerOptions, pool: AcceptorPool) -> None:
        self.options = options
        self.pool = pool
        self.native = options.encapsulation == "none"
        self.name = options.name or (f"sctp:ip:{options.sctp_port}" if self.native else f"sctp:{options.port}")
        self.driver: Driver | None = None
        steering = current_steering()
        self.endpoint = Endpoint(
            core_config(options, host_list(options.host)),
            local_port=options.sctp_port,
            admit=self._admit,
            hold=True,
            # a worker's tags carry its index (``mux.steering``); the cookie secret is the supervisor's
            secret=None if steering is None else steering.secret,
            tag_residue=None if steering is None else (steering.index, steering.count),
        )
        self._conns: dict[Association, SctpTransportConnection] = {}

    @property
    def address(self) -> Address:
        assert self.driver is not None
        return self.driver.local_address

    @property
    def counters(self) -> dict[str, int]:
        return self.endpoint.stats

    async def start(self) -> None:
        opts = self.options
        first, *others = host_list(opts.host)
        sock: DatagramSocket
        more: list[socket.socket] = []
        more_raw: list[DatagramSocket] = []
        if self.native:
            raw = open_raw(first, opts.sctp_port)
            self.endpoint.local_port = raw.port  # sctp_port 0: the one reserved for us
            sock = raw
            try:  # multi-homed on IP: a raw socket per address, all on the port reserved once
                more_raw.extend(open_raw(host, raw.port, claimed=True) for host in others)
            except OSError:
                for r in (raw, *more_raw):
                    r.close()
                raise
        else:
            sock = maybe_capture(take_socket(self.name) or open_socket(first, opts.port), opts)
            try:
                port = sock.getsockname()[1]  # port 0: the others take the one the first got
                more.extend(open_socket(host, port) for host in others)  # (a pcap records the first address only)
            except OSError:
                for s in (sock, *more):
                    s.close()
                raise
        self.driver = Driver(sock, self, busy_poll_us=opts.busy_poll_us, more=more or more_raw)
        if self.native:
            log.info("listener %s: SCTP %s port %d on IP (protocol 132)", self.name, self.address[0], raw.port)
        else:
            log.info("listener %s: SCTP port %d over UDP %s", self.name, opts.sctp_port, self.address[:2])

    def reconfigure(self, options: SctpListenerOptions) -> Callable[[], None]:
        """New options for associations made from now on (a reload): check them, and return what applies them."""
        config = core_config(options, host_list(options.host))

        def commit() -> None:
            self.options = options
            self.endpoint.reconfigure(config)
            if self.driver is not None:
                self.driver.busy_poll_us = options.busy_poll_us

        return commit

    async def close(self) -> None:
        if self.driver is not None:
            self.driver.close()

    def _admit(self, addr: Address) -> bool | None:
        verdict = self.pool.admit(self.name)
        if verdict is Admission.BUSY:
            return None
        return verdict is Admission.ACCEPT

    def datagram_received(self, data: bytes, addr: Address, now: float) -> None:
        endpoint = self.endpoint
        assoc = endpoint.receive_datagram(data, addr, now)
        if endpoint._events:
            event = endpoint.next_event()
            while event is not None:
                if type(event) is se.NewAssociation:
                    self._new_association(event.association)
                else:
                    conn = self._conns.get(event.association)
                    if conn is not None:
                        address_changed(conn)
                event = endpoint.next_event()
        if assoc is not None:
            conn = self._conns.get(assoc)
            if conn is not None:
                assert self.driver is not None
                self.driver.touch(conn)

    def _new_association(self, assoc: Association) -> None:
        assert self.driver is not None
        if assoc._pmtud_max:
            assoc.set_interface_mtu(interface_mtu(assoc.peer_addr))
        conn = SctpTransportConnection(
            assoc,
            self.driver,
            high_water=self.options.sndbuf // 2,
            on_finished=self._finished,
            counters=self.endpoint.stats,
        )
        self._conns[assoc] = conn
        props: dict[str, Any] = {"transport": "sctp", "peer": assoc.peer_addr, "listener": self.name}
        conn.sink = self.pool.accept(self.name, conn, props)
        self.driver.touch(conn)

    def flush_stateless(self, driver: Driver) -> None:
        for data, addr in self.endpoint.datagrams_to_send(driver.loop.time()):
            driver.sendto(data, addr)

    def _finished(self, conn: SctpTransportConnection) -> None:
        self._conns.pop(conn.assoc, None)
        self.endpoint.remove(conn.assoc)


def address_changed(conn: SctpTransportConnection) -> None:
    """The peer moved to a new UDP port (``se.PeerAddressChanged``): tell the behaviour, once it has the connection.

    A held association (``new_conn`` not yet returned) says nothing: its ``connected`` props will carry the
    new address anyway, and ``peer_address_changed`` before ``connected`` would be out of order.
    """
    sink = conn.sink
    if sink is not None and not conn.finished and not conn.assoc.on_hold:
        sink.deliver(t.AddressChanged(conn.peer_address))
